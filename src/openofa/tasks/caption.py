"""Image captioning: prompt " what does the image describe?", beam 5, at most 16 tokens,
no repeated trigram; punctuation is stripped from the caption as the original's evaluation does."""

from __future__ import annotations

import string

from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import CAPTION_PROMPT, CAPTION_PROMPT_ZH

_NO_PUNCT = str.maketrans({c: None for c in string.punctuation})


class Caption(Task):
    name = "caption"
    image_size = 480
    generation = dict(beam_size=5, max_len_a=0, max_len_b=16, min_len=1, no_repeat_ngram_size=3)

    def prepare(self, ofa, image) -> Example:
        prompt = CAPTION_PROMPT_ZH if ofa.tokenizer.language == "zh" else CAPTION_PROMPT
        return Example(ofa.tokenizer.encode(prompt, bos=True, eos=True), ofa.image_tensor(image, self))

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        out = []
        for best in hypos:
            text = ofa.decode_text(best.tokens)
            if ofa.tokenizer.language == "en":
                text = text.translate(_NO_PUNCT)
            out.append({"caption": text.strip(), "score": best.score})
        return out
