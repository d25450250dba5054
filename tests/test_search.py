"""Decoders: beam 1 is greedy, a wide beam finds the exhaustive optimum, batching changes nothing."""

import contextlib
import dataclasses
import itertools
import math

import pytest
import torch

import nmt.beam
from conftest import small_model
from nmt.beam import beam_search, beam_stream
from nmt.quantize import int8_products
from nmt.search import exhaustive, greedy, greedy_stream, max_lengths, sequence_log_prob

VOCAB = 7  # 4 specials + 3 words: exhaustive search over (V - 2) ** 4 = 625 sequences is cheap


def _sources(seed: int, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (n,), generator=g)
    src = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    for i, n_i in enumerate(lengths.tolist()):
        src[i, : n_i - 1] = torch.randint(4, VOCAB, (n_i - 1,), generator=g)
        src[i, n_i - 1] = 3  # </s>
    return src, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_beam_of_one_is_greedy(cell, attention):
    model = small_model(cell, attention, vocab=VOCAB, seed=3)
    src, lengths = _sources(1)
    limits = max_lengths(lengths, 2.0, 3)
    found_greedy = greedy(model, src, lengths, limits)
    found_beam = beam_search(model, src, lengths, limits, beam=1, alpha=0.6)
    assert [h.tokens for h in found_greedy] == [hyps[0].tokens for hyps in found_beam]
    for g, (b,) in zip(found_greedy, found_beam):
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-5)


