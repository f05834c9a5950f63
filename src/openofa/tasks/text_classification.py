"""Text classification with the GLUE prompts of the original finetuning.

The whole source (bos ... eos) is the decoder prefix (``prompt_type=src``) and the label is read
at the next position, restricted to the task's label words (scored with the log-softmax
renormalised over them, which ranks them as the original's masked argmax does). Trained on the
label word (no eos, as in the original); scored by accuracy (CoLA also by Matthews correlation).
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Field, Task, layout

_YES_NO = {"0": "no", "1": "yes", "no": "no", "yes": "yes"}
_ENTAIL = {"not_entailment": "no", "entailment": "yes", "no": "no", "yes": "yes"}
# name -> (prompt with one or two {} slots, label words in the original's order, the original's
# labels -> words, the file's text fields in the prompt's slot order)
GLUE = {
    "mnli": (' can text1 " {} " imply text2 " {} "?', ("maybe", "yes", "no"),
             {"0": "maybe", "1": "yes", "2": "no", "maybe": "maybe", "yes": "yes", "no": "no"},
             ("sentence1", "sentence2")),
    "rte": (' can text1 " {} " imply text2 " {} "?', ("no", "yes"), _ENTAIL, ("sentence1", "sentence2")),
    "mrpc": (' does text1 " {} " and text2 " {} " have the same semantics?', ("no", "yes"), _YES_NO,
             ("sentence1", "sentence2")),
    "qqp": (' is question " {} " and question " {} " equivalent?', ("no", "yes"), _YES_NO, ("question1", "question2")),
    "qnli": (' does " {} " contain the answer to question " {} "?', ("no", "yes"), {**_ENTAIL, **_YES_NO},
             ("sentence", "question")),
    "cola": (' is the text " {} " grammatically correct?', ("no", "yes"), _YES_NO, ("sentence",)),
    "sst2": (' is the sentiment of text " {} " positive or negative?', ("negative", "positive"),
             {"0": "negative", "1": "positive", "negative": "negative", "positive": "positive"}, ("sentence",)),
}
GLUE_TASKS = tuple(sorted(GLUE))


def source(tok, glue_task: str, texts: list[str], max_words: int) -> list[int]:
    """bos + the task's prompt around the texts (lower-cased, first ``max_words`` words, as the
    original's GLUE datasets do) + eos."""
    prompt = GLUE[glue_task][0]
    texts = [" ".join(t.lower().strip().split()[:max_words]) for t in texts]
    return tok.encode(prompt.format(*texts), bos=True, eos=True)


def _reader(glue_task: str):
    _, _, labels, names = GLUE[glue_task]

    def read(rec, fields, where, targets):
        from openofa.data.records import field_text, read_label

        texts = [field_text(fields, n, where) for n in names]
        rec.text, rec.text2 = texts[0], (texts[1] if len(texts) > 1 else None)
        rec.label = read_label(fields, glue_task, labels, where, targets)

    return read


def _glue_layout(name, fields, columns, doc):
    return layout(name, fields, columns, owner="classify-text", targets=["label"], read=_reader(name), image=False,
                  patch_image_size=None, max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
                  doc=doc, aliases=("sst-2", "sst_2") if name == "sst2" else ())


