"""make as a user runs it: each stage a file target, so a changed setting reruns only what follows."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_CONFIG, TINY_TSV

VENV = Path(sys.prefix)  # make test runs pytest from make's .venv


@pytest.mark.skipif(shutil.which("make") is None or not (VENV / ".installed").is_file(),
                    reason="needs make and the tests run from make's .venv")
def test_editing_decode_settings_re_evaluates_with_them_without_retraining(tmp_path):
    """decode.beam: 3 → 2 in the config: make train evaluates again, with beam 2 (it used to take
    the beam the checkpoint was trained with), and neither data, tokenizer nor model is redone."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    config = tmp_path / "configs" / "tiny.yaml"
    config.parent.mkdir()
    config.write_text(TINY_CONFIG.read_text(encoding="utf-8").replace("tests/data/tiny.es-en.tsv", str(TINY_TSV))
                      .replace("max_steps: 60", "max_steps: 20").replace("valid_every: 30", "valid_every: 20"),
                      encoding="utf-8")

    def make() -> str:  # -o: never reinstall the environment the tests run in
        result = subprocess.run(["make", "-o", f"{VENV}/.installed", f"VENV={VENV}", "NAME=tiny", "train"],
                                cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    make()
    run = tmp_path / "runs" / "tiny"
    assert set(json.loads((run / "report.json").read_text())["systems"]) == {"greedy", "beam3"}
    trained = (run / "train_summary.json").stat().st_mtime_ns
    config.write_text(config.read_text(encoding="utf-8").replace("beam: 3", "beam: 2"), encoding="utf-8")
    second = make()
    assert "pipelines/evaluate.py" in second
    assert not any(f"pipelines/{stage}.py" in second for stage in ("prepare_data", "train_tokenizer", "train_model"))
    assert (run / "train_summary.json").stat().st_mtime_ns == trained
    report = json.loads((run / "report.json").read_text())
    assert set(report["systems"]) == {"greedy", "beam2"} and report["decode"]["beam"] == 2
