"""metrics.jsonl, the training log: one JSON object per log interval (running means since the
last line) or validation, each with its step, so a resumed run can drop what it will log again."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from nmt.atomic import atomic_write_text

log = logging.getLogger(__name__)


class _Position(Protocol):  # what a log line reports of the trainer's state
    step: int
    epoch: int
    lr: float
    elapsed_s: float


class MetricsWindow:
    """Running means of the training metrics between two log lines."""

    def __init__(self, saved: dict | None = None):
        """``saved``: a window's ``state()``, kept in a checkpoint written between two lines."""
        self.reset()
        self.rate = 0.0
        if saved:
            self.loss, self.tokens, self.seconds = saved["loss"], saved["tokens"], saved["seconds"]
            self.clipped, self.steps, self.norms = saved["clipped"], saved["steps"], list(saved["norms"])

    def state(self) -> dict:
        return {"loss": self.loss, "tokens": self.tokens, "seconds": self.seconds, "clipped": self.clipped,
                "steps": self.steps, "norms": list(self.norms)}

    def reset(self):
        self.loss = self.tokens = self.seconds = self.clipped = self.steps = 0.0
        self.norms: list[float] = []

    def add(self, loss: float, tokens: int, norm: float, seconds: float, clipped: bool):
        self.loss += loss * tokens
        self.tokens += tokens
        self.seconds += seconds
        self.clipped += clipped
        self.steps += 1
        self.norms.append(norm)
        self.rate = self.tokens / max(self.seconds, 1e-9)

    def flush(self, at: _Position) -> dict:
        """The log line of the steps since the last one; starts a new window."""
        line = {
            "kind": "train",
            "step": at.step,
            "epoch": at.epoch,
            "train_loss": self.loss / max(1.0, self.tokens),
            "lr": at.lr,
            "grad_norm": float(np.mean(self.norms)) if self.norms else 0.0,
            "grad_norm_max": max(self.norms, default=0.0),
            "clipped_steps": int(self.clipped),
            "tokens_per_s": self.rate,
            "elapsed_s": at.elapsed_s,
        }
        self.reset()
        return line


def append_record(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_after(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be logged again), and any
    line that is not a record: half a line left by a full disk or a crash (NUL bytes after a power
    cut) had made the run impossible to resume."""
    if not path.exists():
        return
    kept, damaged = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            damaged += 1
        elif record.get("step", 0) <= step:
            kept.append(line)
    if damaged:
        log.warning("%s: %d damaged line%s dropped", path, damaged, "s" * (damaged > 1))
    atomic_write_text(path, "".join(line + "\n" for line in kept))
