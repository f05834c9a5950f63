"""Abstractive summarization (Gigaword): prompt ' what is the summary of article " {} "?',
beam 6, length penalty 0.7, at most 32 tokens, no repeated trigram; output lower-cased."""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import pre_caption

PROMPT = ' what is the summary of article " {} "?'
PROMPT_ZH = "{} 请用一个句子简单总结上文："


class Summarize(Task):
    name = "summarize"
    uses_image = False
    generation = dict(beam_size=6, len_penalty=0.7, max_len_a=0, max_len_b=32, min_len=1, no_repeat_ngram_size=3)
    max_src_length = 512

    def prepare(self, ofa, text: str) -> Example:
        if not isinstance(text, str) or not text.strip():
            raise OFAError("summarize: the text is empty")
        tok = ofa.tokenizer
        prompt = PROMPT_ZH if tok.language == "zh" else PROMPT
        source = pre_caption(text, self.max_src_length).replace("<unk>", "unk")
        ids = tok.encode(prompt.format(source), length=self.max_src_length)
        return Example([tok.bos] + ids + [tok.eos])

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        return [{"summary": ofa.decode_text(h.tokens).lower().strip(), "score": h.score} for h in hypos]
