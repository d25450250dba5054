"""Lines longer than a model was trained on, cut into parts it can translate.

Training keeps pairs of at most ``train.max_train_len`` source pieces, so a longer line (a
paragraph given as one line) is outside everything the model saw, and an RNN decoder stops early
on it: the Luong model of benchmarks/README.md ("Quality per unit of time"; 20 minutes, max 128
pieces) translating dev verses joined 32 to a line (1,260 pieces on average) wrote half the words
of the reference, BLEU 4.2 against 29.8 for the verses one a line. Cut where sentences and clauses
end (. ! ? ; : …, with any closing quote or bracket) and put back together up to half the longest
length, the same lines scored 32.5, the parts written side by side (``nmt.translate``).

Why half: whole sentences (every ; and :) scored 31.4, parts up to the full length 27.6, up to a
half 32.5 and a quarter 32.0 (the same model; dev verses 8 to a line: 29.6, 25.5, 30.8, 30.3). A
line within the length is never cut: verses cut into sentences scored 27.9 against 29.8 whole.
A clause still longer than the model's length (no punctuation) is cut between words into equal parts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

# a sentence or clause ends at these marks, with any closing quotes or brackets, before a space
_END = re.compile(r"[.!?;:…]+[\"'»”’)\]]*\s+")

Counter = Callable[[list[str]], list[int]]  # source pieces of each text (the tokenizer's)


def clauses(line: str) -> list[str]:
    """``line`` cut after each sentence or clause end: the parts, spaces at the cuts dropped."""
    parts, start = [], 0
    for end in _END.finditer(line):
        parts.append(line[start : end.start() + len(end.group().rstrip())])
        start = end.end()
    parts.append(line[start:])
    return [part for part in (p.strip() for p in parts) if part]


def _between_words(text: str, pieces: int, most: int) -> list[str]:
    """``text`` (``pieces`` long) cut between words into the fewest equal parts of at most ``most``
    pieces each, as near as word counts allow."""
    words = text.split()
    count = min(len(words), math.ceil(pieces / most))
    bounds = [round(i * len(words) / count) for i in range(count + 1)]
    return [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:])]


def split_long(line: str, count: Counter, longest: int, part: int | None = None) -> list[str]:
    """``line`` alone when it has at most ``longest`` source pieces; else its clauses, a clause
    longer than ``longest`` cut between words, joined again in order into parts of at most
    ``part`` pieces (default ``longest // 2``; a clause longer than that stands alone)."""
    if count([line])[0] <= longest:
        return [line]
    target = max(1, part or longest // 2)
    units: list[tuple[str, int]] = []
    pieces = count(found := clauses(line))
    for clause, n in zip(found, pieces):
        if n <= longest:
            units.append((clause, n))
        else:
            cut = _between_words(clause, n, target)
            units.extend(zip(cut, count(cut)))
    parts, current, size = [], [], 0
    for text, n in units:
        if current and size + n > target:
            parts.append(" ".join(current))
            current, size = [], 0
        current.append(text)
        size += n
    parts.append(" ".join(current))
    return parts
