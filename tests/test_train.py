"""Training-loop helpers: thread choice."""

import os

from nmt import train


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(train, "_usable_cores", lambda: 2)
    assert train.choose_threads(0, busy=0.05) == 2
    assert train.choose_threads(0, busy=1.0) == 1
    assert train.choose_threads(0, busy=2.0) == 1  # never fewer than one
    assert train.choose_threads(3, busy=2.0) == 3  # the user's choice wins


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = train.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


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
