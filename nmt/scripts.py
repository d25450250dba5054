"""Writing systems that put no space between words: where a translation's parts join without one,
and how many words a sentence of them has.

Chinese and Japanese write no space between words or sentences. ``nmt.segment`` joins translated
parts ending in such text without a space; ``nmt.data``'s length filters count each of their
letters as a word (about 1.5 of them to an English word), where a whitespace count made a whole
Chinese sentence one word. Thai, Lao and Khmer, written without spaces between words but with one
between phrases and sentences, are counted and joined as spaced text.
"""

from __future__ import annotations

import re


def _class(*spans: tuple[int, int]) -> re.Pattern:
    """A regular expression matching one character of the code point ranges ``spans``."""
    return re.compile("[" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in spans) + "]")


# CJK symbols and punctuation, kana, CJK ideographs (and their extensions, compatibility forms),
# full-width forms
_UNSPACED = _class((0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
                   (0x20000, 0x3FFFF))
# their letters: kana (full- and half-width), the ideographs, 々 and 〆; not punctuation, not full-width Latin
_LETTER = _class((0x3005, 0x3006), (0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
                 (0xFF66, 0xFF9F), (0x20000, 0x3FFFF))


def unspaced(char: str) -> bool:
    """Whether ``char`` is Chinese or Japanese text: a letter, a mark, a full-width form."""
    return _UNSPACED.match(char) is not None


def word_count(text: str) -> int:
    """Whitespace-separated words, each Chinese or Japanese letter counted as one: "Sea la luz." 3,
    "要有光。" 4 (three letters and the mark), "iPhone很好" 3. ``len(text.split())`` for text
    without such letters."""
    letters = len(_LETTER.findall(text))
    return letters + len((_LETTER.sub(" ", text) if letters else text).split())
