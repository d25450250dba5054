"""The training loop: bf16 against fp32; the time budget."""


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


def test_max_minutes_inf_is_no_time_limit_and_nan_is_refused(tmp_path):
    """train.max_minutes=.inf trains until train.max_steps and leaves a checkpoint that loads (its
    config records Infinity); NaN, which no elapsed time ever reached, is refused before any work."""
    import math
    import shutil

    import pytest

    from conftest import SPM200, tiny_config
    from nmt import pipeline
    from nmt.checkpoint import load_checkpoint
    from nmt.config import ConfigError, run_paths

    with pytest.raises(ConfigError, match="^train.max_minutes must be a number, not nan$"):
        tiny_config(tmp_path, "train.max_minutes=.nan")
    config = tiny_config(tmp_path, "train.max_minutes=.inf", "train.max_steps=3", "train.valid_every=1000")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    shutil.copytree(SPM200, paths.tokenizer)
    assert pipeline.train(config, paths)["stopped"] == "reached train.max_steps=3"
    assert math.isinf(load_checkpoint(paths.root / "last").config.train.max_minutes)
