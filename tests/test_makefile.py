"""make as a user runs it: each stage a file target, so a changed setting reruns only what follows."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_CONFIG, TINY_TSV

VENV = Path(sys.prefix)  # make test runs pytest from make's .venv


needs_make = pytest.mark.skipif(shutil.which("make") is None or not (VENV / ".installed").is_file(),
                                reason="needs make and the tests run from make's .venv")


def _make(folder: Path, *target: str) -> str:
    """make TARGET in ``folder`` as a user runs it; -o: never reinstall the environment the tests run in."""
    result = subprocess.run(["make", "-o", f"{VENV}/.installed", f"VENV={VENV}", "NAME=tiny", *target],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_make
@pytest.mark.parametrize("layout", ["quoted path with a space", "two text files"])
def test_a_corpus_edited_in_place_is_prepared_again(tmp_path, layout):
    """The Makefile took data.source out of the YAML with sed, as a prerequisite: a quoted path
    or one with a space never matched, and data.target was never looked at, so make kept the old
    splits of an edited corpus."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    (tmp_path / "configs").mkdir()
    rows = TINY_TSV.read_text(encoding="utf-8").splitlines()
    if layout == "two text files":
        edited = tmp_path / "corpus.en"
        (tmp_path / "corpus.es").write_text("".join(r.split("\t")[1] + "\n" for r in rows), encoding="utf-8")
        edited.write_text("".join(r.split("\t")[2] + "\n" for r in rows), encoding="utf-8")
        data = ("  source: corpus.es\n  target: corpus.en\n  dev_groups: []\n  test_groups: []\n"
                "  dev_size: 40\n  test_size: 40\n")
    else:
        edited = tmp_path / "my corpus.tsv"
        shutil.copy(TINY_TSV, edited)
        data = '  source: "my corpus.tsv"\n  dev_groups: [RUT]\n  test_groups: [JON]\n'
    (tmp_path / "configs" / "tiny.yaml").write_text(f"name: tiny\ndata:\n{data}", encoding="utf-8")
    stats = "runs/tiny/data/stats.json"
    assert "pipelines/prepare_data.py" in _make(tmp_path, stats)
    assert "pipelines/prepare_data.py" not in _make(tmp_path, stats)  # nothing changed: nothing redone
    text = edited.read_text(encoding="utf-8")
    edited.write_text(text.replace("God", "Dio"), encoding="utf-8")  # the same size: the time tells
    assert "pipelines/prepare_data.py" in _make(tmp_path, stats)
    assert "Dio " in (tmp_path / "runs/tiny/data/train.en").read_text(encoding="utf-8")


@needs_make
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

    _make(tmp_path, "train")
    run = tmp_path / "runs" / "tiny"
    assert set(json.loads((run / "report.json").read_text())["systems"]) == {"greedy", "beam3"}
    trained = (run / "train_summary.json").stat().st_mtime_ns
    # a dry run says what would run: nothing on a finished run (it listed every stage, as if all
    # would be redone), the evaluation alone after the edit
    assert "pipelines/" not in _make(tmp_path, "-n", "train")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("lr: 0.005", "lr: 0.004"), encoding="utf-8")  # a dry run writes nothing:
    assert "pipelines/train_model.py" in _make(tmp_path, "-n", "train")  # undone, the edit reruns nothing
    config.write_text(text, encoding="utf-8")
    assert "pipelines/" not in _make(tmp_path, "-n", "train")
    config.write_text(text.replace("beam: 3", "beam: 2"), encoding="utf-8")
    assert [line.split()[1] for line in _make(tmp_path, "-n", "train").splitlines()
            if "pipelines/" in line and "stamp_config" not in line] == ["pipelines/evaluate.py"]
    second = _make(tmp_path, "train")
    assert "pipelines/evaluate.py" in second
    assert not any(f"pipelines/{stage}.py" in second for stage in ("prepare_data", "train_tokenizer", "train_model"))
    assert (run / "train_summary.json").stat().st_mtime_ns == trained
    report = json.loads((run / "report.json").read_text())
    assert set(report["systems"]) == {"greedy", "beam2"} and report["decode"]["beam"] == 2
    # make eval after an edit writes the decode stamp too: the next make train evaluates no second time
    config.write_text(text.replace("beam: 3", "beam: 1"), encoding="utf-8")
    assert "pipelines/evaluate.py" in _make(tmp_path, "eval")
    assert "pipelines/" not in _make(tmp_path, "-n", "train")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_torch_comes_from_the_index_given_else_from_pips_own_configuration(tmp_path):
    """On a fresh Linux machine pip takes torch's CUDA build from PyPI (several GB): TORCH_INDEX
    names PyTorch's CPU index instead. A dry run of the environment's rule, nothing installed."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path)

    def install_line(*settings: str) -> str:
        result = subprocess.run(["make", "-n", "venv", "VENV=fresh", *settings], cwd=tmp_path, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if "torch==" in line)

    cpu = "https://download.pytorch.org/whl/cpu"
    assert install_line(f"TORCH_INDEX={cpu}").endswith(f"-c constraints.txt --index-url {cpu} torch==2.13.0")
    assert install_line().endswith("-c constraints.txt torch==2.13.0")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("name, says", [
    ("doesnotexist", "configs/doesnotexist.yaml not found: make NAME=x reads configs/x.yaml (here: "),
    ("", 'NAME="": make NAME=x needs one name, without spaces (configs/x.yaml)'),
    ("two words", 'NAME="two words": make NAME=x needs one name, without spaces (configs/x.yaml)'),
    ("*", "configs/*.yaml not found: make NAME=x reads configs/x.yaml (here: "),  # not every config there
])
def test_a_name_without_a_config_is_one_line_before_anything_runs(tmp_path, name, says):
    """make's own "No rule to make target 'configs/doesnotexist.yaml', needed by …" (or some
    twenty lines of warnings for a name with a space) said nothing of NAME; make test needs none."""
    for file in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / file, tmp_path)
    (tmp_path / "configs").mkdir()
    shutil.copy(TINY_CONFIG, tmp_path / "configs")
    # as a user's shell runs make, not as a make within `make test` (which says "Entering directory")
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "-n", "train", f"NAME={name}"], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr
    if name in ("doesnotexist", "*"):
        assert result.stderr.endswith("(here: tiny).  Stop.\n")
    result = subprocess.run(["make", "-n", "test", f"NAME={name}"], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0 and "pytest" in result.stdout
