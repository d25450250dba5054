"""Shared fixtures: small random models and the tiny corpus, all offline."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The suite started in the background (`make test &`, nohup) inherits SIGINT ignored, so the tests
# that stop training with a Ctrl-C got none. Ctrl-C as at a terminal (children get the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
TINY_TSV = ROOT / "tests" / "data" / "tiny.es-en.tsv"
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    """datasets writes Arrow caches; keep them out of the user's home."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache"))


@pytest.fixture(autouse=True)
def _torch_threads_as_found():
    """A test that sets torch's thread count (a benchmark script's main sets 2, or 1) leaves it as
    it found it: thread choice is capped at torch's count, and later tests read it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def small_model(cell: str = "lstm", attention: str = "bahdanau", input_feeding: bool = True, vocab: int = 9,
                seed: int = 0, layers: int = 1):
    import torch

    from nmt.config import ModelConfig
    from nmt.model import build_model

    torch.manual_seed(seed)
    config = ModelConfig(
        cell=cell, emb_dim=16, enc_hidden=12, enc_layers=layers, dec_hidden=16, dec_layers=layers,
        attention=attention, attn_dim=10, input_feeding=input_feeding and attention != "none", dropout=0.0,
    )
    return build_model(config, vocab, vocab).eval()


SPM200 = ROOT / "tests" / "data" / "spm200"


def saved_tiny_model(tmp_path: Path, step: int = 7):
    """The tiny config's untrained model (seed 0) with the shipped 200-piece tokenizer, saved as a
    checkpoint in tmp_path/ckpt: (config, tokenizer, model, folder)."""
    import torch

    from nmt.checkpoint import save_checkpoint
    from nmt.config import load_config
    from nmt.model import build_model
    from nmt.tokenizer import Tokenizer

    config = load_config(TINY_CONFIG)
    tokenizer = Tokenizer.from_folder(SPM200)
    torch.manual_seed(0)
    model = build_model(config.model, tokenizer.src_vocab, tokenizer.tgt_vocab).eval()
    return config, tokenizer, model, save_checkpoint(tmp_path / "ckpt", model, config, tokenizer, step=step)


def tiny_config(runs_dir: Path, *overrides: str):
    from nmt.config import load_config

    # two threads whatever else runs: a busy machine makes auto choose one, and sums taken in another
    # order differ in the last bits (runs compared bit for bit would then differ)
    return load_config(TINY_CONFIG, [f"data.source={TINY_TSV}", "train.threads=2", *overrides])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny experiment taken through prepare → tokenize → train once per test session (~15 s)."""
    from nmt import pipeline
    from nmt.config import run_paths

    runs = tmp_path_factory.mktemp("runs")
    config = tiny_config(runs)
    paths = run_paths(config, runs)
    pipeline.prepare(config, paths)
    pipeline.tokenize(config, paths)
    pipeline.train(config, paths)
    return paths


def tiny_loss_curve(runs_dir: Path, *overrides: str) -> list[float]:
    """Train the tiny config (shipped 200-piece SentencePiece models) and return its logged
    training losses, one per LOG_EVERY steps."""
    import json
    import shutil

    from nmt import pipeline
    from nmt.config import run_paths

    config = tiny_config(runs_dir, "train.valid_every=1000", *overrides)
    paths = run_paths(config, runs_dir)
    pipeline.prepare(config, paths)
    shutil.copytree(SPM200, paths.tokenizer)
    pipeline.train(config, paths)
    lines = [json.loads(line) for line in (paths.root / "metrics.jsonl").read_text().splitlines()]
    return [line["train_loss"] for line in lines if line["kind"] == "train"]
