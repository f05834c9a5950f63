"""Image infilling (the original's pretraining task ``process_pure_image``): the middle of an
image from its border. The image is resized to a square of ``2 * code_image_size`` pixels (256
for the released models' 128), normalised, and its middle half (``[s/4, 3s/4)`` in both axes) set
to 0; the prompt is ``" what is the image in the middle part?"``; the model produces the
middle's ``(code_image_size / 8)^2`` VQGAN codes (16x16 = 256), which the VQGAN decodes to the
middle's pixels, pasted back into the square. The original has no inference script for it:
decoding here samples as text-to-image does (top-k 256, ``samples`` draws, seed 0), since the
codes are image content, not a single best answer.
"""

from __future__ import annotations

import torch

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Field, Task
from openofa.tasks.imagine import code_grid, component, decode_codes, generation_defaults

PROMPT = " what is the image in the middle part?"


def masked_image(image, size: int):
    """(square PIL image of ``size``, normalised tensor (3, size, size) with the middle zeroed)."""
    from openofa.vision.io import load_image
    from openofa.vision.transforms import OFA_MEAN, OFA_STD, resize_bicubic, to_tensor_normalized

    square = resize_bicubic(load_image(image), size, size)
    tensor = to_tensor_normalized(square, OFA_MEAN, OFA_STD).clone()
    a, b = size // 4, size // 4 + size // 2
    tensor[:, a:b, a:b] = 0.0
    return square, tensor


class Infill(Task):
    name = "infill"
    help = "redraw the middle of an image from its border (image infilling, VQGAN codes)"
    aliases = ("image-infilling",)
    inputs = (IMAGE,)
    options = (
        Field("samples", "int", "middles drawn per image (default 1)", default=1),
        Field("vqgan", "text", "VQGAN folder or last.ckpt (default: beside the model)"),
    )
    languages = ("en",)
    output = "image"
    writes_images = True

    def prepare(self, ofa, image) -> Example:
        size = 2 * int(ofa.model.config.code_image_size)
        if size > ofa.model.max_image_size:
            raise OFAError(f"infill: the model's code_image_size needs {size}-pixel images, more than its image "
                           f"positions cover ({ofa.model.max_image_size})")
        square, tensor = masked_image(image, size)
        src = ofa.tokenizer.encode(PROMPT, bos=True, eos=True)
        return Example(src, image=tensor, info={"square": square})

    def predict(self, ofa, examples, samples: int = 1, vqgan: str | None = None, **options):
        from openofa.tasks.imagine import _check_samples

        samples = _check_samples(samples)
        grid = code_grid(ofa)
        vq = component(ofa, "vqgan", vqgan)
        hypos = ofa.generate(examples, generation_defaults(ofa, samples, grid * grid), task=self.name,
                             every=True, **options)
        code_0 = ofa.model.config.code_0
        out = []
        for ex, hyps in zip(examples, hypos):
            codes = (torch.stack([h.tokens[:-1] for h in hyps]) - code_0).view(len(hyps), grid, grid)
            middles = decode_codes(vq, codes.to(ofa.device))
            square = ex.info["square"]
            s = square.size[0]
            images = []
            for m in middles:
                im = square.copy()
                im.paste(m.resize((s // 2, s // 2)) if m.size != (s // 2, s // 2) else m, (s // 4, s // 4))
                images.append(im)
            out.append({"image": images[0], "images": images, "scores": [float(h.score) for h in hyps]})
        return out

    def format(self, result):
        return "\t".join(result.get("files") or ["image"])

    def save(self, result, folder, name, used):
        from pathlib import Path

        files = self.write_images(result["images"], folder, f"{Path(name).stem or 'image'}_infill", used)
        return {"files": files, "scores": result["scores"]}
