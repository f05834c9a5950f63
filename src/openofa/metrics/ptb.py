"""The tokenization of the COCO caption evaluation, in Python.

coco-caption (``pycocoevalcap``) runs the Stanford PTBTokenizer of CoreNLP 3.4.1 (Java) as
``PTBTokenizer -preserveLines -lowerCase`` on all captions joined by newlines, then drops the
tokens in :data:`PUNCTUATIONS`. :func:`coco_tokenize` does the same without Java.

The Java tokenizer is a JFlex scanner (``PTBLexer.flex``). This module keeps its rules, in its
order, as Python regular expressions, and scans the way JFlex does: at each position the rule
with the longest match wins, trailing context (``r/s``) counting towards the length, and the
earlier rule wins a tie. The scanner is case-insensitive (``%caseless``) except inside
character classes. Options are the ones coco-caption gets: the PTB3 defaults (``(`` -> ``-LRB-``,
LaTeX-style quotes, ``---`` -> ``--``, ``...``), no americanization, untokenizable characters
deleted, and lower-cased tokens, so that ``(`` becomes ``-lrb-``, which coco-caption's
(upper-case) punctuation list does not remove.

Known differences, all outside ordinary captions: letters are Python's Unicode letters, not
those of the JDK that generated the Java scanner; a caption containing ``\\r``, ``\\f``, ``\\v``,
U+2028 or U+2029 makes the Java output lines shift (every later caption is scored against the
wrong line), here those characters are spaces; an SGML-like tag ``<a b='...'>`` whose quoted
value spans captions is not recognised.
"""

from __future__ import annotations

import functools
import re
import sys

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "coco_tokenize"]

#: tokens coco-caption removes after tokenization (compared with the lower-cased tokens)
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])


# ---------------------------------------------------------------------------------------------
# character classes of JFlex ([:letter:] = Character.isLetter, [:digit:] = isDigit, ...)

def _class_of(pred) -> str:
    ranges, start = [], None
    for cp in range(0x10000):
        ok = not 0xD800 <= cp <= 0xDFFF and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_L = _class_of(str.isalpha)
_UPPER = _class_of(str.isupper)


