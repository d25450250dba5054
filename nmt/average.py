"""``nmt average``: a checkpoint whose weights are the mean of several of one run's checkpoints.

The mean of the last few checkpoints of a run smooths out the noise of the last updates, a standard
NMT recipe (Junczys-Dowmunt et al. 2016; Vaswani et al. 2017); ``train.keep_checkpoints`` keeps them.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from nmt.checkpoint import LONGEST_SOURCE, CheckpointError, load_checkpoint, read_manifest, save_checkpoint


def average_checkpoints(folders: list[Path], out: Path) -> Path:
    """A checkpoint whose weights are the mean of ``folders``' weights, written to ``out`` without
    optimizer state: it translates, it does not resume. The checkpoints must be of one run (by its
    name) and one model (the same model settings and SentencePiece models); the new one takes the
    config and step of the latest, and its checkpoint.json lists the sources and their steps. Means
    are taken in fp64 and stored in each tensor's own dtype."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise CheckpointError(f"averaging needs two checkpoints or more, not {len(folders)} (a run keeps its "
                              f"train.keep_checkpoints latest: set that above 1 to have more)")
    seen: dict[Path, Path] = {}
    for folder in folders:
        real = folder.resolve()
        if real in seen:
            raise CheckpointError(f"{folder} is given twice (as {seen[real]}): its weights would count double")
        seen[real] = folder
    if Path(out).resolve() in seen:
        raise CheckpointError(f"{out} is one of the checkpoints to average; write the mean to a new folder")
    if os.path.lexists(out) and not _averaged_before(Path(out)):  # it would be deleted and replaced
        raise CheckpointError(f"{out} exists and is not an earlier average; write the mean to a new folder")
    _check_not_averaged(folders)
    loaded = [load_checkpoint(folder) for folder in folders]
    first = loaded[0]
    for other in loaded[1:]:
        # separately trained weights share no basin: their mean translates nothing (a run's seed may
        # change on resume, so the run is told by its name)
        if other.config.name != first.config.name:
            raise CheckpointError(f"{other.path} and {first.path} are of different runs ({other.config.name} and "
                                  f"{first.config.name}); average checkpoints of one run")
        if other.config.model != first.config.model:
            differ = [k for k, v in asdict(other.config.model).items() if getattr(first.config.model, k) != v]
            raise CheckpointError(f"{other.path} and {first.path} are different models ({', '.join(differ)} differ)")
        if (other.tokenizer.src_model, other.tokenizer.tgt_model) != (first.tokenizer.src_model,
                                                                       first.tokenizer.tgt_model):
            raise CheckpointError(f"{other.path} and {first.path} have different SentencePiece models")
    states = [c.model.state_dict() for c in loaded]
    mean = {name: torch.stack([s[name].double() for s in states]).mean(0).to(tensor.dtype)
            for name, tensor in states[0].items()}
    latest = max(loaded, key=lambda c: c.step)
    latest.model.load_state_dict(mean)  # tied weights: one tensor, given the same mean under both names
    sources = [{"path": str(c.path), "step": c.step} for c in loaded]
    longest = [c.longest_source for c in loaded if c.longest_source is not None]  # one run's: the same
    return save_checkpoint(Path(out), latest.model, latest.config, latest.tokenizer, latest.step,
                           provenance={"averaged": sources, **({LONGEST_SOURCE: max(longest)} if longest else {})})


def _check_not_averaged(folders: list[Path]) -> None:
    """A CheckpointError for an average among the checkpoints to average, read from their
    checkpoint.json before any weights are loaded: given beside one of its own steps it counts
    that step twice (the mean of steps 300 and 400, averaged again with step 400, weighs 300 at 1/4
    and 400 at 3/4), and in any case its steps weigh less than the others, while checkpoint.json
    listed it as its latest step alone."""
    for folder in folders:
        if averaged := read_manifest(folder).get("averaged"):
            steps = ", ".join(str(source["step"]) for source in averaged)
            raise CheckpointError(f"{folder} is itself an average (of steps {steps}); average the "
                                  f"checkpoints it was made from, with the others, each once")


def _averaged_before(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint ``average_checkpoints`` wrote (one it may replace)."""
    try:
        return folder.is_dir() and not folder.is_symlink() and "averaged" in read_manifest(folder)
    except CheckpointError:
        return False
