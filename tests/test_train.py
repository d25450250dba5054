"""The training loop: bf16 against fp32."""


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