def _two_batches(seed: int, n: int, first: int):
    """n random sentences of 2–8 tokens over 13 ids (padded with 0), their length limits, and the
    stream of two batches they make: the first ``first`` sentences, then the rest."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g)
    src = torch.randint(4, 13, (n, int(lengths.max())), generator=g)
    src[torch.arange(src.size(1)) >= lengths.unsqueeze(1)] = 0
    limits = max_lengths(lengths, 2.0, 3)
    cut = slice(0, first), slice(first, n)
    return src, lengths, limits, [(src[c], lengths[c], limits[c]) for c in cut]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
@pytest.mark.parametrize("bf16", [False, True])
def test_greedy_without_scores_picks_the_same_tokens(cell, attention, bf16):
    """Unscored greedy search (what ``Translator.translate`` runs) takes the best of the logits,
    not of the log-probabilities: the same tokens, in a stream of batches with places refilled
    too, and no scores (NaN) rather than wrong ones."""
    model = small_model(cell, attention, vocab=13, seed=5)
    src, lengths, limits, batches = _two_batches(seed=5, n=12, first=5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        scored = greedy(model, src, lengths, limits)
        unscored = greedy(model, src, lengths, limits, scored=False)
        streamed = dict(greedy_stream(model, batches, 3, scored=False))
    assert [h.tokens for h in unscored] == [h.tokens for h in scored]
    assert [streamed[i].tokens for i in range(12)] == [h.tokens for h in scored]
    assert all(math.isnan(h.log_prob) and math.isnan(h.score) for h in unscored)
    assert not any(math.isnan(h.log_prob) for h in scored)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_decoding_refills_places_with_every_cell(cell):
    """Under bf16 autocast a GRU or plain RNN encoder hands the decoder an fp32 start state where
    its steps' states are bf16: a sentence taking a free place is written in the batch's dtype
    (this raised in ``index_copy_`` before). Every sentence comes out, within its length limit."""
    model = small_model(cell, "luong", vocab=13, seed=5)
    _, _, limits, batches = _two_batches(seed=6, n=9, first=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        greedy_found = dict(greedy_stream(model, batches, 2))
        beam_found = dict(beam_stream(model, batches, 2, beam=2))
    assert sorted(greedy_found) == sorted(beam_found) == list(range(9))
    assert all(len(greedy_found[i].tokens) <= limits[i] and len(beam_found[i][0].tokens) <= limits[i]
               for i in range(9))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_exhaustive_optimum(alpha, seed):
    model = small_model(vocab=VOCAB, seed=seed)
    src, lengths = _sources(seed + 10, n=4)
    limit = 4
    limits = torch.full((len(src),), limit)
    wide = beam_search(model, src, lengths, limits, beam=(VOCAB - 2) ** limit, alpha=alpha)
    for i in range(len(src)):
        oracle = exhaustive(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], limit, alpha)
        assert wide[i][0].tokens == oracle.tokens
        assert wide[i][0].score == pytest.approx(oracle.score, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bound_rule_finds_what_the_beam_finds_running_to_the_limit(seed, monkeypatch):
    """"bound" stops a sentence once no live hypothesis can beat its finished ones: exact with
    respect to the beam. A hypothesis cut at its length limit scores log p / lp(limit + 1), as if
    </s> followed, and the bound divided by lp(limit): a cut one that would have won was lost (in
    about one case of eight here, and in 16 of 300 test verses of the hour's model at alpha 4)."""
    model = small_model(vocab=VOCAB, seed=0)
    step, steps = type(model).decode_step, []
    table = torch.zeros(VOCAB, VOCAB)

    def markov(prev, state, memory):  # log-probabilities the test chooses: table[previous token]
        _, state, weights = step(model, prev, state, memory)
        steps.append(1)
        return table[prev].clone(), state, weights

    collect = nmt.beam._collect_finished

    def to_the_limit(groups, ending, *args):  # no sentence stops before its limit
        return collect(groups, dataclasses.replace(ending, bound=[math.inf] * len(ending.bound)), *args)

    monkeypatch.setattr(model, "decode_step", markov)
    src, lengths, g, early = torch.tensor([[4, 5, 3]]), torch.tensor([3]), torch.Generator().manual_seed(seed), 0
    for _ in range(40):
        table[:] = torch.log_softmax(3 * torch.randn(VOCAB, VOCAB, generator=g), dim=-1)  # peaked, as when trained
        for limit, alpha, beam in itertools.product((3, 4, 5), (2.0, 4.0), (1, 2)):
            steps.clear()
            found = beam_search(model, src, lengths, torch.tensor([limit]), beam, alpha)[0][0]
            early += len(steps) < limit
            with monkeypatch.context() as patched:
                patched.setattr(nmt.beam, "_collect_finished", to_the_limit)
                assert beam_search(model, src, lengths, torch.tensor([limit]), beam, alpha)[0][0].tokens == found.tokens
    assert early > 100  # the rule stopped sentences early: the comparison is not idle


def test_beam_is_at_least_as_good_as_greedy_in_model_score():
    model = small_model(vocab=VOCAB, seed=5)
    src, lengths = _sources(7, n=8)
    limits = max_lengths(lengths, 2.0, 3)
    found_greedy = greedy(model, src, lengths, limits)
    found_beam = beam_search(model, src, lengths, limits, beam=4, alpha=0.0)
    for g, (b, *_) in zip(found_greedy, found_beam):
        assert b.log_prob >= g.log_prob - 1e-5


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("beam, stopping", [(1, "bound"), (3, "bound"), (3, "finished")])
def test_output_of_a_sentence_does_not_depend_on_its_batch(beam, stopping, attention, int8):
    model = small_model(attention=attention, vocab=VOCAB, seed=4)
    src, lengths = _sources(3, n=7)
    limits = max_lengths(lengths, 2.0, 3)
    with int8_products(model) if int8 else contextlib.nullcontext():  # int8: scales are per row, not per batch
        together = beam_search(model, src, lengths, limits, beam=beam, alpha=0.6, stopping=stopping)
        for i in range(len(src)):
            alone = beam_search(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], limits[i : i + 1], beam, 0.6,
                                stopping=stopping)
            assert alone[0][0].tokens == together[i][0].tokens
            # int8: a last-bit difference of fp32 padding arithmetic can move one value to the next
            # of 255 levels, so scores agree to 1e-3, not 1e-5
            assert alone[0][0].log_prob == pytest.approx(together[i][0].log_prob, abs=1e-3 if int8 else 1e-5)


def _stream(src, lengths, limits, sizes):
    """The rows of src cut into consecutive batches of ``sizes``, each as narrow as its longest."""
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        yield src[rows, : int(lengths[rows].max()) if size else 0], lengths[rows], limits[rows]
        start += size


