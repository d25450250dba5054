"""Lines longer than a model was trained on, cut into parts it can translate.

Training keeps pairs of at most ``train.max_train_len`` source pieces, so a longer line (a
paragraph given as one line) is outside everything the model saw, and an RNN decoder stops early
on it. Dev verses joined 32 to a line (1,260 pieces on average, the length 128) and translated
whole: the 20-minute Luong model of benchmarks/README.md wrote half the reference's words, BLEU
4.2 (29.8 for the verses one a line), the default model of an hour's ``make train`` 57 %, 7.0
(36.2). Cut where sentences and clauses end (. ! ? ; : …, with any closing quote or bracket) and
gathered again into parts of up to half the length, the same lines scored 32.0 and 38.6, the
parts' translations written side by side (``nmt.translate``).

Why half: parts of every clause scored 31.3 / 37.0, of up to the full length 25.9 / 34.4, of up
to a quarter 31.9 / 38.2; at 4, 8 and 16 verses a line half the length was the best of the four
too (benchmarks/long_lines.py; results/2026-12-06-intel-xeon-amx-m207-2c-long-lines{,-default}.md).
A line within the length is never cut. A clause still longer than the part size (no marks) is
cut between words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# a sentence or clause ends at these marks, with any closing quotes or brackets, before a space
_END = re.compile(r"[.!?;:…]+[\"'»”’)\]]*\s+")

Pieces = Callable[[list[str]], list[int]]  # source pieces of each text, </s> included (the tokenizer's)


def clauses(line: str) -> list[str]:
    """``line`` cut after each sentence or clause end: the parts, spaces at the cuts dropped."""
    parts, start = [], 0
    for end in _END.finditer(line):
        parts.append(line[start : end.start() + len(end.group().rstrip())])
        start = end.end()
    parts.append(line[start:])
    return [part for part in (p.strip() for p in parts) if part]


def _between_words(text: str, count: Pieces, most: int) -> list[str]:
    """``text`` cut between words into parts of at most ``most`` pieces, filled in order (a word
    longer than that stands alone)."""
    return _gathered(list(zip(words := text.split(), count(words))), most)


def _gathered(units: list[tuple[str, int]], most: int) -> list[str]:
    """Texts and their piece counts (each with its </s>) joined in order into parts of at most
    ``most`` pieces (one </s> a part); a unit longer than that is a part of its own."""
    parts, current, size = [], [], 1
    for text, n in units:
        if current and size + n - 1 > most:
            parts.append(" ".join(current))
            current, size = [], 1
        current.append(text)
        size += n - 1
    parts.append(" ".join(current))
    return parts


def split_long(line: str, count: Pieces, longest: int, part: int | None = None) -> list[str]:
    """``line`` alone when it has at most ``longest`` source pieces; else its clauses, a clause
    longer than ``longest`` cut between words, joined again in order into parts of at most
    ``part`` pieces (default ``longest // 2``; a clause longer than that stands alone)."""
    if count([line])[0] <= longest:
        return [line]
    target = max(1, part or longest // 2)
    units: list[tuple[str, int]] = []
    found = clauses(line)
    for clause, n in zip(found, count(found)):
        if n <= longest:
            units.append((clause, n))
        else:
            cut = _between_words(clause, count, target)
            units.extend(zip(cut, count(cut)))
    return _gathered(units, target)
