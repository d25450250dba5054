"""A training run's state, and its checkpoints in the run folder: one saved at every validation
(``best`` and ``last`` pointing at them), and a stopped run resumed from ``last`` at the exact step:
weights, optimizer moments, random-number state and the loop's counters (``TrainerState``). The
folder's format is ``nmt.checkpoint``'s; the optimizer's state goes into its trainer files here."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nmt.checkpoint import (
    LONGEST_SOURCE,
    TRAINER_FILES,
    CheckpointError,
    load_weights,
    point,
    read_manifest,
    run_checkpoints,
    save_checkpoint,
)
from nmt.config import Config, changed_settings, settings_json
from nmt.errors import NmtError
from nmt.model import Seq2Seq
from nmt.tokenizer import Tokenizer
from nmt.trainset import inputs_fingerprint


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_bleu: float = -1.0
    best_step: int = 0
    bad_validations: int = 0  # since the last improvement: early stopping
    lr_bad_validations: int = 0  # since the last improvement or lr change: halving
    lr: float = 0.0
    elapsed_s: float = 0.0
    stopped: str = ""
    skipped_updates: int = 0  # steps whose gradient was not finite (nothing applied)
    validated_step: int = 0  # the step of the last validation
    history: list = field(default_factory=list)
    window: dict = field(default_factory=dict)  # the training metrics since the last log line (MetricsWindow)
    # the pairs (lines of the train split) the epoch still had to see when a resume changed how its
    # batches are made (train.max_tokens, seed, max_train_len) part-way; None: the whole split
    epoch_rest: list | None = None


def unusable_run(run_dir: Path, why: str) -> NmtError:
    """The error for a run this config cannot go on with: never overwritten without a word."""
    return NmtError(f"{why}; delete {run_dir} or choose a new name to start afresh")


def save_run(run_dir: Path, model: Seq2Seq, optimizer: torch.optim.Optimizer, config: Config, tokenizer: Tokenizer,
             state: TrainerState, inputs: str, is_best: bool, longest_source: int) -> None:
    """A checkpoint of this step in ``run_dir/checkpoints``, ``last`` (and ``best`` when it is)
    pointed at it; older ones beyond train.keep_checkpoints (``best`` aside) removed. ``inputs``:
    the data and tokenizer's fingerprint, which a resumed run must match; ``longest_source``: the
    training split's longest source in pieces, which translation warns past."""
    tensors, optim_data = optimizer_to_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    folder = run_dir / "checkpoints" / f"step-{state.step:07d}"
    save_checkpoint(folder, model, config, tokenizer, state.step, tensors,
                    {"optimizer": optim_data, "trainer": state.__dict__, "inputs": inputs},
                    {LONGEST_SOURCE: longest_source})
    if is_best:
        point(run_dir / "best", folder)
    point(run_dir / "last", folder)
    # best, this one (a folder of a higher step, an average written there or an earlier run's, may
    # sort after it) and the latest others saved at a validation: a checkpoint a stop saved, between
    # two validations, goes once a later one is saved, so an interrupted and resumed run keeps the
    # checkpoints an uninterrupted one keeps (and nmt average means the same weights)
    every = run_checkpoints(run_dir)
    saved = [p for p in every if p.resolve() == folder.resolve() or _at_validation(p)]
    keep = {(run_dir / "best").resolve(), folder.resolve(),
            *(p.resolve() for p in saved[-config.train.keep_checkpoints:])}
    for old in every:
        if old.resolve() not in keep:
            shutil.rmtree(old, ignore_errors=True)


