"""``ofa demo``: caption, VQA and grounding on an example image, written to a folder.

Without ``--model`` it uses the project's own small model shipped in the package (trained on
procedural scenes like the example image); its drawing model draws a scene from a text, and its
reading model reads a word from an image of it. An installation without them falls back to a tiny
model with the untrained recipe weights of the test fixtures, whose answers are noise.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw


def example_image(path: Path) -> Path:
    """A scene like the training data: a large red square and a large blue circle."""
    from openofa.mini.scenes import COLORS

    img = Image.new("RGB", (256, 256), (214, 206, 190))
    draw = ImageDraw.Draw(img)
    draw.rectangle((28, 84, 118, 174), fill=COLORS["red"])
    draw.ellipse((146, 60, 238, 152), fill=COLORS["blue"])
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
    from openofa.vision.draw import draw_box

    out = Path(out_dir)
    image = example_image(out / "example.png")
    bundled_drawing = bundled_reading = None
    if model is None:
        from openofa.weights import bundled_model

        bundled = bundled_model()
        drawing, reading = bundled_model("mini-draw"), bundled_model("mini-read")
        bundled_drawing = str(drawing) if drawing is not None else None
        bundled_reading = str(reading) if reading is not None else None
        if bundled is not None:
            print("model: the project's own small model (trained on procedural scenes)")
            model = str(bundled)
        else:
            print("no --model given and no bundled model: using tiny with untrained recipe weights (answers are noise)")
            model = str(recipe_checkpoint("tiny"))
    ofa = OFA.load(model, dtype=dtype)
    caption = ofa.caption(str(image))
    # both objects of this image get boxes within a few pixels; docs/own_model.md lists where
    # the small model still errs
    question = "what shape is the blue object?"
    expression = "the blue circle"
    answer = ofa.vqa(str(image), question, max_len_b=16)
    box = ofa.ground(str(image), expression)
    drawn = out / "example_box.png"
    draw_box(str(image), box, drawn, expression)
    print(f"image:    {image}")
    print(f"caption:  {caption}")
    print(f"vqa:      {question} -> {answer}")
    print(f"ground:   {expression} -> " + ("none" if box is None else " ".join(f"{v:.1f}" for v in box)))
    print(f"drawn:    {drawn}")
    if "detect" in (ofa.trained_tasks() or []):
        objects = ofa.detect(str(image))
        print("detect:   " + ("; ".join(f"{o['label']} " + " ".join(f"{v:.0f}" for v in o["box"]) for o in objects)
                              or "none"))
    if bundled_drawing:
        draw_example(out, bundled_drawing, dtype)
    if bundled_reading:
        read_example(out, bundled_reading, dtype)
    return 0


DRAWING = "a red circle left of a blue square"


def draw_example(out: Path, model: str, dtype: str = "fp32", samples: int = 4) -> list[Path]:
    """The drawing model draws :data:`DRAWING`; the images go to ``out/drawing_<k>.png``."""
    from openofa.api import OFA

    drawer = OFA.load(model, dtype=dtype)
    result = drawer.imagine(DRAWING, samples=samples, seed=0)
    paths = []
    for k, im in enumerate(result["images"]):
        paths.append(out / f"drawing_{k}.png")
        im.save(paths[-1])
    print(f"imagine:  {DRAWING} -> {', '.join(str(p) for p in paths)}")
    return paths


READING = ("Hello", "2026")


def read_example(out: Path, model: str, dtype: str = "fp32") -> list[str]:
    """The reading model reads the words of :data:`READING`, drawn like its training data, from
    ``out/reading_<k>.png``."""
    from openofa.api import OFA
    from openofa.mini.read import render_text

    paths = []
    for k, word in enumerate(READING):
        paths.append(out / f"reading_{k}.png")
        render_text(word, seed=k)[0].save(paths[-1])
    texts = OFA.load(model, dtype=dtype).ocr([str(p) for p in paths])
    for path, text in zip(paths, texts):
        print(f"ocr:      {path} -> {text}")
    return texts
