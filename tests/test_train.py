"""The training loop: bf16 against fp32; stop requests."""


def test_bf16_training_tracks_fp32(tmp_path):
    """bf16 autocast changes rounding, not the optimisation: over a short run of the tiny config
    the training loss stays within 1 % of fp32's at every logged step."""
    from conftest import tiny_loss_curve

    curves = {precision: tiny_loss_curve(tmp_path / precision, f"train.precision={precision}", "train.max_steps=60")
              for precision in ("fp32", "bf16")}
    assert len(curves["fp32"]) == len(curves["bf16"]) == 3
    assert curves["fp32"][-1] < curves["fp32"][0]  # it is learning at all
    assert curves["fp32"] != curves["bf16"]  # bf16 really ran
    for a, b in zip(curves["fp32"], curves["bf16"]):
        assert abs(a - b) / a < 0.01, curves


def test_sigterm_twice_is_one_request_and_a_second_ctrl_c_stops_at_once():
    """A process group signalled under make (timeout make train, a scheduler killing the job)
    gets SIGTERM twice: the group's, and make's own passed on to its children. The second
    stopped at once, and the steps since the last checkpoint were lost (3 runs of 13 in review)."""
    import os
    import signal

    import pytest

    from nmt.interrupt import stop_requests, terminate_as_interrupt

    with terminate_as_interrupt(), stop_requests(signal.SIGINT, signal.SIGTERM) as asked:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            pytest.fail("the second SIGTERM stopped at once")
        assert asked.signum == signal.SIGTERM  # noted, the step goes on to be saved
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after it: the user wants out now
            signal.sigtimedwait([], 0.1)  # (a handler runs between two bytecodes: give it some)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_dev_loss_is_the_mean_cross_entropy_per_target_token_end_of_sentence_included(tmp_path):
    """What the log and metrics.jsonl call dev loss (and its exp, perplexity): summed -log p of
    every target piece and </s>, over their count, as a teacher-forced sentence scores them one at
    a time, whatever the batches."""
    import pytest
    import torch

    from conftest import saved_tiny_model
    from nmt.batching import Sequences
    from nmt.search import sequence_log_prob
    from nmt.train import dev_loss

    _, tokenizer, model, _ = saved_tiny_model(tmp_path)
    src = tokenizer.encode_src(["Y dijo Dios: Sea la luz.", "En el principio", "Y fué la tarde y la mañana."])
    tgt = tokenizer.encode_tgt(["And God said, Let there be light.", "In the beginning", "And the evening."])
    total = sum(-sequence_log_prob(model, torch.tensor([s]), torch.tensor([len(s)]), t, ended=True)
                for s, t in zip(src, tgt))
    loss = dev_loss(model, Sequences.from_lists(src), Sequences.from_lists(tgt), 60, "cpu")
    assert loss == pytest.approx(total / sum(len(t) + 1 for t in tgt), rel=1e-5)


def test_the_learning_rate_is_halved_after_lr_patience_validations_without_a_better_dev_bleu(tmp_path):
    """The tiny model's dev BLEU stays 0: the first validation is the best, and from then on every
    lr_patience=2 validations without gain halve the rate, down to min_lr, logged in metrics.jsonl."""
    import json

    import pytest

    from conftest import tiny_config
    from nmt import pipeline
    from nmt.config import run_paths

    config = tiny_config(tmp_path, "train.max_steps=14", "train.valid_every=2", "train.lr_patience=2",
                         "train.patience=100", "train.lr=0.004", "train.min_lr=0.0006")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    pipeline.tokenize(config, paths)
    pipeline.train(config, paths)
    records = [json.loads(line) for line in (paths.root / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "dev_bleu" in r]
    assert [v["dev_bleu"] for v in validations] == [0.0] * 7  # (else the plateau below is not one)
    # each record has the rate its steps ran at; the 3rd, 5th and 7th validations then halve it
    assert [v["lr"] for v in validations] == pytest.approx([0.004, 0.004, 0.004, 0.002, 0.002, 0.001, 0.001])
    assert json.loads((paths.root / "last" / "trainer.json").read_text())["trainer"]["lr"] == pytest.approx(0.0006)
