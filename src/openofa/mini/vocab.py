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

__all__ = ["TEXT_VOCAB", "DRAW_TEXT_VOCAB", "READ_TEXT_VOCAB", "scene_texts", "drawing_texts",
           "reading_symbols", "text_vocabulary_lines", "write_text_vocabulary"]

#: the name of the subset (``OFAConfig.text_vocab`` of the ``mini`` size)
TEXT_VOCAB = "scenes"
#: the drawing model's subset (``mini-draw``): the scenes' words, the imagine prompt, "left of"
DRAW_TEXT_VOCAB = "scenes_draw"
#: the reading model's subset (``mini-read``) of the Chinese (BERT) vocabulary
READ_TEXT_VOCAB = "read"


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


def drawing_texts() -> list[str]:
    """The texts of the drawing model (``mini-draw``): the scenes' words, the imagine task's
    prompt and the relations of its captions (:mod:`openofa.mini.draw`)."""
    from openofa.mini.draw import DRAW_TEXTS
    from openofa.tasks.imagine import PROMPT as IMAGINE_PROMPT

    return scene_texts() + [IMAGINE_PROMPT.format("a red circle")] + DRAW_TEXTS


def reading_symbols() -> set[str]:
    """The wordpieces of the reading model (``mini-read``, :mod:`openofa.mini.read`): BERT's
    ``[UNK]``, the OCR prompt's characters, and ``a``-``z`` and ``0``-``9`` alone and as ``##``
    continuations, so that a subset tokenizer splits every lower-case word or number into
    single characters."""
    from openofa.tasks.ocr import PROMPT_ZH
    from openofa.text.tokenizer import OFATokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    return {"[UNK]", *OFATokenizer.from_language("zh").tokenize(PROMPT_ZH), *chars, *(f"##{c}" for c in chars)}


_TEXTS = {TEXT_VOCAB: scene_texts, DRAW_TEXT_VOCAB: drawing_texts}
_LANGUAGES = {READ_TEXT_VOCAB: "zh"}


def text_vocabulary_lines(name: str = TEXT_VOCAB) -> list[str]:
    """The lines of ``dict.<name>.txt``: the lines of the language's ``dict.txt`` whose symbol is a
    BPE token of the subset's texts (:func:`scene_texts`, :func:`drawing_texts`) or one of its
    wordpieces (:func:`reading_symbols`), in the original order (so ids follow the original's)."""
    from openofa.text.dictionary import LANGUAGE_DIRS, VOCAB_DIR
    from openofa.text.tokenizer import OFATokenizer

    language = _LANGUAGES.get(name, "en")
    if language == "zh":
        needed = reading_symbols()
    else:
        tok = OFATokenizer.from_language("en")
        needed = {g for t in _TEXTS[name]() for g in tok.tokenize(t)}
    lines = (VOCAB_DIR / LANGUAGE_DIRS[language] / "dict.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.rsplit(" ", 1)[0] in needed]


def write_text_vocabulary(path: str | Path | None = None, name: str = TEXT_VOCAB) -> Path:
    """Write :func:`text_vocabulary_lines` of ``name`` to ``path`` (default: the packaged ``dict.<name>.txt``)."""
    from openofa.text.dictionary import text_vocab_path

    path = Path(path) if path is not None else text_vocab_path(_LANGUAGES.get(name, "en"), name)
    path.write_text("".join(line + "\n" for line in text_vocabulary_lines(name)), encoding="utf-8")
    return path