class TextClassification(Task):
    name = "classify-text"
    help = "GLUE-style text classification"
    languages = ("en",)  # the original has English prompts only
    aliases = ("glue",)
    inputs = (Field("text", "text", "the first text of the prompt (qnli: the sentence)", required=True),
              Field("text2", "text", "the second text (mnli, rte, mrpc, qqp: the second sentence; qnli: the question)"),
              Field("glue_task", "choice", "which GLUE task's prompt and labels", default="mnli",
                    choices=GLUE_TASKS, flag="--task"))
    # GLUE, the columns of the files the original distributes (glue_data/*_{train,dev}.tsv)
    layouts = (
        _glue_layout("cola", ["sentence", "label"], [1, 2], "column 1 sentence, column 2 label 0|1"),
        _glue_layout("sst2", ["sentence", "label"], [0, 1], "sentence, label 0|1"),
        _glue_layout("mnli", ["sentence1", "sentence2", "label"], [0, 1, 2],
                     "premise, hypothesis, label 0 (neutral) | 1 (entailment) | 2 (contradiction)"),
        _glue_layout("mrpc", ["sentence1", "sentence2", "label"], [0, 1, 2], "sentence1, sentence2, label 0|1"),
        _glue_layout("qnli", ["question", "sentence", "label"], [1, 2, 3],
                     "index, question, sentence, label entailment|not_entailment (or 1|0)"),
        _glue_layout("qqp", ["question1", "question2", "label"], [3, 4, 5],
                     "id, qid1, qid2, question1, question2, label 0|1"),
        _glue_layout("rte", ["sentence1", "sentence2", "label"], [1, 2, 3],
                     "index, sentence1, sentence2, label entailment|not_entailment"),
    )
    max_src_length = 512
    candidates = True

    def prepare(self, ofa, text: str, text2: str | None = None, glue_task: str = "mnli") -> Example:
        """``text`` and ``text2`` fill the prompt's slots in order (qnli: sentence, then question)."""
        if glue_task not in GLUE:
            raise OFAError(f"classify-text: unknown task {glue_task!r}; expected one of {', '.join(GLUE)}")
        n_slots = GLUE[glue_task][0].count("{}")
        texts = [t for t in (text, text2) if t is not None]
        if len(texts) != n_slots:
            raise OFAError(f"classify-text: task {glue_task!r} takes {n_slots} text(s), got {len(texts)}")
        for text in texts:
            ofa.warn_unknown(self.name, "text", text)
        src = source(ofa.tokenizer, glue_task, texts, self.max_src_length)
        return Example(src, None, prefix=src[1:], info={"glue_task": glue_task})

    def predict(self, ofa, examples, labels: tuple[str, ...] | None = None, **options):
        out = []
        for ex in examples:
            words = labels or GLUE[ex.info["glue_task"]][1]
            cands = ofa.encode_candidates(self.name, "labels", words)
            row = ofa.score_candidates([ex], cands)[0]
            best = int(row.argmax())
            out.append({"label": words[best], "scores": {w: float(s) for w, s in zip(words, row)}})
        return out

    def sample(self, b, r):
        glue_task = b.layout.task
        texts = [r.text] + ([r.text2] if r.text2 is not None else [])
        n_slots = GLUE[glue_task][0].count("{}")
        if n_slots != len(texts):
            from openofa.data.records import BadRow

            raise BadRow(f"{r.where}: task {glue_task} takes {n_slots} text(s)", "field")
        src = source(b.tok, glue_task, texts, b.max_src_length)
        tgt = b.encode(" " + r.label)
        if len(tgt) != 1:
            from openofa.data.records import BadRow

            raise BadRow(f"{r.where}: label {r.label!r} is not a single token", "label")
        sample = b.sample(r, src, tgt, None)
        sample.update(b.with_prompt(src, tgt, eos=False))
        return sample

    def layout_for(self, fields):
        """The file of the GLUE task given (``--task``), by default MNLI's as ``prepare``."""
        name = fields.get("glue_task") or self.field("glue_task").default
        return next(lay for lay in self.layouts if lay.task == name)

    def inputs_of(self, r, layout):
        return {"text": r.text, "text2": r.text2, "glue_task": layout.task}

    def metric(self, predictions, references, layout):
        from openofa.metrics import classification_accuracy, matthews_correlation

        out = {self.metric_name: classification_accuracy(predictions, references)}
        if layout.task == "cola":  # CoLA is scored by Matthews correlation
            out["MCC"] = float(matthews_correlation(predictions, references))
        return out
