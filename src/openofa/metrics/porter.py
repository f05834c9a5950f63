"""The Porter stemmer as NLTK runs it by default (``PorterStemmer()``, mode ``NLTK_EXTENSIONS``),
which is what ``rouge_score`` uses with ``use_stemmer=True``.

Porter (1980), "An algorithm for suffix stripping", with NLTK's changes: a few irregular words
(``skies`` -> ``sky``, ``dying`` -> ``die``...), words of one or two letters kept, ``ies``/``ied``
on four-letter words -> ``ie``, ``y`` -> ``i`` only after a consonant that is not the first
letter, ``bli`` -> ``ble``, ``alli`` handled first, ``fulli`` -> ``ful`` and ``logi`` -> ``log``
in step 2, and a two-letter vowel-consonant stem counting as "cvc".
"""

from __future__ import annotations

__all__ = ["stem"]

_IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
              "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
              "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
              "exceed": "exceed", "succeed": "succeed"}
_VOWELS = "aeiou"


def _consonants(word: str) -> list[bool]:
    """True where ``word[i]`` is a consonant; ``y`` is one at the start or after a vowel."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(ch not in _VOWELS and (ch != "y" or i == 0 or not flags[i - 1]))
    return flags


def _measure(stem: str) -> int:
    """m in [C](VC){m}[V]."""
    seq = "".join("c" if c else "v" for c in _consonants(stem))
    return seq.count("vc")


def _has_vowel(stem: str) -> bool:
    return not all(_consonants(stem))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonants(word)[-1]


def _cvc(word: str) -> bool:
    if len(word) >= 3:
        c = _consonants(word)
        return c[-3] and not c[-2] and c[-1] and word[-1] not in "wxy"
    return len(word) == 2 and not _consonants(word)[0] and _consonants(word)[1]


def _rules(word: str, rules) -> str:
    """Apply the first rule whose suffix ends ``word`` (and stop there, whether its condition
    holds or not)."""
    for suffix, repl, cond in rules:
        if word.endswith(suffix):
            stem = word[:len(word) - len(suffix)]
            return stem + repl if cond is None or cond(stem) else word
    return word


def _m_gt0(stem: str) -> bool:
    return _measure(stem) > 0


def _m_gt1(stem: str) -> bool:
    return _measure(stem) > 1


def _step1a(w: str) -> str:
    if w.endswith("ies") and len(w) == 4:
        return w[:-3] + "ie"
    return _rules(w, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])


def _step1b(w: str) -> str:
    if w.endswith("ied"):
        return w[:-3] + ("ie" if len(w) == 4 else "i")
    if w.endswith("eed"):
        return w[:-3] + "ee" if _measure(w[:-3]) > 0 else w
    for suffix in ("ed", "ing"):
        if w.endswith(suffix) and _has_vowel(w[:-len(suffix)]):
            stem = w[:-len(suffix)]
            break
    else:
        return w
    for suffix, repl in (("at", "ate"), ("bl", "ble"), ("iz", "ize")):
        if stem.endswith(suffix):
            return stem[:-len(suffix)] + repl
    if _double_consonant(stem):
        return stem[:-1] if stem[-1] not in "lsz" else stem
    if _measure(stem) == 1 and _cvc(stem):
        return stem + "e"
    return stem


def _step1c(w: str) -> str:
    if w.endswith("y") and len(w) > 2 and _consonants(w[:-1])[-1]:
        return w[:-1] + "i"
    return w


_STEP2 = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
          ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
          ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("fulli", "ful")]


def _step2(w: str) -> str:
    if w.endswith("alli") and _m_gt0(w[:-4]):
        return _step2(w[:-4] + "al")
    rules = [(s, r, _m_gt0) for s, r in _STEP2]
    rules.append(("logi", "log", lambda stem: _m_gt0(w[:-3])))
    return _rules(w, rules)


def _step3(w: str) -> str:
    return _rules(w, [(s, r, _m_gt0) for s, r in (("icate", "ic"), ("ative", ""), ("alize", "al"),
                                                  ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""))])


_STEP4 = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
          "ate", "iti", "ous", "ive", "ize"]


def _step4(w: str) -> str:
    return _rules(w, [(s, "", (lambda st: _m_gt1(st) and st[-1:] in ("s", "t")) if s == "ion" else _m_gt1)
                      for s in _STEP4])


def _step5(w: str) -> str:
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if w.endswith("ll") and _measure(w[:-1]) > 1:
        w = w[:-1]
    return w


def stem(word: str) -> str:
    """The stem of one (lower-cased) word."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(word) <= 2:
        return w
    for step in (_step1a, _step1b, _step1c, _step2, _step3, _step4, _step5):
        w = step(w)
    return w
