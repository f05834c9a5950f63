"""Image side of OFA: loading images (paths, bytes, base64 TSV columns), the datasets'
resize/normalise transforms, batching, and bounding-box helpers."""

from openofa.vision.boxes import box_iou, clamp_box, format_box, grounding_hits, parse_box, validate_box
from openofa.vision.io import decode_base64_image, load_image
from openofa.vision.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFA_MEAN,
    OFA_STD,
    PatchTransform,
    RefcocoImage,
    collate_images,
    patch_resize_transform,
    refcoco_output_size,
    refcoco_transform,
    to_tensor_normalized,
)

__all__ = [
    "load_image",
    "decode_base64_image",
    "patch_resize_transform",
    "PatchTransform",
    "refcoco_transform",
    "refcoco_output_size",
    "RefcocoImage",
    "collate_images",
    "to_tensor_normalized",
    "OFA_MEAN",
    "OFA_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "parse_box",
    "format_box",
    "validate_box",
    "box_iou",
    "grounding_hits",
    "clamp_box",
]
