"""Translate lines of text with a trained model: ``Translator.from_checkpoint(path).translate(lines)``.

Output keeps the input's order and line count; a line with nothing to translate (empty, spaces, or
only invisible characters, such as zero-width spaces) gives an empty line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from nmt.batching import Sequences, make_batch, sentence_batches
from nmt.beam import beam_stream
from nmt.config import Config, DecodeConfig, DecodePrecision, StoppingRule, choice_error
from nmt.errors import ConfigError
from nmt.hardware import ThreadGovernor, hold_heap, pick_device, resolve_decode_precision
from nmt.linear import bf16_products
from nmt.model import Seq2Seq
from nmt.quantize import int8_products
from nmt.search import Hypothesis, greedy_stream, max_lengths
from nmt.segment import cut_long, join_parts
from nmt.tokenizer import BOS, PAD, Tokenizer

log = logging.getLogger(__name__)


class Translator:
    def __init__(self, model: Seq2Seq, tokenizer: Tokenizer, config: Config, device: torch.device | str = "cpu",
                 follow_load: bool = True, longest_source: int | None = None):
        """``follow_load``: on the CPU, decode with a thread fewer while other processes take a
        core (``nmt.hardware.ThreadGovernor``; never more threads than torch has, and those back
        at the end); False keeps torch's count as it is (a trainer told train.threads).
        ``longest_source``: the longest source the model was trained on, in pieces (its
        checkpoint's record): longer lines are said in a warning."""
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.longest_source = longest_source
        self.device = torch.device(device)
        self.follow_load = follow_load and self.device.type == "cpu"
        self._governor: ThreadGovernor | None = None  # kept across calls: nmt translate's next chunk starts where the last ended
        self._noting: str | None = None  # how notes on the lines are said (``noting``); None: at each call
        self._notes: list[_Notes] = []

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None,
                        decode: DecodeConfig | None = None) -> "Translator":
        """The checkpoint's model, tokenizer and config; ``decode`` replaces the decoding settings
        it was trained with (an experiment's current ones: beam, alpha, precision, batch size …)."""
        from nmt.checkpoint import load_checkpoint

        dev = pick_device(device)
        loaded = load_checkpoint(path, dev)
        config = loaded.config if decode is None else dataclasses.replace(loaded.config, decode=decode)
        return cls(loaded.model, loaded.tokenizer, config, dev, longest_source=loaded.longest_source)

    def hypotheses(
        self,
        lines: list[str],
        beam: int | None = None,
        alpha: float | None = None,
        nbest: int = 1,
        keep_attention: bool = False,
        precision: str | None = None,
        stopping: str | None = None,
        scored: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per line (an empty list for an empty line), in input order.

        ``precision`` "bf16" runs the model under bf16 autocast (scores and log-probabilities stay
        fp32), "auto" where bf16 is native (``nmt.hardware.resolve_precision``), "int8" with its
        matrix products in 8-bit integers (CPU; ``nmt.quantize``); ``stopping`` is
        beam search's rule (``nmt.beam.beam_search``). None takes the checkpoint's
        ``decode.precision`` / ``decode.stopping``. Not ``scored``: greedy search leaves out the
        log-probabilities (``nmt.search.greedy_stream``; log_prob and score NaN), beam search needs them.
        ``progress`` is called with 1 as each line is done (the empty ones first): a progress
        bar's ``update``.

        A line longer than the model was trained on (train.max_train_len source pieces) is decoded
        in parts cut where its sentences end (``nmt.segment``), unless decode.split_long is false
        or the search is asked for more than one hypothesis or for attention (then whole, with a
        warning): its hypothesis is the parts' one after the other, log_prob and score their sums."""
        search = self._settings(beam, alpha, precision, stopping, nbest)
        parts, counts = self._parts(lines, self.config.decode.split_long and nbest == 1 and not keep_attention)
        owners = np.repeat(np.arange(len(lines)), counts).tolist()  # the line of each part
        first = (np.cumsum(counts) - counts).tolist()  # a line's parts sit together, in order
        found: list[list[list[Hypothesis]]] = [[[]] * n for n in counts]
        left = list(counts)
        results: list[list[Hypothesis]] = [[] for _ in lines]
        for j, hyps in self._each(parts, *search, nbest, keep_attention, scored):
            line = owners[j]
            found[line][j - first[line]] = hyps
            left[line] -= 1
            if left[line] == 0:
                results[line] = hyps if counts[line] == 1 else [_joined([part[0] for part in found[line]])]
                if progress is not None:
                    progress(1)
        return results

    def _settings(self, beam: int | None, alpha: float | None, precision: str | None, stopping: str | None,
                  nbest: int) -> tuple[int, float, str, str]:
        """beam, alpha, precision (resolved: auto → fp32 or bf16) and stopping rule, each the
        config's where None; a ValueError for a value out of its choices (``check_beam``'s
        ConfigError is one)."""
        cfg = self.config.decode
        beam = cfg.beam if beam is None else beam
        alpha = cfg.alpha if alpha is None else alpha
        precision = cfg.precision if precision is None else precision
        stopping = cfg.stopping if stopping is None else stopping
        if error := choice_error("precision", precision, DecodePrecision):
            raise ValueError(error)
        precision = resolve_decode_precision(precision, self.device, "decode.precision")
        if error := choice_error("stopping", stopping, StoppingRule):
            raise ValueError(error)
        if nbest > beam:
            raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam})")
        self.check_beam(beam)
        return beam, alpha, precision, stopping

    def widest_beam(self) -> int:
        """The pieces a step chooses from: the target vocabulary less <pad> and <s>, never produced
        (``nmt.search.forbid_specials``). A wider beam's first step cannot fill it."""
        return self.model.generator.out_features - len({PAD, BOS})

    def check_beam(self, beam: int) -> None:
        """A ConfigError for a beam wider than ``widest_beam``: ``--beam 100000`` took 8 GB and 28 s
        for one line."""
        if beam > (pieces := self.widest_beam()):
            raise ConfigError(f"a beam of {beam} is wider than the {pieces:,} target pieces the model "
                              f"chooses from: give a beam of at most {pieces:,} (5–10 is usual)")

    def _encoded(self, lines: list[str]) -> list[list[int] | None]:
        """Each line's source ids (</s> included), None for a line with nothing to translate:
        empty, spaces, or only invisible characters, which normalising drops (zero-width spaces,
        direction marks, control characters): the model would get a source of </s> alone to make
        up a sentence from."""
        todo = [i for i, line in enumerate(lines) if line.strip()]
        encoded: list[list[int] | None] = [None] * len(lines)
        for i, ids in zip(todo, self.tokenizer.encode_src([lines[i] for i in todo])):
            encoded[i] = ids if len(ids) > 1 else None
        return encoded

    def _each(self, encoded: list[list[int] | None], beam: int, alpha: float, precision: str, stopping: str,
              nbest: int, keep_attention: bool, scored: bool) -> Iterator[tuple[int, list[Hypothesis]]]:
        """(line number, hypotheses) of every line (``_encoded``) as it is done: empty lines first,
        the rest as their sentences finish."""
        cfg = self.config.decode
        hold_heap()  # a search step's buffers reuse the last step's memory (nmt.hardware.hold_heap)
        todo = [i for i, ids in enumerate(encoded) if ids is not None]
        empty = [(i, []) for i, ids in enumerate(encoded) if ids is None]
        if not todo:
            yield from empty
            return
        src = Sequences.from_lists([encoded[i] for i in todo])
        was_training = self.model.training
        self.model.eval()
        order = sentence_batches(src.lengths, cfg.batch_size)
        try:
            if self.follow_load and self._governor is None:
                self._governor = ThreadGovernor()  # each call: never above torch's count at its start
            threads = self._governor if self.follow_load else None
            with self._arithmetic(precision), threads or contextlib.nullcontext():
                yield from empty
                found = self._search(src, order, beam, alpha, nbest, keep_attention, stopping, scored)
                numbers = np.concatenate(order).tolist()
                for number, hyps in found:
                    yield todo[numbers[number]], hyps
                    if threads is not None:
                        threads.check()
        finally:
            self.model.train(was_training)

    @contextlib.contextmanager
    def _arithmetic(self, precision: str) -> Iterator[None]:
        """The model's products as ``precision`` (resolved) computes them: from int8 weights, under
        bf16 autocast, or in fp32 as they are."""
        products = {"int8": int8_products, "bf16": bf16_products}.get(precision, lambda _: contextlib.nullcontext())
        with products(self.model), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield

    def scoring(self) -> contextlib.AbstractContextManager[None]:
        """The arithmetic decoding runs in (decode.precision): a score compared with a search's must
        be computed in it too (``nmt.diagnostics.search_errors``); bf16 or int8 scores differ from
        fp32's by more than the differences between hypotheses."""
        return self._arithmetic(self._settings(None, None, None, None, 1)[2])

    def _search(self, src: Sequences, order: list[np.ndarray], beam: int, alpha: float, nbest: int,
                keep_attention: bool, stopping: str, scored: bool) -> Iterator[tuple[int, list[Hypothesis]]]:
        """(number, hypotheses) of every sentence, numbered along ``order``'s batches; at most one
        batch's worth of sentences decoded at a time, a finished one's place given to the next."""
        cfg = self.config.decode

        def batches():
            for index in order:
                batch = make_batch(src, index).to(self.device)
                limits = max_lengths(batch.src_lengths, cfg.max_len_ratio, cfg.max_len_offset)
                yield batch.src, batch.src_lengths, limits

        if beam == 1 and nbest == 1:
            for number, hyp in greedy_stream(self.model, batches(), cfg.batch_size, keep_attention, scored):
                yield number, [hyp]
            return
        yield from beam_stream(self.model, batches(), cfg.batch_size, beam, alpha, nbest, keep_attention, stopping)

    def translate(
        self, lines: list[str], beam: int | None = None, alpha: float | None = None, precision: str | None = None,
        stopping: str | None = None, progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """One detokenised translation per input line (greedy search computes no scores). A line
        longer than the model was trained on (train.max_train_len source pieces) is translated in
        parts cut where its sentences end, written one after the other (``nmt.segment``), unless
        decode.split_long is false."""
        found = self.hypotheses(lines, beam, alpha, precision=precision, stopping=stopping, scored=False,
                                progress=progress)
        return [self.text(hyps[0]) if hyps else "" for hyps in found]

    def text(self, hyp: Hypothesis) -> str:
        """A hypothesis detokenised. A line translated in parts is its parts' texts joined
        (``nmt.segment.join_parts``: no space after Chinese or Japanese), each part detokenised alone."""
        bounds = [0, *hyp.cuts, len(hyp.tokens)]
        return join_parts(self.tokenizer.decode_tgt([hyp.tokens[a:b] for a, b in zip(bounds, bounds[1:])]))

    @contextlib.contextmanager
    def noting(self, calls: str = "summed") -> Iterator[None]:
        """Notes on the lines decoded (lines cut, longer than the model saw) said once for the calls
        inside, not once a call: "summed" says their totals when the calls end (nmt translate's
        20,000-line chunks of one file: a 100,000-line file had its warnings five times, each
        counting a fifth); "first" says the first call's, as it comes, and no other (each call gets
        the same lines: evaluate's systems, training's validations); "none" says none."""
        if calls not in ("summed", "first", "none"):
            raise ValueError(f"calls must be summed, first or none, not {calls!r}")
        self._notes, self._noting = [], calls
        try:
            yield
            if calls == "summed" and self._notes:
                sum(self._notes, _Notes()).say(self.config.train.max_train_len, self.longest_source)
        finally:
            self._notes, self._noting = [], None

    def _note(self, notes: "_Notes") -> None:
        """``notes`` said now, or kept for ``noting``'s end, or left unsaid (see ``noting``)."""
        if self._noting is None or (self._noting == "first" and not self._notes):
            notes.say(self.config.train.max_train_len, self.longest_source)
        if self._noting is not None:
            self._notes.append(notes)

    def _parts(self, lines: list[str], split: bool) -> tuple[list[list[int] | None], list[int]]:
        """The source ids decoded for ``lines`` (``_encoded``), and how many parts each line has:
        with ``split``, a line longer than train.max_train_len source pieces cut
        (``nmt.segment.split_long``); the rest whole. What it found is noted (``_note``)."""
        encoded, longest = self._encoded(lines), self.config.train.max_train_len
        if not split:
            whole = [len(ids) for ids in encoded if ids]
            self._note(_Notes.of(whole, self.longest_source, longest, whole=True))
            return encoded, [1] * len(lines)
        parts, counts, glued_lines = [], [], 0
        for line, ids in zip(lines, encoded):
            cut, glued = (cut_long(line, self.tokenizer.src_lengths, longest) if ids and len(ids) > longest
                          else (None, False))
            # a part of only invisible characters (a zero-width space after the last mark) is
            # </s> alone, which the model would make a sentence up from: left out, as such a line is
            found = [ids] if cut is None else [part for part in self.tokenizer.encode_src(cut) if len(part) > 1]
            glued_lines += glued
            parts += found
            counts.append(len(found))
        notes = _Notes.of([len(ids) for ids in parts if ids], self.longest_source, longest)  # the parts of cut lines too
        notes.cut_lines, notes.cut_parts = sum(n > 1 for n in counts), sum(n for n in counts if n > 1)
        notes.glued = glued_lines
        self._note(notes)
        return parts, counts


@dataclasses.dataclass
class _Notes:
    """What ``Translator._parts`` found in the lines of a call, to be said (``say``), or added up
    over several calls (``+``): lines cut into parts, lines or parts longer than any source the
    model was trained on, lines decoded whole though longer than train.max_train_len, stretches
    with nowhere to cut them."""

    cut_lines: int = 0
    cut_parts: int = 0
    unseen: int = 0  # lines or parts within max_train_len but longer than the longest source seen
    unseen_most: int = 0
    long: int = 0  # lines decoded whole, longer than max_train_len …
    long_of: int = 0  # … of these lines decoded whole
    long_most: int = 0
    glued: int = 0

    @classmethod
    def of(cls, lengths: list[int], seen: int | None, most: int, whole: bool = False) -> "_Notes":
        """The notes on lines or parts of ``lengths`` source pieces, for a model trained on sources
        of up to ``seen`` pieces (None: its checkpoint does not say) and max_train_len ``most``;
        ``whole``: lines decoded whole, not cut."""
        unseen = [n for n in lengths if seen is not None and seen < n <= most]
        notes = cls(unseen=len(unseen), unseen_most=max(unseen, default=0))
        if whole:
            notes.long, notes.long_of = sum(n > most for n in lengths), len(lengths)
            notes.long_most = max(lengths, default=0)
        return notes

    def __add__(self, other: "_Notes") -> "_Notes":
        most = {"unseen_most", "long_most"}
        return _Notes(**{f.name: (max if f.name in most else sum)((getattr(self, f.name), getattr(other, f.name)))
                         for f in dataclasses.fields(self)})

    def say(self, most: int, seen: int | None) -> None:
        """The notes logged: the cuts as information, the rest as warnings."""
        if self.cut_lines:
            log.info("%d line(s) longer than the %d source pieces the model was trained on: translated in %d "
                     "parts, cut where sentences end, else between words (decode.split_long)",
                     self.cut_lines, most, self.cut_parts)
        if self.unseen:
            # a model trained on sentences of up to 7 pieces wrote 17 words for a line of 12
            # sentences, 71 pieces, where 60 were due, unsaid
            log.warning("%d line(s) or parts are longer than any source the model was trained on (%d pieces; these "
                        "up to %d): an RNN decoder tends to stop early on them, leaving words out; one sentence a "
                        "line translates best", self.unseen, seen, self.unseen_most)
        if self.long:  # their translations tend to stop early (nmt.segment)
            log.warning("%d of %d line(s) longer than the %d source pieces the model was trained on (the longest "
                        "%d), decoded whole: their translations may stop early (with decode.split_long, one "
                        "hypothesis a line and no attention, they are cut where sentences end)",
                        self.long, self.long_of, most, self.long_most)
        if self.glued:
            log.warning("%d line(s) hold a stretch longer than the %d source pieces the model was trained on "
                        "with no sentence mark or space to cut it at: cut between characters, which may split "
                        "a word", self.glued, most)


def _joined(parts: list[Hypothesis]) -> Hypothesis:
    """One line's hypothesis from its parts' best: their tokens one after the other (``cuts`` says
    where each part begins), log_prob and score summed (NaN unscored)."""
    starts = np.cumsum([len(h.tokens) for h in parts[:-1]]).tolist()
    return Hypothesis([t for h in parts for t in h.tokens], sum(h.log_prob for h in parts),
                      sum(h.score for h in parts), cuts=tuple(starts))


