"""The small model's text vocabulary: the BPE tokens its scenes can produce, and nothing else.

The ``mini`` size (:mod:`openofa.config`) sets ``text_vocab: scenes``: its dictionary keeps, of
the English ``dict.txt``, only the lines of ``text/vocab/BPE/dict.scenes.txt`` (in the original
order), followed by ``<mask>``, no image codes and 64 location bins. The text layer reads any
such named subset (:meth:`openofa.text.dictionary.Dictionary.for_config`); this module says which
symbols the small model's subset holds, and writes the file.
"""

from __future__ import annotations

from pathlib import Path

from openofa.mini.scenes import COLORS, NUMBER_WORDS, SHAPES, plural

__all__ = ["TEXT_VOCAB", "scene_texts", "text_vocabulary_lines", "write_text_vocabulary"]

#: the name of the subset (``OFAConfig.text_vocab`` of the ``mini`` size)
TEXT_VOCAB = "scenes"


def scene_texts() -> list[str]:
    """Every word and phrase the scenes can produce (captions, questions, answers, referring
    expressions) and the prompts of the tasks the small model is trained on, each as the tasks
    encode it (with a leading space). Their BPE tokens are the small model's text vocabulary."""
    from openofa.tasks.caption import PROMPT as CAPTION_PROMPT
    from openofa.tasks.grounding import PROMPT as REFCOCO_PROMPT

    words = set(SHAPES) | {plural(k) for k in SHAPES} | set(COLORS) | set(NUMBER_WORDS)
    words |= {"small", "large", "left", "right", "yes", "no", "a", "and", "the", "is", "on", "or", "of"}
    texts = [f" {w}" for w in sorted(words)]
    for kind in SHAPES:
        texts += [f" what color is the {kind}?", f" is the {kind} on the left or on the right?",
                  f" how many {plural(kind)} are there?", f" the {kind} on the left", f" the small {kind}"]
    for color in sorted(COLORS):
        texts += [f" what shape is the {color} object?", f" is there a {color} circle?", f" the {color} star"]
    texts += [" how many objects are there?", " a small red circle, a large blue square and a green star",
              CAPTION_PROMPT, REFCOCO_PROMPT.format("the red circle")]
    return texts


def text_vocabulary_lines() -> list[str]:
    """The lines of ``dict.scenes.txt``: the lines of the English ``dict.txt`` whose symbol is a
    BPE token of :func:`scene_texts`, in the original order (so ids follow the original's
    frequency order)."""
    from openofa.text.dictionary import LANGUAGE_DIRS, VOCAB_DIR
    from openofa.text.tokenizer import OFATokenizer

    tok = OFATokenizer.from_language("en")
    needed = {g for t in scene_texts() for g in tok.tokenize(t)}
    lines = (VOCAB_DIR / LANGUAGE_DIRS["en"] / "dict.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.rsplit(" ", 1)[0] in needed]


def write_text_vocabulary(path: str | Path | None = None) -> Path:
    """Write :func:`text_vocabulary_lines` to ``path`` (default: the packaged ``dict.scenes.txt``)."""
    from openofa.text.dictionary import text_vocab_path

    path = Path(path) if path is not None else text_vocab_path("en", TEXT_VOCAB)
    path.write_text("".join(line + "\n" for line in text_vocabulary_lines()), encoding="utf-8")
    return path