def _alone(model, src, lengths, limits, i, beam, stopping):
    """Sentence i searched alone: its n-best list (nbest = beam; beam 0: greedy)."""
    one = slice(i, i + 1)
    args = (model, src[one, : lengths[i]], lengths[one], limits[one])
    if beam == 0:
        return greedy(*args, keep_attention=True)
    return beam_search(*args, beam, 0.6, nbest=beam, keep_attention=True, stopping=stopping)[0]


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("capacity", [1, 2, 3, 5])
@pytest.mark.parametrize("beam, stopping", [(0, "bound"), (3, "bound"), (3, "finished")])  # 0: greedy
def test_refilling_places_finds_what_each_sentence_finds_alone(beam, stopping, capacity, int8):
    """At most ``capacity`` sentences at a time, a finished one's place taken by the next: in place,
    into a memory widened for longer sources or for a shorter one (the batches below come in no
    order of length, one of them empty). Every sentence comes out once, as found alone, its attention over its own
    source."""
    model = small_model(attention="bahdanau", vocab=VOCAB, seed=4)
    src, lengths = _sources(12, n=9)
    limits = max_lengths(lengths, 2.0, 3)
    stream = _stream(src, lengths, limits, [4, 0, 2, 3])  # an empty batch too
    with int8_products(model) if int8 else contextlib.nullcontext():
        if beam == 0:
            found = [(number, [hyp]) for number, hyp in greedy_stream(model, stream, capacity, keep_attention=True)]
        else:
            found = list(beam_stream(model, stream, capacity, beam, 0.6, nbest=beam, keep_attention=True,
                                     stopping=stopping))
        assert sorted(number for number, _ in found) == list(range(len(src)))
        for number, hyps in found:
            alone = _alone(model, src, lengths, limits, number, beam, stopping)
            assert [h.tokens for h in hyps] == [h.tokens for h in alone]
            for hyp, want in zip(hyps, alone):
                assert hyp.log_prob == pytest.approx(want.log_prob, abs=1e-3 if int8 else 1e-5)
                ended = len(hyp.tokens) < int(limits[number])
                assert hyp.attention.shape == (len(hyp.tokens) + ended, lengths[number])
                torch.testing.assert_close(hyp.attention, want.attention, atol=1e-3 if int8 else 1e-5, rtol=0)


def _steps_alone(model, src, lengths, limits, i, beam, stopping, monkeypatch):
    """(decoder steps, n-best list) of sentence i searched alone with nbest = beam."""
    steps = []
    step = type(model).decode_step
    monkeypatch.setattr(type(model), "decode_step", lambda *a: steps.append(1) or step(*a))
    found = beam_search(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], limits[i : i + 1], beam, 0.6,
                        nbest=beam, stopping=stopping)[0]
    monkeypatch.setattr(type(model), "decode_step", step)
    return len(steps), found


@pytest.mark.parametrize("seed", [0, 1])
def test_finished_stopping_ends_a_sentence_when_beam_hypotheses_have_finished(seed, monkeypatch):
    """fairseq's rule: the search stops at the step where the beam-th hypothesis ends (or at the
    limit), never later; the exact bound runs at least as long."""
    model = small_model(vocab=VOCAB, seed=seed)
    src, lengths = _sources(seed + 20, n=6)
    limits = max_lengths(lengths, 3.0, 4)
    beam, longer = 3, 0
    for i in range(len(src)):
        steps, found = _steps_alone(model, src, lengths, limits, i, beam, "finished", monkeypatch)
        if steps < int(limits[i]):
            assert len(found) == beam
            assert max(len(h.tokens) + 1 for h in found) == steps  # the last of them ended at the last step
        bound_steps, _ = _steps_alone(model, src, lengths, limits, i, beam, "bound", monkeypatch)
        assert bound_steps >= steps
        longer += bound_steps > steps
    assert longer > 0  # the rules differ on these sentences: the test can tell them apart


def test_an_unknown_stopping_rule_is_refused():
    model = small_model(vocab=VOCAB, seed=0)
    src, lengths = _sources(0, n=2)
    with pytest.raises(ValueError, match="stopping must be bound or finished"):
        beam_search(model, src, lengths, max_lengths(lengths, 2.0, 3), beam=2, stopping="early")


def test_nbest_is_sorted_and_distinct():
    model = small_model(vocab=VOCAB, seed=6)
    src, lengths = _sources(4, n=3)
    found = beam_search(model, src, lengths, max_lengths(lengths, 2.0, 3), beam=5, alpha=0.6, nbest=3)
    for hyps in found:
        assert len(hyps) == 3
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3


def test_hypotheses_respect_the_length_limit():
    model = small_model(vocab=VOCAB, seed=8)
    src, lengths = _sources(5, n=5)
    limits = torch.full((5,), 2)
    for hyps in beam_search(model, src, lengths, limits, beam=3):
        assert len(hyps[0].tokens) <= 2
    for hyp in greedy(model, src, lengths, limits):
        assert len(hyp.tokens) <= 2


