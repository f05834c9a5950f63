"""Image classification over a list of class names (the original's ImageNet finetuning).

Prompt " what does the image describe?" with no decoder prefix; every class name is scored by
teacher forcing with the log-softmax renormalised over the class-name trie, and the best wins.
Trained on the class name (with the original's random crop and RandAugment); scored by accuracy.
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Field, Task, layout
from openofa.tasks.caption import PROMPT


def _read(rec, fields, where, targets):
    from openofa.data.records import read_label

    rec.label = read_label(fields, "classify", None, where, targets)


class ImageClassification(Task):
    name = "classify"
    help = "choose a class name for each image"
    languages = ("en",)  # the original has English prompts only
    aliases = ("image_classify", "imagenet")
    inputs = (IMAGE,)
    options = (Field("classes", "texts", "class names (comma-separated or @file with one per line)", required=True),
               Field("top_k", "int", "how many of the best classes to list", default=5))
    # imagenet_1k_{train,val}.tsv: image base64, label index (1-based), synset words
    layouts = (layout("classify", ["image", "label"], [0, 2], owner="classify", targets=["label"], read=_read,
                      max_src_length=128, max_tgt_length=30, patch_image_size=480,
                      settings={"imagenet_default_mean_and_std": True},
                      doc="image, class index (1-based), class name (synset words)"),)
    image_size = 480
    candidates = True

    def prepare(self, ofa, image) -> Example:
        return Example(ofa.tokenizer.encode(PROMPT, bos=True, eos=True), ofa.image_tensor(image, self))

    def predict(self, ofa, examples, classes: list[str] | None = None, top_k: int = 5, **options):
        if not classes:
            raise OFAError("classify: give the class names to choose from")
        cands = ofa.encode_candidates(self.name, "classes", classes)
        scores = ofa.score_candidates(examples, cands)
        out = []
        for row in scores:
            order = row.argsort(descending=True)[:top_k].tolist()
            out.append({"label": classes[order[0]], "top": [(classes[i], float(row[i])) for i in order]})
        return out

    def sample(self, b, r):
        src = [b.bos] + b.encode(PROMPT) + [b.eos]
        return b.sample(r, src, b.encode(" " + r.label), b.patch_image(r))

    def train_transform(self, b):
        if not b.augment:
            return None
        from openofa.data.augment import ClassifyTrainTransform

        return ClassifyTrainTransform(b.patch_image_size, b.mean, b.std)

    def with_candidates(self, candidates, options):
        return {"classes": candidates, **options}

    def eval_options(self, refs, options):
        if not options.get("classes"):
            options = {**options, "classes": sorted({str(r) for r in refs})}
        return options
