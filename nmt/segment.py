"""Lines longer than a model was trained on, cut into parts it can translate.

Training keeps pairs of at most ``train.max_train_len`` source pieces, so a longer line (a
paragraph given as one line) is outside everything the model saw, and an RNN decoder stops early
on it. Dev verses joined 32 to a line (1,260 pieces on average, the length 128) and translated
whole: the 20-minute Luong model of benchmarks/README.md wrote half the reference's words, BLEU
4.2 (29.8 for the verses one a line), the default model of an hour's ``make train`` 57 %, 7.0
(36.2). Cut where sentences and clauses end (. ! ? ; : …, with any closing quote or bracket, before
a space; Chinese and Japanese 。！？；： anywhere) and gathered again into parts of up to half the
length, the same lines scored 32.0 and 38.6, the parts' translations written side by side
(``nmt.translate``). A part is the line's own text: nothing is put between its clauses. The
parts' translations are joined by a space, but after Chinese or Japanese text, which puts none
between sentences (``join_parts``).

Why half: parts of every clause scored 31.3 / 37.0, of up to the full length 25.9 / 34.4, of up
to a quarter 31.9 / 38.2; at 4, 8 and 16 verses a line half the length was the best of the four
too (benchmarks/long_lines.py; results/2026-12-06-intel-xeon-amx-m207-2c-long-lines{,-default}.md).
A line within the length is never cut. A clause still longer than the part size (no marks) is
cut between words, and a word longer than the model's length (no space: a run-together string,
Thai or Chinese without marks) between characters into parts of up to half the length: decoded
whole, a line of 100,000 such characters was still running after 11 minutes (a tiny model, the Zen
4 VM; attention over every source piece at each of as many steps); cut, it took 14 s. A cut never
splits a letter (a combining mark stays with its base).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from nmt.scripts import unspaced

# A sentence or clause ends at these marks, with any closing quotes or brackets: Latin, Greek,
# Arabic and Devanagari ones before a space; the full-width ones of Chinese and Japanese, written
# without spaces, anywhere.
_CLOSING = "\"'»”’›)]}」』）》〉】"  # quotes and brackets
_END = re.compile(rf"[.!?;:…؟؛।]+[{re.escape(_CLOSING)}]*\s+|[。！？；：．]+[{re.escape(_CLOSING)}]*\s*")
_WORD = re.compile(r"\S+\s*")  # a word and the space after it

Pieces = Callable[[list[str]], list[int]]  # source pieces of each text, </s> included (the tokenizer's)


def _spans(line: str) -> list[str]:
    """``line`` cut after each sentence or clause end, each span with the space after it (joined,
    they give the line back); spans of spaces only left out."""
    cuts = [0] + [end.end() for end in _END.finditer(line)] + [len(line)]
    return [span for span in (line[a:b] for a, b in zip(cuts, cuts[1:])) if span.strip()]


def clauses(line: str) -> list[str]:
    """``line`` cut after each sentence or clause end: the parts, spaces at the cuts dropped."""
    return [span.strip() for span in _spans(line)]


def _counted(spans: list[str], count: Pieces) -> list[tuple[str, int]]:
    """Each span with its piece count (of the span without its spaces)."""
    return list(zip(spans, count([span.strip() for span in spans])))


def _gathered(units: list[tuple[str, int]], most: int) -> list[str]:
    """Spans of a line and their piece counts (each with its </s>) joined in order into parts of
    at most ``most`` pieces (one </s> a part); a unit longer than that is a part of its own. A part
    is the line's text from its first span to its last: nothing is inserted, so a line written
    without spaces keeps none between its clauses."""
    parts, current, size = [], "", 1
    for text, n in units:
        if current and size + n - 1 > most:
            parts.append(current)
            current, size = "", 1
        current += text
        size += n - 1
    parts.append(current)
    return parts


def _joined_to_the_one_before(character: str) -> bool:
    """Whether a cut before ``character`` would split a letter: a combining mark (Thai vowels and
    tone marks, Devanagari vowel signs, accents written apart), a zero-width joiner, a variation
    selector."""
    return unicodedata.category(character) in ("Mn", "Mc", "Me") or character == "\u200d"


def _even(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` parts of as even a length as the letters allow: a cut never goes
    before a character joined to the one before it (``_joined_to_the_one_before``) or after a
    zero-width joiner, so one letter is not cut at all ([text])."""
    size, extra = divmod(len(text), parts)
    cuts = [0]
    for k in range(parts - 1):
        at = min(len(text), max(cuts[-1] + size + (k < extra), cuts[-1] + 1))
        while at < len(text) and (_joined_to_the_one_before(text[at]) or text[at - 1] == "\u200d"):
            at += 1
        if at < len(text):
            cuts.append(at)
    return [text[a:b] for a, b in zip(cuts, cuts[1:] + [len(text)])]


def _between_characters(word: str, n: int, count: Pieces, most: int) -> list[tuple[str, int]]:
    """``word`` of ``n`` pieces cut between characters (``_even``) into parts of at most ``most``
    pieces (each with its </s>), in order, with their piece counts; only new parts are counted. A
    single letter is never cut, whatever it counts."""
    if n <= most or len(word.strip()) < 2:
        return [(word, n)]
    # as many parts as needed were the pieces spread evenly; a part still too long is cut again
    parts = _even(word, max(2, -(-(n - 1) // max(1, most - 1))))
    if len(parts) == 1:  # one letter (a base and its marks)
        return [(word, n)]
    return [unit for part, m in _counted(parts, count) for unit in _between_characters(part, m, count, most)]


def cut_long(line: str, count: Pieces, longest: int, part: int | None = None) -> tuple[list[str], bool]:
    """``split_long``'s parts of ``line``, and whether a stretch of more than ``longest`` pieces
    with no sentence mark or space was cut between characters (which may split a word)."""
    if count([line])[0] <= longest:
        return [line], False
    target = max(1, part or longest // 2)
    units: list[tuple[str, int]] = []
    glued = False
    for span, n in _counted(_spans(line), count):
        if n <= longest:
            units.append((span, n))
            continue
        words: list[tuple[str, int]] = []  # no mark to cut at: between words, as full as the part size allows
        for word, m in _counted(_WORD.findall(span), count):
            glued |= m > longest
            words += _between_characters(word, m, count, target) if m > longest else [(word, m)]
        units.extend(_counted(_gathered(words, target), count))
    return [text.strip() for text in _gathered(units, target)], glued


def split_long(line: str, count: Pieces, longest: int, part: int | None = None) -> list[str]:
    """``line`` alone when it has at most ``longest`` source pieces; else its clauses, a clause
    longer than ``longest`` cut between words (a word longer than that between characters), joined
    again in order into parts of at most ``part`` pieces (default ``longest // 2``; a clause longer
    than that stands alone), spaces at their ends dropped (``cut_long``)."""
    return cut_long(line, count, longest, part)[0]


def join_parts(texts: list[str]) -> str:
    """The translations of a line's parts as one line: a space between two, but after a part that
    ends in Chinese or Japanese text, a closing quote after it or not ("要有光。就有了光。", not
    "要有光。 就有了光。"); empty translations left out."""
    line = ""
    for text in filter(None, texts):
        # a quote closed after a full-width mark ends a Chinese sentence (“要有光。” wants no space);
        # one closed after a word does not (The sign read “出口” He left.)
        inner = line.rstrip(_CLOSING)[-1:]
        end = inner if inner and unicodedata.category(inner).startswith("P") else line[-1:]
        line += text if not line or unspaced(end) else " " + text
    return line
