"""Visual entailment (SNLI-VE): does the image support a sentence? yes / no / maybe.

Prompt ' does the image describe " {hypothesis} "?' (or, with a premise caption,
' can image and text1 " {premise} " imply text2 " {hypothesis} "?'); the source without eos is the
decoder prefix (``prompt_type=prev_output``, the official setting; a file's own ``prompt_type``
wins: ``none`` forces nothing, ``src`` the whole source with its eos), and each label is scored by teacher forcing with
the log-softmax renormalised over the label set, as the original's evaluation does.
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import SNLI_VE_CAPTION_PROMPT, SNLI_VE_PROMPT, pre_caption

LABELS = ("yes", "no", "maybe")


class Entailment(Task):
    name = "entail"
    image_size = 480
    max_src_length = 80

    def prepare(self, ofa, image, hypothesis: str, premise: str | None = None) -> Example:
        if not isinstance(hypothesis, str) or not hypothesis.strip():
            raise OFAError("entail: the hypothesis is empty")
        tok = ofa.tokenizer
        length = int(ofa.setting(self.name, "max_src_length", self.max_src_length))
        hyp = pre_caption(hypothesis, length)
        if premise:
            text = SNLI_VE_CAPTION_PROMPT.format(pre_caption(premise, length), hyp)
        else:
            text = SNLI_VE_PROMPT.format(hyp)
        src = tok.encode(text, bos=True, eos=True)
        prompt_type = ofa.setting(self.name, "prompt_type", "prev_output")
        prefix = {"prev_output": src[1:-1], "none": [], "src": src[1:]}.get(prompt_type)
        if prefix is None:
            raise OFAError(f"entail: prompt_type {prompt_type!r} is not supported (prev_output, none or src)")
        return Example(src, ofa.image_tensor(image, self), prefix=prefix)

    def predict(self, ofa, examples, labels: tuple[str, ...] = LABELS, **options):
        cands = [ofa.tokenizer.encode(" " + a) for a in labels]
        scores = ofa.score_candidates(examples, cands)
        out = []
        for row in scores:
            best = int(row.argmax())
            out.append({"label": labels[best], "scores": {a: float(s) for a, s in zip(labels, row)}})
        return out
