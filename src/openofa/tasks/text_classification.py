"""Text classification with the GLUE prompts of the original finetuning.

The whole source (bos ... eos) is the decoder prefix (``prompt_type=src``) and the label is read
at the next position, restricted to the task's label words (scored with the log-softmax
renormalised over them, which ranks them as the original's masked argmax does).
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Task

# name -> (prompt with one or two {} slots, label words in the original's order)
GLUE = {
    "mnli": (' can text1 " {} " imply text2 " {} "?', ("maybe", "yes", "no")),
    "rte": (' can text1 " {} " imply text2 " {} "?', ("no", "yes")),
    "mrpc": (' does text1 " {} " and text2 " {} " have the same semantics?', ("no", "yes")),
    "qqp": (' is question " {} " and question " {} " equivalent?', ("no", "yes")),
    "qnli": (' does " {} " contain the answer to question " {} "?', ("no", "yes")),
    "cola": (' is the text " {} " grammatically correct?', ("no", "yes")),
    "sst2": (' is the sentiment of text " {} " positive or negative?', ("negative", "positive")),
}


class TextClassification(Task):
    name = "classify-text"
    uses_image = False
    max_src_length = 512

    def prepare(self, ofa, text: str, text2: str | None = None, glue_task: str = "mnli") -> Example:
        """``text`` and ``text2`` fill the prompt's slots in order (qnli: sentence, then question)."""
        if glue_task not in GLUE:
            raise OFAError(f"classify-text: unknown task {glue_task!r}; expected one of {', '.join(GLUE)}")
        prompt, _ = GLUE[glue_task]
        n_slots = prompt.count("{}")
        texts = [t for t in (text, text2) if t is not None]
        if len(texts) != n_slots:
            raise OFAError(f"classify-text: task {glue_task!r} takes {n_slots} text(s), got {len(texts)}")
        # the original GLUE datasets only lower-case and keep the first max_src_length words
        texts = [" ".join(t.lower().strip().split()[: self.max_src_length]) for t in texts]
        src = ofa.tokenizer.encode(prompt.format(*texts), bos=True, eos=True)
        return Example(src, None, prefix=src[1:], info={"glue_task": glue_task})

    def predict(self, ofa, examples, labels: tuple[str, ...] | None = None, **options):
        out = []
        for ex in examples:
            words = labels or GLUE[ex.info["glue_task"]][1]
            cands = [ofa.tokenizer.encode(" " + w) for w in words]
            row = ofa.score_candidates([ex], cands)[0]
            best = int(row.argmax())
            out.append({"label": words[best], "scores": {w: float(s) for w, s in zip(words, row)}})
        return out
