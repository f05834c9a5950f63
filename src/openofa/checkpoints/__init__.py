"""Reading and writing OFA checkpoints: official fairseq ``.pt`` files, the Hugging Face port's
folders, and our own safetensors folders; plus the deterministic recipe weights used by tests."""

from openofa.checkpoints.load import convert, detect_format, load_checkpoint, load_model, save_checkpoint
from openofa.checkpoints.official import save_official
from openofa.checkpoints.ours import load_pretrained, save_pretrained
from openofa.checkpoints.hf import save_hf
from openofa.checkpoints.recipe import recipe_state_dict, recipe_tensor

__all__ = [
    "load_checkpoint",
    "load_model",
    "convert",
    "save_pretrained",
    "load_pretrained",
    "save_official",
    "save_hf",
    "save_checkpoint",
    "detect_format",
    "recipe_state_dict",
    "recipe_tensor",
]