@pytest.mark.parametrize("beam", [3, 6])  # 6: more hypotheses than a row has allowed tokens (5)
def test_every_hypothesis_scores_its_own_tokens(beam):
    """Beam bookkeeping (which hypothesis each kept candidate extends, sentences sharing one
    memory row across their hypotheses) is right when every n-best log-probability equals the
    model's teacher-forced log p of that hypothesis's tokens."""
    model = small_model(vocab=VOCAB, seed=9)
    src, lengths = _sources(6, n=5)
    limits = max_lengths(lengths, 2.0, 3)
    found = beam_search(model, src, lengths, limits, beam=beam, alpha=0.6, nbest=beam)
    for i, hyps in enumerate(found):
        assert len(hyps) == beam
        for h in hyps:
            ended = len(h.tokens) < int(limits[i])
            expected = sequence_log_prob(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], h.tokens, ended)
            assert h.log_prob == pytest.approx(expected, abs=1e-4)


def _brute_force_candidates(scores, log_probs):
    n, k = scores.shape
    cand = (scores.unsqueeze(-1) + log_probs.view(n, k, -1)).view(n, -1)
    top, flat = cand.topk(k, dim=-1)
    return top, flat // log_probs.size(1), flat % log_probs.size(1)


@pytest.mark.parametrize("block", [1, 3, 8, 64])  # 8 leaves a short last block; 64 > V: one block
@pytest.mark.parametrize("k", [1, 4])
def test_block_selection_equals_a_full_ranking(block, k):
    """best_candidates / best_tokens pick exactly what ranking all k·V candidates picks."""
    from nmt.topk import best_candidates, best_tokens

    g = torch.Generator().manual_seed(block * 10 + k)
    n, vocab = 5, 37
    log_probs = torch.log_softmax(torch.randn(n * k, vocab, generator=g) * 3, dim=-1)
    log_probs[:, :2] = float("-inf")  # forbidden tokens, as <pad> and <s> in search
    scores = -torch.rand(n, k, generator=g) * 5
    scores[0, 1:] = float("-inf")  # a sentence with one live hypothesis (the first step)
    top, origin, token = best_candidates(scores, log_probs, block)
    want_top, want_origin, want_token = _brute_force_candidates(scores, log_probs)
    assert torch.equal(top, want_top)
    assert torch.equal(origin, want_origin) and torch.equal(token, want_token)
    want_value, want_best = log_probs.max(dim=-1)
    for block_rows in (0, len(log_probs) + 1):  # through the blocks, and by torch's max (few rows)
        value, best = best_tokens(log_probs, block, block_rows)
        assert torch.equal(value, want_value) and torch.equal(best, want_best)


@pytest.mark.parametrize("beam", [1, 3])
def test_translations_do_not_depend_on_the_selection_block(beam, monkeypatch):
    import nmt.topk

    model = small_model(vocab=VOCAB, seed=11)
    src, lengths = _sources(8, n=6)
    limits = max_lengths(lengths, 2.0, 3)
    whole = beam_search(model, src, lengths, limits, beam=beam, alpha=0.6, nbest=beam)
    whole_greedy = greedy(model, src, lengths, limits)
    monkeypatch.setattr(nmt.topk, "BLOCK", 2)  # VOCAB = 7: blocks of 2, the last one short
    monkeypatch.setattr(nmt.topk, "BLOCK_ROWS", 0)  # greedy through the blocks at any batch size
    blocks = beam_search(model, src, lengths, limits, beam=beam, alpha=0.6, nbest=beam)
    assert [[h.tokens for h in hyps] for hyps in blocks] == [[h.tokens for h in hyps] for hyps in whole]
    assert [h.tokens for h in greedy(model, src, lengths, limits)] == [h.tokens for h in whole_greedy]


@pytest.mark.parametrize("alpha", [-0.5, 300.0, float("inf")])
def test_a_length_penalty_out_of_range_is_refused(alpha):
    """Below 0, lp(n) would shrink as n grows, so the "bound" rule's bound would not bound anything;
    at 300 lp overflowed a float from 59 pieces on (OverflowError), and at inf every score was -0.0."""
    model = small_model(vocab=VOCAB, seed=0)
    src, lengths = _sources(0, n=2)
    with pytest.raises(ValueError, match=r"^alpha must be (between 0 and 10|a finite number), not"):
        beam_search(model, src, lengths, max_lengths(lengths, 2.0, 3), beam=3, alpha=alpha)


