"""Text side of OFA: the fairseq-compatible dictionary, the English (GPT-2 BPE) and Chinese
(BERT wordpiece) tokenizers, the datasets' text normalisers, and location tokens (each task's prompts are in its
module of :mod:`openofa.tasks`)."""

from openofa.text.dictionary import Dictionary
from openofa.text.locations import (
    bins_to_box,
    bins_to_ids,
    bins_to_tokens,
    box_to_ids,
    box_to_tokens,
    ids_to_bins,
    ids_to_box,
    quantize_box,
    scale_box,
    tokens_to_bins,
)
from openofa.text.tokenizer import (
    OFATokenizer,
    caption_target_text,
    strip_punctuation,
    pad_batch,
    pre_caption,
    pre_chinese,
    pre_question,
)

__all__ = [
    "Dictionary",
    "OFATokenizer",
    "pad_batch",
    "pre_caption",
    "pre_question",
    "pre_chinese",
    "caption_target_text",
    "strip_punctuation",
    "scale_box",
    "quantize_box",
    "bins_to_tokens",
    "box_to_tokens",
    "box_to_ids",
    "bins_to_ids",
    "ids_to_bins",
    "tokens_to_bins",
    "bins_to_box",
    "ids_to_box",
]
