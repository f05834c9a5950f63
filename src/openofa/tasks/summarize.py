"""Abstractive summarization (Gigaword): prompt ' what is the summary of article " {} "?'
(Chinese: "{} 请用一个句子简单总结上文："), beam 6, length penalty 0.7, at most 32 tokens, no
repeated trigram; output lower-cased. Trained on the normalised summary (with the original's
``noise_ratio`` of random target-input tokens); scored by ROUGE-L after the original's Gigaword
post-processing.
"""

from __future__ import annotations

import torch

from openofa.errors import OFAError
from openofa.tasks.base import Example, Field, Task, layout
from openofa.text.tokenizer import pre_caption

PROMPT = ' what is the summary of article " {} "?'
PROMPT_ZH = "{} 请用一个句子简单总结上文："


def source(tok, text: str, max_length: int) -> list[int]:
    """bos + the prompt around the normalised text (``<unk>`` spelt out), at most ``max_length``
    tokens + eos."""
    prompt = PROMPT_ZH if tok.language == "zh" else PROMPT
    text = pre_caption(text, max_length).replace("<unk>", "unk")
    return [tok.bos] + tok.encode(prompt.format(text), length=max_length) + [tok.eos]


def _read(rec, fields, where, targets):
    from openofa.data.records import field_str, field_text

    rec.text = field_text(fields, "text", where)
    rec.target = field_str(fields, "summary", where, required=targets)


class Summarize(Task):
    name = "summarize"
    help = "summarize texts"
    aliases = ("gigaword", "summary")
    inputs = (Field("text", "text", "the text to summarize", required=True),)
    # gigaword_{train,dev,test}.tsv: source article, target summary
    layouts = (layout("summarize", ["text", "summary"], [0, 1], owner="summarize", targets=["summary"], read=_read,
                      image=False, patch_image_size=None, max_src_length=512, max_tgt_length=64,
                      settings={"noise_ratio": 0.0}, doc="source text, summary"),)
    generation = dict(beam_size=6, len_penalty=0.7, max_len_a=0, max_len_b=32, min_len=1, no_repeat_ngram_size=3)
    max_src_length = 512
    output = "summary"
    metric_name = "ROUGE-L"

    def prepare(self, ofa, text: str) -> Example:
        if not text.strip():
            raise OFAError("summarize: the text is empty")
        ofa.warn_unknown(self.name, "text", text)
        return Example(source(ofa.tokenizer, text, self.max_src_length))

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        return [{"summary": ofa.decode_text(h.tokens).lower().strip(), "score": h.score} for h in hypos]

    def sample(self, b, r):
        target = pre_caption(r.target or "", b.max_tgt_length).replace("<unk>", "unk")
        tgt = b.encode(target)
        sample = b.sample(r, source(b.tok, r.text, b.max_src_length), tgt, None)
        if b.train and b.noise_ratio > 0:
            noisy = torch.tensor(tgt, dtype=torch.long)
            hit = torch.rand(len(tgt)) < b.noise_ratio
            high = len(b.tok) - b.tok.dictionary.code_dict_size - b.num_bins
            noisy[hit] = torch.randint(4, high, (int(hit.sum()),))
            sample["prev_output_tokens"] = torch.cat([torch.tensor([b.bos]), noisy])
        return sample

    def reference(self, r):
        return (r.target or "").lower()

    def inputs_of(self, r, layout):
        return {"text": r.text}

    def metric(self, predictions, references, layout):
        from openofa.metrics import summary_rouge_l

        return {self.metric_name: summary_rouge_l(predictions, references)}
