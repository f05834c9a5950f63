"""Image classification over a list of class names (the original's ImageNet finetuning).

Prompt " what does the image describe?" with no decoder prefix; every class name is scored by
teacher forcing with the log-softmax renormalised over the class-name trie, and the best wins.
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import CAPTION_PROMPT


class ImageClassification(Task):
    name = "classify"
    image_size = 480

    def prepare(self, ofa, image) -> Example:
        return Example(ofa.tokenizer.encode(CAPTION_PROMPT, bos=True, eos=True), ofa.image_tensor(image, self))

    def predict(self, ofa, examples, classes: list[str] | None = None, top_k: int = 5, **options):
        if not classes:
            raise OFAError("classify: give the class names to choose from")
        cands = [ofa.tokenizer.encode(" " + c) for c in classes]
        scores = ofa.score_candidates(examples, cands)
        out = []
        for row in scores:
            order = row.argsort(descending=True)[:top_k].tolist()
            out.append({"label": classes[order[0]], "top": [(classes[i], float(row[i])) for i in order]})
        return out