def _ci(pattern: str) -> str:
    """JFlex ``%caseless``: ASCII letters outside character classes match either case."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            n = 6 if pattern[i + 1] == "u" else 4 if pattern[i + 1] == "x" else 2
            out.append(pattern[i:i + n])
            i += n
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c.isascii() and c.isalpha():
            c = f"[{c.lower()}{c.upper()}]"
        out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# macros of PTBLexer.flex (CoreNLP 3.4.1), as Python regular expressions

DIGIT = r"[\d\u07C0-\u07C9]"
SGML = (r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*"
        r"|[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>")
SPMDASH = r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]"
SPAMP = r"&amp;"
SPPUNC = r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"
SPLET = r"&[aeiouAEIOU](?:acute|grave|uml);"
SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
SPACES = SPACE + "+"
NEWLINE = r"(?:\r|\r?\n|\u2028|\u2029|\u000B|\u000C|\u0085)"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
SPACENLS = SPACENL + "+"
SENTEND = f"{SPACENL}(?:{SGML}|{SPACENL}|[{_UPPER}])"
DATE = f"{DIGIT}{{1,2}}[\\-/]{DIGIT}{{1,2}}[\\-/]{DIGIT}{{2,4}}"
NUM = f"(?:{DIGIT}+|{DIGIT}*(?:[.:,\\u00AD\\u066B\\u066C]{DIGIT}+)+)"
NUMBER = f"[\\-+]?{NUM}"
SUBSUPNUM = r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"
FRAC = f"(?:{DIGIT}{{1,4}}[- \\u00A0])?{DIGIT}{{1,4}}(?:\\\\?/|\\u2044){DIGIT}{{1,4}}"
FRAC2 = r"[\u00BC\u00BD\u00BE\u2153-\u215E]"
DOLSIGN = r"(?:[A-Z]*\$|#)"
DOLSIGN2 = r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]"
LETTER_X = (r"\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384"
            r"\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F"
            r"\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670"
            r"\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA"
            r"\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8"
            r"\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82"
            r"\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48"
            r"\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD")
LETTER = f"(?:[{_L}{LETTER_X}]|{SPLET})"
LD = f"(?:{LETTER}|{DIGIT})"
WORD = f"{LETTER}{LD}*(?:[.!?]{LETTER}{LD}*)*"
FILENAME_EXT = ("(?:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf"
                "|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)")
FILENAME = f"{LD}+(?:[.]{LD}+)*(?:[.]{FILENAME_EXT})"
APOS = r"(?:['\u0092\u2019]|&apos;)"
APOSETCETERA = f"(?:{APOS}|[`\\u0091\\u2018\\u201B])"
LD_C = f"[{_L}\\d]"  # [:letter:]|[:digit:]
HYPHEN = r"[\-_\u058A\u2010\u2011]"
THING = (f"(?:[dDoOlL]{APOSETCETERA}{LD_C})?{LD_C}+"
         f"(?:{HYPHEN}(?:[dDoOlL]{APOSETCETERA}{LD_C})?{LD_C}+)*")
THINGA = f"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+"
THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])*|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))"
ACRO2 = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))"
HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\\u00AD]*(?:-(?:[A-Za-z0-9\\u00AD]+|{ACRO2}\\.))+"
REDAUX = f"{APOS}(?:[msdMSD]|re|ve|ll)"
SWORD = r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"
SREDAUX = f"n{APOSETCETERA}t"
APOWORD = (f"(?:{APOS}n{APOS}?|[lLdDjJ]{APOS}|Dunkin{APOS}|somethin{APOS}|ol{APOS}|{APOS}em"
           f"|[A-HJ-XZn]{APOSETCETERA}[{_L}]{{2}}[{_L}]*|{APOS}[2-9]0s|{APOS}till?"
           f"|[{_L}][{_L}]*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z][{_L}]*|{APOS}cause|cont'd\\.?|'twas"
           f"|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{APOSETCETERA}o)")
APOWORD2 = f"y{APOS}"
FULLURL = r"https?://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"
LIKELYURL = (r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
             r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?:com|net|org|edu)))"
             r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?")
EMAIL = (r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
         r"(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+)(?:&gt;|>)?")
TWITTER = f"(?:@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+)"
ABMONTH = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
ABDAYS = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
ABSTATE = ("Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich"
           "|Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo")
ABCOMP = "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
ABNUM = "tel|est|ext|sq"
ABPTIT = r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq"
ABBREV1 = f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\\."
ABTITLE = ("Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt"
           "|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp"
           "|Mlle|Mme|Msgr|Sfc")
ABCOMP2 = "Invt|Elec|Natl|M[ft]g|Dept"
ABBREV4 = f"(?:{ABTITLE}|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|{ACRO}|{ABCOMP2})"
ABBREV2 = f"{ABBREV4}\\."
ACRONYM = f"{ACRO}\\."
ABBREV3 = r"(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\."
PHONE = (r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])[0-9]{3,4}"
         r"[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}")
LDOTS = r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]"
FNMARKS = r"@+|#+|_+"
ASTS = r"\*+|(?:\\\*){1,3}"
INSENTP = r"[,;:\u3001]"
QUOTES = (f"{APOS}|''|[`\\u2018\\u2019\\u201A\\u201B\\u201C\\u201D\\u0091\\u0092\\u0093\\u0094\\u201E\\u201F"
          f"\\u2039\\u203A\\u00AB\\u00BB]{{1,2}}")
DBLQUOT = r"\"|&quot;"
TBSPEC = (f"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls"
          f"|Cap{APOS}n|c{APOS}est")
TBSPEC2 = f"{APOS}[0-9][0-9]"
SMILEY = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"
ASIANSMILEY = (r"[\^x=~<>]\.\[\^x=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
               r"|\([\^x=~<>']-[\^x=~<>'`]\)")
MISCSYMBOL = ("[+%&~\\^|\\\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7"
              "\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E"
              "\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023"
              "\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF"
              "\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65\uFF65]")
ACRONYM_CONTEXT = (
    f"{SPACENLS}(?:[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er"
    f"|[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur"
    f"|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e"
    f"|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou|{SGML}){SPACENL}")


# ---------------------------------------------------------------------------------------------
# token normalizations of the lexer's actions

def _soft(s: str) -> str:  # removeSoftHyphens
    return (s.replace("\u00AD", "") or "-") if "\u00AD" in s else s


_AMP = re.compile("(?i:&amp;)")
_QUOTE_MAPS = [(re.compile("[\u0091\u2018\u201B\u2039]"), "`"), (re.compile("[\u0092\u2019\u203A]"), "'"),
               (re.compile("[\u0093\u201C\u00AB]"), "``"), (re.compile("[\u0094\u201D\u00BB]"), "''")]


def _quotes(s: str, left: bool) -> str:  # latexQuotes
    s = re.sub("&apos;|'", "`" if left else "'", s)
    s = re.sub('"|&quot;', "``" if left else "''", s)
    for pat, rep in _QUOTE_MAPS:
        s = pat.sub(rep, s)
    return s


def _parens(s: str) -> str:
    return s.replace("(", "-LRB-").replace(")", "-RRB-")


_FRACTIONS = {"\u00BC": "1/4", "\u00BD": "1/2", "\u00BE": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = [("\u00A2", "cents"), ("\u00A3", "#")] + [(c, "$") for c in "\u0080\u00A4\u20A0\u20AC"]


def _currency(s: str) -> str:
    for c, rep in _CURRENCY:
        s = s.replace(c, rep)
    return s


# Actions: text -> (token or None, characters pushed back). Rules in the order of PTBLexer.flex;
# each is (pattern, trailing context or None, action, can_contain_spaces).
_TOK = lambda t: (t, 0)  # noqa: E731
_SKIP = lambda t: (None, 0)  # noqa: E731


def _acronym(t):
    if len(t) == 2:  # "I." -> "I", then "."
        return t[:1], 1
    return t, 1  # "U.S." and then "." again


def _abbrev1_dup(t):
    return t, 1  # the abbreviation with its period, then the period again


_RULES_SRC = [
    ("c[+][+]", None, _TOK, False),
    ("(?:c|f)#", None, _TOK, False),
    ("cannot", None, lambda t: (t[:3], 3), False),
    ("'twas", None, lambda t: (t[:2], 3), False),
    ("'tis", None, lambda t: (t[:2], 2), False),
    ("gonna|gotta|lemme|gimme|wanna", None, lambda t: (t[:3], 2), False),
    (SGML, None, lambda t: (t.replace(" ", "\u00A0"), 0), True),
    (SPMDASH, None, lambda t: ("--", 0), False),
    (SPAMP, None, lambda t: (_AMP.sub("&", t), 0), False),
    (SPPUNC, None, _TOK, False),
    (WORD, REDAUX, lambda t: (_soft(t), 0), False),
    (SWORD, SREDAUX, lambda t: (_soft(t), 0), False),
    (WORD, None, lambda t: (_soft(t), 0), False),
    (APOWORD, None, _TOK, False),
    (APOWORD2, f"[{_L}]", _TOK, False),
    (FULLURL, None, _TOK, False),
    (LIKELYURL, None, _TOK, False),
    (EMAIL, None, _TOK, False),
    (TWITTER, None, _TOK, False),
    (REDAUX, "[^A-Za-z]", lambda t: (_quotes(t, False), 0), False),
    (SREDAUX, "[^A-Za-z]", lambda t: (_quotes(t, False), 0), False),
    (DATE, None, _TOK, False),
    (NUMBER, None, lambda t: (_soft(t), 0), False),
    (SUBSUPNUM, None, _TOK, False),
    (FRAC, None, lambda t: (t.replace(" ", "\u00A0"), 0), True),
    (FRAC2, None, lambda t: (_FRACTIONS.get(t, t), 0), False),
    (TBSPEC, None, lambda t: (_AMP.sub("&", t), 0), False),
    (THING3, None, _TOK, False),
    (DOLSIGN, None, _TOK, False),
    (DOLSIGN2, None, lambda t: (_currency(t), 0), False),
    (ACRONYM, ACRONYM_CONTEXT, _acronym, False),
    (ABBREV3, f"{SPACENL}?{DIGIT}", _TOK, False),
    ("(?:pt[eyEY]|co)\\.", f"{SPACE}(?:ltd|lim)", _TOK, False),
    (ABBREV1, SENTEND, _abbrev1_dup, False),
    (ABBREV1, "[\\s\\S][\\s\\S]", _TOK, False),
    (ABBREV1, None, _abbrev1_dup, False),
    (ABBREV2, None, _TOK, False),
    (ABBREV4, SPACE, _TOK, False),
    (ACRO, SPACENL, _TOK, False),
    (TBSPEC2, SPACENL, _TOK, False),
    (FILENAME, f"(?:{SPACENL}|[.?!,])", _TOK, False),
    (WORD + "\\.", INSENTP, lambda t: (_soft(t), 0), False),
    (PHONE, None, lambda t: (_parens(t.replace(" ", "\u00A0")), 0), True),
    (DBLQUOT, "[A-Za-z0-9$]", lambda t: (_quotes(t, True), 0), False),
    (DBLQUOT, None, lambda t: (_quotes(t, False), 0), False),
    ("\\x7f", None, _SKIP, False),
    ("<|&lt;", None, lambda t: ("<", 0), False),
    (">|&gt;", None, lambda t: (">", 0), False),
    (SMILEY, "[^A-Za-z0-9]", lambda t: (_parens(t), 0), False),
    (ASIANSMILEY, None, lambda t: (_parens(t), 0), False),
    ("\\{", None, lambda t: ("-LCB-", 0), False),
    ("\\}", None, lambda t: ("-RCB-", 0), False),
    ("\\[", None, lambda t: ("-LSB-", 0), False),
    ("\\]", None, lambda t: ("-RSB-", 0), False),
    ("\\(", None, lambda t: ("-LRB-", 0), False),
    ("\\)", None, lambda t: ("-RRB-", 0), False),
    ("-+", None, lambda t: ("--" if 3 <= len(t) <= 4 else t, 0), False),
    (LDOTS, None, lambda t: ("...", 0), True),
    (FNMARKS, None, _TOK, False),
    (ASTS, None, _TOK, False),
    (INSENTP, None, _TOK, False),
    ("[?!]+", None, _TOK, False),
    ("[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _TOK, False),
    ("=", None, _TOK, False),
    ("/", None, _TOK, False),
    (HTHING + "\\.", INSENTP, lambda t: (_soft(t), 0), False),
    (HTHING, None, lambda t: (_soft(t), 0), False),
    (THING + "\\.", INSENTP, _TOK, False),
    (THING, None, _TOK, False),
    (THINGA + "\\.", INSENTP, lambda t: (_AMP.sub("&", t), 0), False),
    (THINGA, None, lambda t: (_AMP.sub("&", t), 0), False),
    ("'", "[A-Za-z][^ \\t\\n\\r\\u00A0]", lambda t: (_quotes(t, True), 0), False),
    (REDAUX, None, lambda t: (_quotes(t, False), 0), False),
    (SREDAUX, None, lambda t: (_quotes(t, False), 0), False),
    (QUOTES, None, lambda t: (_quotes(t, False), 0), False),
    ("<<|>>", None, _TOK, False),
    (MISCSYMBOL, None, _TOK, False),
    ("\\x00|" + SPACES + "|[\\u200B\\u200E-\\u200F\\uFEFF]", None, _SKIP, True),
    ("&nbsp;", None, _SKIP, False),
]


class _Rule:
    __slots__ = ("body", "probe", "context", "action", "spaces")

    def __init__(self, body, context, action, spaces):
        self.body = re.compile(_ci(body))
        self.context = re.compile(_ci(context)) if context else None
        self.probe = re.compile(f"(?:{_ci(body)})(?={_ci(context)})" if context else _ci(body))
        self.action = action
        self.spaces = spaces

    def longest(self, text: str, pos: int, bound: int) -> tuple[int, int]:
        """(total length with trailing context, body length) of the longest match at ``pos``
        of a rule that matches there."""
        body, ctx = self.body, self.context
        best = (0, 0)
        for end in range(bound, pos, -1):
            if body.fullmatch(text, pos, end):
                if ctx is None:
                    return end - pos, end - pos
                m = ctx.match(text, end)
                if m is not None and m.end() - pos > best[0]:
                    best = (m.end() - pos, end - pos)
        return best


@functools.lru_cache(maxsize=None)
def _rules() -> list[_Rule]:  # compiled on first use (0.2 s)
    return [_Rule(*r) for r in _RULES_SRC]


@functools.lru_cache(maxsize=None)
def _abbrev() -> re.Pattern:
    return re.compile(_ci(f"{ABBREV1}|{ABBREV2}|{ABBREV3}|(?:pt[eyEY]|co)\\."))


# A plain word before a space, a closing mark or a final period: no rule does better than WORD
# (unless the word is one the lexer splits, or an abbreviation before its period).
_PLAIN = re.compile(r"[A-Za-z]+(?=[,;:)\]}\"]?(?:[ \t\n]|\Z)|\.(?:[ \t\n]|\Z))")
_LONE_MARK = re.compile(r"[.,](?=\n|\Z|[ \t](?!\.))")  # not a number, not part of ". . ."
_SPLIT_WORDS = {"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"}
_SPACE_CHARS = re.compile(r"[ \t\n]")
_SPACE_RUN = re.compile(SPACES)
_NEWLINES = str.maketrans({"\r": " ", "\u000b": " ", "\u000c": " ", "\u2028": " ", "\u2029": " "})


def _lex(text: str) -> list[list[str]]:
    """Tokens of each line of ``text`` (the Java PTBTokenizer with ``-preserveLines``)."""
    rules, abbrev = _rules(), _abbrev()
    probes = [r.probe.match for r in rules]
    lines: list[list[str]] = [[]]
    pos, n = 0, len(text)
    while pos < n:
        c = text[pos]
        if c in " \t":  # only the SPACES rule matches here, and it takes the whole run
            pos = _SPACE_RUN.match(text, pos).end()
            continue
        if c == "\n":  # the NEWLINE rule (a line break in the output with -preserveLines)
            lines.append([])
            pos += 1
            continue
        if c in ".," and _LONE_MARK.match(text, pos):
            lines[-1].append(c)
            pos += 1
            continue
        m = _PLAIN.match(text, pos)
        if (m is not None and m.group().lower() not in _SPLIT_WORDS
                and not (text.startswith(".", m.end()) and abbrev.fullmatch(text, pos, m.end() + 1))):
            lines[-1].append(m.group())
            pos = m.end()
            continue
        ws = _SPACE_CHARS.search(text, pos)
        chunk_end = ws.start() if ws else n
        nl = text.find("\n", pos)
        line_end = nl if nl >= 0 else n
        best, best_body, best_rule = 0, 0, None
        for rule in [r for r, probe in zip(rules, probes) if probe(text, pos)]:
            total, body = rule.longest(text, pos, line_end if rule.spaces else max(chunk_end, pos + 1))
            if total > best:
                best, best_body, best_rule = total, body, rule
        if best_rule is None:  # untokenizable character: deleted
            pos += 1
            continue
        token, pushback = best_rule.action(text[pos:pos + best_body])
        pos += best_body - pushback
        if token is not None:
            lines[-1].append(token)
    return lines


def _utf16(text: str) -> str:
    """Characters beyond U+FFFF as two surrogates, the UTF-16 units the Java scanner reads."""
    out = []
    for c in text:
        cp = ord(c)
        out.append(c if cp <= 0xFFFF else chr(0xD800 + ((cp - 0x10000) >> 10)) + chr(0xDC00 + (cp & 0x3FF)))
    return "".join(out)


def _unicode(token: str) -> str:
    if any("\ud800" <= c <= "\udfff" for c in token):
        token = token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return token.lower()


def ptb_tokenize(captions: list[str]) -> list[list[str]]:
    """Lower-cased PTB tokens of each caption, as ``PTBTokenizer -preserveLines -lowerCase`` gives
    them when the captions are fed as the lines of one file (as coco-caption does; the next
    caption can matter to a caption ending in an abbreviation such as ``etc.``)."""
    text = "\n".join(c.replace("\n", " ").translate(_NEWLINES) for c in captions)
    if not text.isascii():
        text = _utf16(text)
    return [[_unicode(t) for t in line] for line in _lex(text)]


def coco_tokenize(captions: list[str]) -> list[str]:
    """coco-caption's ``PTBTokenizer().tokenize``: PTB tokens without :data:`PUNCTUATIONS`, joined
    by single spaces."""
    out = []
    for tokens in ptb_tokenize(captions):
        line = " ".join(tokens).rstrip()
        out.append(" ".join(w for w in line.split(" ") if w not in PUNCTUATIONS))
    return out


if __name__ == "__main__":  # pragma: no cover - `python -m openofa.metrics.ptb < captions.txt`
    for row in coco_tokenize(sys.stdin.read().split("\n")):
        print(row)
