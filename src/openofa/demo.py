"""``ofa demo``: caption, VQA and grounding on an example image, written to a folder.

Without ``--model`` it uses a tiny model with the deterministic recipe weights of the test
fixtures (written once to a cache folder). Those weights are not trained, so the answers are
noise; they show that every stage runs. Pass ``--model`` with a real checkpoint for real answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw


def example_image(path: Path) -> Path:
    """A small synthetic scene: a red square and a blue circle on a light background."""
    img = Image.new("RGB", (320, 240), (235, 232, 220))
    draw = ImageDraw.Draw(img)
    draw.rectangle((40, 60, 130, 150), fill=(200, 30, 30))
    draw.ellipse((180, 80, 280, 180), fill=(30, 60, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def recipe_checkpoint(size: str = "tiny") -> Path:
    """Folder (our format) holding ``size`` with the recipe weights; written on first use."""
    from openofa.checkpoints import recipe_state_dict, save_pretrained
    from openofa.config import get_config

    root = Path(os.environ.get("OPENOFA_CACHE", Path.home() / ".cache" / "openofa"))
    folder = root / f"recipe-{size}"
    if not (folder / "model.safetensors").is_file():
        cfg = get_config(size)
        save_pretrained(folder, cfg, recipe_state_dict(cfg))
    return folder


def run_demo(model: str | None, out_dir: str, dtype: str = "fp32") -> int:
    from openofa.api import OFA
    from openofa.cli import draw_box

    out = Path(out_dir)
    image = example_image(out / "example.png")
    if model is None:
        print("no --model given: using tiny with untrained recipe weights (answers are noise)")
        model = str(recipe_checkpoint("tiny"))
    ofa = OFA.load(model, dtype=dtype)
    caption = ofa.caption(str(image))
    answer = ofa.vqa(str(image), "what color is the circle?", max_len_b=16)
    box = ofa.ground(str(image), "the red square")
    drawn = out / "example_box.png"
    draw_box(str(image), box, drawn, "the red square")
    print(f"image:    {image}")
    print(f"caption:  {caption}")
    print(f"vqa:      what color is the circle? -> {answer}")
    print("ground:   the red square -> " + ("none" if box is None else " ".join(f"{v:.1f}" for v in box)))
    print(f"drawn:    {drawn}")
    return 0
