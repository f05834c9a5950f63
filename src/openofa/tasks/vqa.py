"""Visual question answering.

Source: the normalised question (lower-cased, '?' appended) and optionally " object: a b c" with
detected object labels. As in the official finetuning (``prompt_type=prev_output``) the source
without its eos is also forced as the decoder prefix, so the answer follows the question.

Three ways to answer: ``beam`` (open-vocabulary beam search, beam 5, unnormalised scores — the
original's ``evaluate_vqa_beam``), ``trie`` (the same beam search restricted to a candidate list)
and ``allcand`` (score every candidate with teacher forcing, the original's default validation).
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import pre_question


class VQA(Task):
    name = "vqa"
    image_size = 480
    generation = dict(beam_size=5, max_len_a=0, max_len_b=200, min_len=1, normalize_scores=False)
    max_src_length = 128
    max_object_length = 30
    prompt_type = "prev_output"

    def prepare(self, ofa, image, question: str, objects: list[str] | None = None) -> Example:
        if not isinstance(question, str) or not question.strip():
            raise OFAError("vqa: the question is empty")
        tok = ofa.tokenizer
        q = pre_question(question, int(ofa.setting(self.name, "max_src_length", self.max_src_length)))
        q = q if q.endswith("?") else q + "?"
        ids = tok.encode(" " + q)
        if objects:
            ids += tok.encode(" object: " + " ".join(objects[: self.max_object_length]))
        src = [tok.bos] + ids + [tok.eos]
        prompt_type = ofa.setting(self.name, "prompt_type", self.prompt_type)
        if prompt_type not in ("prev_output", "none"):
            raise OFAError(f"vqa: prompt_type {prompt_type!r} is not supported (prev_output or none)")
        prefix = src[1:-1] if prompt_type == "prev_output" else []
        return Example(src, ofa.image_tensor(image, self), prefix)

    def predict(self, ofa, examples, answers: list[str] | None = None, mode: str | None = None, **options):
        mode = mode or ("allcand" if answers else "beam")
        if mode not in ("beam", "trie", "allcand"):
            raise OFAError(f"vqa: unknown mode {mode!r}; expected beam, trie or allcand")
        if mode != "beam" and not answers:
            raise OFAError(f"vqa: mode {mode!r} needs a list of candidate answers")
        if mode == "allcand":
            cands = [ofa.tokenizer.encode(" " + a) for a in answers]
            scores = ofa.score_candidates(examples, cands)
            out = []
            for row in scores:
                best = int(row.argmax())
                out.append({"answer": answers[best], "score": float(row[best])})
            return out
        trie = ofa.answer_trie(answers) if mode == "trie" else None
        hypos = ofa.generate(examples, self.generation, task=self.name, constraints=trie, **options)
        return [{"answer": ofa.decode_text(h.tokens[len(ex.prefix):]).strip(), "score": h.score}
                for ex, h in zip(examples, hypos)]
