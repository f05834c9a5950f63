"""Object detection as OFA's pretraining teaches it: prompt " what are the objects in the image?",
and the model writes every object as four location tokens ``<bin_x1> <bin_y1> <bin_x2> <bin_y2>``
followed by its label's words, one object after the other.

The image is resized to the patch size (square, as the original's detection images); decoding is
beam 5 over the whole vocabulary, up to the model's target length, with no n-gram blocking (labels
repeat). Each group of four location tokens and the text tokens after it is one object; its box is
returned in original-image pixels, with the coordinates ordered (``x1 <= x2``, ``y1 <= y2``: a model
can emit a corner before the other, and a box is always a valid box) and clamped to the image. A
group with fewer than four location tokens, or no label, is dropped.

Trained on every box of the row (the original's pretraining detection file: boxes
``x1,y1,x2,y2,category-id,category-name&&...``, with a random flip and large-scale jitter in
training), in the file's order as the original does, or with ``object_order: position`` (a data
option of ours) left to right, so that the target's order follows from the image; scored by F1@0.5: a predicted object matches a reference object with the same label
and IoU of at least 0.5, each at most once (greedily, in the model's order).
"""

from __future__ import annotations

import math

import torch

from openofa.tasks.base import IMAGE, Example, Task, layout

PROMPT = " what are the objects in the image?"


def source(tok) -> list[int]:
    return tok.encode(PROMPT, bos=True, eos=True)


def _read(rec, fields, where, targets):
    from openofa.data.records import BadRow, parse_detection_objects

    if fields.get("objects") is None:
        if targets:
            raise BadRow(f"{where}: missing field 'objects'", "field")
        return
    parse_detection_objects(rec, fields["objects"], where)


def detection_objects(r) -> tuple[list[list[float]], list[str]]:
    """The boxes ``[x1, y1, x2, y2]`` and names of a detection row; an empty, inverted or
    non-finite box raises :class:`~openofa.data.records.BadRow` naming the row."""
    from openofa.data.records import BadRow

    boxes, names = [], []
    for (x1, y1, x2, y2), name in zip(r.extra.get("boxes") or [], r.objects or []):
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or not (x1 < x2 and y1 < y2):
            raise BadRow(f"{r.where}: detection box {[x1, y1, x2, y2]} is empty, inverted or not finite", "box")
        boxes.append([x1, y1, x2, y2])
        names.append(name)
    return boxes, names


def _flip():
    from PIL import Image

    return Image.Transpose.FLIP_LEFT_RIGHT


class Detect(Task):
    name = "detect"
    help = "find every object: boxes and labels"
    languages = ("en",)  # the original has English prompts only
    aliases = ("object_detection",)
    inputs = (IMAGE,)
    # the original's pretraining detection file: image-id, image base64, "x1,y1,x2,y2,id,name&&..."
    layouts = (layout("detect", ["id", "image", "objects"], [0, 1, 2], owner="detect", targets=["objects"],
                      read=_read, patch_image_size=256, max_src_length=80,
                      doc="image-id, image, boxes x1,y1,x2,y2,category-id,category-name&&..."),)
    image_size = 256
    generation = dict(beam_size=5, max_len_a=0, max_len_b=1024, min_len=1, no_repeat_ngram_size=0)
    max_image_size = 512
    output = "objects"
    metric_name = "F1@0.5"
    draws = True

    def prepare(self, ofa, image) -> Example:
        tensor, w, h = ofa.image_tensor(image, self, return_size=True)
        return Example(source(ofa.tokenizer), tensor, info={"w": w, "h": h, "size": tensor.shape[-1]})

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        max_size = float(ofa.setting(self.name, "max_image_size", self.max_image_size))
        out = []
        for ex, h in zip(examples, hypos):
            objects = self.parse(ofa, [int(t) for t in h.tokens], ex.info, max_size)
            out.append({"objects": objects, "score": h.score})
        return out

    def parse(self, ofa, ids: list[int], info: dict, max_size: float) -> list[dict]:
        """The objects of one generated sequence (see the module doc)."""
        cfg = ofa.model.config
        groups: list[tuple[list[int], list[int]]] = []  # (bins, text ids)
        for t in ids:
            if t == cfg.eos:
                break
            if cfg.bin_0 <= t < cfg.bin_0 + cfg.num_bins:
                if not groups or groups[-1][1] or len(groups[-1][0]) == 4:
                    groups.append(([], []))
                groups[-1][0].append(t - cfg.bin_0)
            elif groups:
                groups[-1][1].append(t)
        out = []
        sx, sy = info["size"] / info["w"], info["size"] / info["h"]
        for bins, text in groups:
            label = ofa.decode_text(text).strip()
            if len(bins) != 4 or not label:
                continue
            v = [b / (cfg.num_bins - 1) * max_size for b in bins]
            x1, x2 = sorted((v[0] / sx, v[2] / sx))
            y1, y2 = sorted((v[1] / sy, v[3] / sy))
            box = [min(max(x1, 0.0), info["w"]), min(max(y1, 0.0), info["h"]),
                   min(max(x2, 0.0), info["w"]), min(max(y2, 0.0), info["h"])]
            out.append({"box": box, "label": label})
        return out

    def format(self, result):
        return "; ".join(f"{o['label']} " + " ".join(f"{v:.1f}" for v in o["box"]) for o in result["objects"]) \
            or "none"

    def boxes(self, result):
        return [(o["box"], o["label"]) for o in result["objects"]]

    def sample(self, b, r):
        from openofa.data.records import BadRow
        from openofa.vision.transforms import resize_bicubic, to_tensor_normalized

        img = b.load_image(r)
        w, h = img.size
        s = b.patch_image_size
        boxes, names = detection_objects(r)
        if b.augment:
            from openofa.data.augment import hflip_boxes, large_scale_jitter

            t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            if float(torch.rand(())) < 0.5:
                img, t = img.transpose(_flip()), hflip_boxes(t, w)
            img, t, keep = large_scale_jitter(img, t, s)
            names = [n for n, k in zip(names, keep.tolist()) if k]
            kept = t.tolist()  # a crop may leave no box: the target is then eos alone, as in the original
        else:
            img = resize_bicubic(img, s, s)
            kept, kept_names = [], []
            for (x1, y1, x2, y2), name in zip(boxes, names):
                box = [min(max(x1 * s / w, 0.0), s), min(max(y1 * s / h, 0.0), s),
                       min(max(x2 * s / w, 0.0), s), min(max(y2 * s / h, 0.0), s)]
                if box[0] < box[2] and box[1] < box[3]:  # else outside the image: nothing of it left
                    kept.append(box)
                    kept_names.append(name)
            names = kept_names
            if not kept:
                raise BadRow(f"{r.where}: no detection box inside the image", "box")
        image = to_tensor_normalized(img, b.mean, b.std)
        if b.object_order == "position":  # left to right, then top to bottom (openofa's option)
            order = sorted(range(len(kept)), key=lambda i: (kept[i][0], kept[i][1]))
            kept, names = [kept[i] for i in order], [names[i] for i in order]
        tgt: list[int] = []
        for box, name in zip(kept, names):
            tgt += b.box_ids(r, box) + b.encode(" " + name)
        return b.sample(r, source(b.tok), tgt, image)

    def reference(self, r):
        return [{"box": list(box), "label": name} for box, name in zip(r.extra.get("boxes") or [], r.objects or [])]

    def inputs_of(self, r, layout):
        return {"image": r.image}

    def metric(self, predictions, references, layout):
        from openofa.metrics import detection_scores

        return detection_scores(predictions, references)