def _at_validation(folder: Path) -> bool:
    """Whether a run's checkpoint was saved at a validation (its trainer state says the step was
    validated), not by a stop between two. One whose state is not there or unreadable (an
    average, an older run's) counts as one, as every checkpoint did before."""
    try:
        state = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))["trainer"]
        return state["validated_step"] == state["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return True


def resume_run(folder: Path, model: Seq2Seq, optimizer: torch.optim.Optimizer, config: Config,
               inputs: str) -> tuple[TrainerState, str, dict]:
    """Load the checkpoint ``folder`` (a run's ``last``) into the model and optimizer and set the
    random-number state: the loop's state to go on from, the train settings changed since ("" if
    none; the run goes on under the new ones), and the train settings it was saved under. An ``NmtError`` when it was trained with
    other model settings, or on other data (``inputs``: the splits' and pieces' fingerprint; data
    and tokenizer settings changed without changing them are changes like train's)."""
    run_dir = folder.parent
    manifest = read_manifest(folder)
    current = settings_json(config)  # as stored: tuples become lists
    changed = {section: changed_settings(section, manifest["config"].get(section, {}), current[section])
               for section in ("model", "tokenizer", "data")}
    if manifest["config"].get("model") != current["model"]:  # (a key only the checkpoint has counts too)
        raise unusable_run(run_dir, f"{folder} was trained with other model settings "
                                    f"({changed['model'] or 'keys this nmt does not have'})")
    try:
        tensors, data = load_trainer_state(folder)
    except CheckpointError as exc:
        raise unusable_run(run_dir, str(exc)) from exc
    same_inputs = data.get("inputs") == inputs  # (checkpoints from before the check have none)
    # data and tokenizer settings that left the splits and pieces as they were (the corpus's path
    # written otherwise, data.dev_size with groups splitting) change nothing the weights learned
    if (inputs_edits := ", ".join(filter(None, (changed["tokenizer"], changed["data"])))) and not same_inputs:
        raise unusable_run(run_dir, f"{folder} was trained with other data or tokenizer settings ({inputs_edits})")
    if "inputs" in data and not same_inputs:
        raise unusable_run(run_dir, f"{folder} was trained on other data or another tokenizer (the run's data "
                                    f"or tokenizer folder changed since)")
    load_weights(model, folder)
    try:
        optimizer_from_tensors(optimizer, tensors, data["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        device = next(model.parameters()).device
        if device.type == "cuda" and "rng.cuda" in tensors:  # dropout masks drawn on the GPU
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        state = TrainerState(**data["trainer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # trainer.json or its tensors edited, cut
        raise unusable_run(run_dir, f"{folder}: cannot resume, trainer state unusable ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
    if state.epoch_rest is not None and not (isinstance(state.epoch_rest, list) and
                                             all(type(line) is int for line in state.epoch_rest)):
        raise unusable_run(run_dir, f"{folder}: cannot resume, trainer state unusable (epoch_rest is not a list of "
                                    f"line numbers)")  # else the epoch's rest would match no pair, or others
    state.stopped = ""  # the stop conditions are checked again with this run's settings
    if manifest["config"].get("train", {}).get("lr") != current["train"]["lr"]:  # a new train.lr: it applies now
        state.lr, state.lr_bad_validations = config.train.lr, 0  # (unchanged: the run's own, perhaps halved)
    state.lr = max(state.lr, min(config.train.min_lr, config.train.lr))  # a train.min_lr raised since
    if state.best_step and not (run_dir / "best").exists():  # saving would prune the real best, unlinked
        raise unusable_run(run_dir, f"{run_dir / 'best'} is missing (the run's best, step {state.best_step}, "
                                    f"would be removed)")
    train_edits = changed_settings("train", manifest["config"].get("train", {}), current["train"])
    same = " (the same splits and pieces)" if inputs_edits else ""
    return state, ", ".join(filter(None, (train_edits, inputs_edits))) + same, manifest["config"].get("train", {})


def load_trainer_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's tensors and the trainer's state saved with ``folder`` (a checkpoint whose
    manifest ``resume_run`` has read), for resuming; a ``CheckpointError`` when the checkpoint has
    none (an average, a model shipped without them)."""
    folder = Path(folder)
    if missing := [name for name in TRAINER_FILES if not (folder / name).is_file()]:
        raise CheckpointError(f"{folder} holds no optimizer state to resume training from (missing "
                              f"{', '.join(missing)}; it translates and evaluates without them)")
    try:
        tensors = load_file(str(folder / "trainer.safetensors"))
        state = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, SafetensorError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}: cannot resume, trainer state unreadable ({exc})") from exc
    return tensors, state


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain JSON data."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in data.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": data["param_groups"]})


def trained_on(checkpoint: Path, run_dir: Path, config: Config, splits: dict[str, bytes] | None = None) -> bool:
    """Whether ``checkpoint`` was trained on ``run_dir``'s train and dev splits and pieces as they
    are now (its trainer.json's fingerprint of them): then their data settings may read otherwise
    (the corpus's path written another way), but its test split holds no sentence it trained on.
    ``splits``: the splits' bytes by file name, for splits not written yet (``inputs_fingerprint``)."""
    try:
        recorded = json.loads((Path(checkpoint) / "trainer.json").read_text(encoding="utf-8")).get("inputs")
        return recorded is not None and recorded == inputs_fingerprint(run_dir / "data", run_dir / "tokenizer", config,
                                                                       splits)
    except (OSError, ValueError, AttributeError):  # no trainer state (an average), a split or tokenizer missing
        return False