def test_the_length_limit_is_ratio_times_source_length_as_written_in_decimals():
    """decode.max_len_ratio 1.3 gave a 90-piece source 116 + offset pieces, not 117: the float32
    product is 116.99999."""
    from fractions import Fraction

    from nmt.search import max_lengths

    lengths = torch.arange(1, 501)
    for ratio in (0.7, 1.1, 1.2, 1.3, 1.45, 2.6, 3.3):
        expected = [math.floor(Fraction(str(ratio)) * n) + 4 for n in range(1, 501)]
        assert max_lengths(lengths, ratio, 4).tolist() == expected, ratio


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hypothesis_s_score_is_log_p_over_the_gnmt_penalty_and_ranks_the_n_best(seed, monkeypatch):
    """score = log p / ((5 + n) / 6) ** alpha, n its pieces counting </s> (Wu et al. 2016), written
    out here rather than taken from nmt.search; the n-best come in that order, which with alpha > 0
    is not log p's: the penalty chose another best hypothesis than log p would, for some sentence."""
    model = small_model(vocab=VOCAB, seed=0)
    step, table = type(model).decode_step, torch.zeros(VOCAB, VOCAB)

    def markov(prev, state, memory):  # peaked log-probabilities, as when trained: lengths vary
        _, state, weights = step(model, prev, state, memory)
        return table[prev].clone(), state, weights

    monkeypatch.setattr(model, "decode_step", markov)
    src, lengths, g, reordered = torch.tensor([[4, 5, 3]]), torch.tensor([3]), torch.Generator().manual_seed(seed), 0
    for _ in range(20):
        table[:] = torch.log_softmax(2 * torch.randn(VOCAB, VOCAB, generator=g), dim=-1)
        for alpha in (0.0, 0.6, 2.0):
            hyps = beam_search(model, src, lengths, torch.tensor([6]), 5, alpha, nbest=5)[0]
            for h in hyps:
                assert h.score == pytest.approx(h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** alpha, rel=1e-5)
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            reordered += max(h.log_prob for h in hyps) > hyps[0].log_prob
    assert reordered > 0


def test_translations_are_cut_at_ratio_times_source_pieces_plus_offset_as_the_config_says(tmp_path):
    """decode.max_len_ratio and decode.max_len_offset reach the Translator: an untrained model never
    ends a sentence, so each translation runs to its limit, int(ratio * n) + offset pieces for n
    source pieces (</s> counted), greedy and beam."""
    from conftest import saved_tiny_model
    from nmt.translate import Translator

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    lines = ["Y dijo Dios: Sea la luz.", "En el principio"]
    n = [len(ids) for ids in tokenizer.encode_src(lines)]
    for ratio, offset in ((2.0, 10), (1.5, 3)):
        decode = dataclasses.replace(config.decode, max_len_ratio=ratio, max_len_offset=offset)
        translator = Translator(model, tokenizer, dataclasses.replace(config, decode=decode))
        for beam in (1, 3):
            hyps = translator.hypotheses(lines, beam=beam)
            assert [len(h[0].tokens) for h in hyps] == [int(ratio * k) + offset for k in n], (ratio, offset, beam)


@pytest.mark.parametrize("beam", [1, 3])
def test_pad_and_bos_are_never_produced_even_where_the_model_likes_them_best(beam, monkeypatch):
    """A model that puts most of its probability on <pad> and <s> (as an untrained or odd one can)
    still gets neither in its hypotheses: the search takes the best of the other pieces."""
    from nmt.tokenizer import BOS, PAD

    model = small_model(vocab=VOCAB, seed=3)
    step = type(model).decode_step

    def fond_of_specials(prev, state, memory):
        log_probs, state, weights = step(model, prev, state, memory)
        log_probs[:, PAD], log_probs[:, BOS] = 5.0, 4.0  # above every real piece's log-probability
        return log_probs, state, weights

    monkeypatch.setattr(model, "decode_step", fond_of_specials)
    src, lengths = _sources(7, n=4)
    limits = max_lengths(lengths, 2.0, 3)
    found = [hyps[0] for hyps in beam_search(model, src, lengths, limits, beam=beam)] if beam > 1 else \
        greedy(model, src, lengths, limits)
    tokens = [t for h in found for t in h.tokens]
    assert tokens and PAD not in tokens and BOS not in tokens
