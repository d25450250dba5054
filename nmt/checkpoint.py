"""Self-contained, safe checkpoints.

A checkpoint is a folder:

    checkpoint.json      format version, the nmt version that wrote it, step, the resolved config, file list
    model.safetensors    weights (tied weights stored once)
    src.model tgt.model  the SentencePiece models
    trainer.safetensors  optimizer moments and RNG state (for resuming)
    trainer.json         step, epoch, scheduler and early-stopping state (for resuming)

Only resuming training reads the trainer's two files, two thirds of a checkpoint's size: one without
them (an average, a model shipped to translate) translates, evaluates and averages like any other.

Nothing is ever unpickled: tensors come from safetensors, everything else from JSON, so loading
a checkpoint cannot execute code. A folder is written under a temporary name and renamed into
place; ``best`` and ``last`` are symbolic links swapped atomically, so a reader never sees a half
checkpoint, and an interrupted save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file

from nmt import __version__
from nmt.atomic import atomic_write_text, check_destination, renamed, usual_permissions
from nmt.config import DECODING, SECTIONS, Config, ConfigError, from_dict
from nmt.errors import NmtError, path_error
from nmt.model import Seq2Seq, build_model
from nmt.provenance import source_commit
from nmt.tokenizer import Tokenizer, TokenizerError

FORMAT_VERSION = 1
LONGEST_SOURCE = "longest_source"  # checkpoint.json: the longest training source, in pieces (</s> included)
MANIFEST = "checkpoint.json"
REQUIRED = (MANIFEST, "model.safetensors", "src.model", "tgt.model")  # what decoding reads
TRAINER_FILES = ("trainer.safetensors", "trainer.json")  # what resuming reads besides


class CheckpointError(NmtError):
    """A checkpoint folder that is missing, incomplete or from an incompatible version."""


@dataclass
class Loaded:
    config: Config
    model: Seq2Seq
    tokenizer: Tokenizer
    step: int
    path: Path
    longest_source: int | None = None  # source pieces (</s> included) of the longest training pair, where recorded


def save_checkpoint(
    folder: Path,
    model: Seq2Seq,
    config: Config,
    tokenizer: Tokenizer,
    step: int,
    trainer_tensors: dict[str, torch.Tensor] | None = None,
    trainer_state: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` (replaced whole if it exists) via a temporary name.
    ``provenance`` goes into checkpoint.json as it is (an averaged checkpoint's sources)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    check_destination(folder, folder=True)  # an error naming the path, not the temporary
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:  # a read-only folder
        raise renamed(exc, folder) from None
    try:
        _save_tensors(_model_tensors(model), tmp, folder, "model.safetensors")
        tokenizer.save(tmp)
        files = list(REQUIRED)
        if trainer_tensors is not None:
            _save_tensors({k: v.contiguous().cpu() for k, v in trainer_tensors.items()}, tmp, folder,
                          "trainer.safetensors")
            atomic_write_text(tmp / "trainer.json", json.dumps(trainer_state or {}, indent=2))
            files += list(TRAINER_FILES)
        commit = source_commit()  # the code that made it
        manifest = {"format_version": FORMAT_VERSION, "nmt_version": __version__,
                    **({"nmt_commit": commit} if commit else {}), "step": step,
                    "files": files, "config": config.to_dict(), **(provenance or {})}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _save_tensors(tensors: dict[str, torch.Tensor], tmp: Path, folder: Path, name: str) -> None:
    """``tensors`` written to ``tmp/name``, with the permissions the umask gives. safetensors raises
    its own error for a failed write (a full disk: "I/O error: No space left on device (os error
    28)"), which no handler took for the OSError it is: training ended in a 60-line traceback. It
    is raised as that OSError here, named by the file asked for, not the temporary."""
    try:
        save_file(tensors, str(tmp / name))
    except SafetensorError as exc:
        if (code := re.search(r"\(os error (\d+)\)", str(exc))) is None:
            raise CheckpointError(f"{folder / name}: cannot be written ({(str(exc).splitlines() or ['?'])[0]})") from None
        errno = int(code.group(1))
        raise OSError(errno, os.strerror(errno), str(folder / name)) from None
    usual_permissions(tmp / name)


def _model_tensors(model: Seq2Seq) -> dict[str, torch.Tensor]:
    """The model's tensors as safetensors stores them: CPU copies, a tensor held under two names
    (tied target embeddings and output weights) once, under its first name (``load_model`` restores
    the tie), as safetensors' ``save_model`` does. Copies, because on a GPU cuDNN keeps an LSTM's
    weights as views of one flat buffer, which ``save_model`` refuses to write."""
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.device, tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
        if key not in seen:
            seen.add(key)
            tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return tensors


def point(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, atomically (the run folder can move)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.lnk")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _not_a_checkpoint(folder: Path) -> str:
    """What a folder without a manifest is: a run, a run's checkpoints, half a checkpoint or none."""
    if links := [str(folder / name) for name in ("best", "last") if (folder / name).exists()]:
        return f"{folder} is a run folder, not a checkpoint: give {' (or '.join(links)}{')' * (len(links) - 1)}"
    if steps := run_checkpoints(folder):  # in step order: the last is the latest
        return f"{folder} holds checkpoints and is not one: give one of them, as {steps[-1]}"
    if any(folder.glob("*.safetensors")):
        return f"{folder}: incomplete checkpoint (no {MANIFEST})"
    return f"{folder} is not a checkpoint (no {MANIFEST})"


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder``'s checkpoint.json, checked: this nmt's format, the fields nmt reads of the types it
    reads them as (``_manifest_problem``; the config's keys are ``from_dict``'s to check), and the
    files it lists there. A ``CheckpointError`` naming the folder and what is wrong otherwise."""
    folder = Path(folder)
    if error := path_error(folder, "checkpoint folder", folder=True):
        raise CheckpointError(error)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(_not_a_checkpoint(folder))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: not valid JSON") from exc
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{folder}: unusable checkpoint ({MANIFEST} holds {type(manifest).__name__}, "
                              f"not an object)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        writer = manifest.get("nmt_version")
        written = f" (written by nmt {writer})" if isinstance(writer, str) else ""
        raise CheckpointError(f"{folder}: checkpoint format version {version!r}{written}; "
                              f"this nmt ({__version__}) reads version {FORMAT_VERSION}")
    if problem := _manifest_problem(manifest):
        raise CheckpointError(f"{folder}: unusable checkpoint ({MANIFEST}: {problem})")
    # The trainer's files are load_trainer_state's to ask for: two thirds of a checkpoint's size
    # (optimizer moments), which a model shipped to translate leaves out
    missing = [name for name in manifest.get("files", REQUIRED)
               if name not in TRAINER_FILES and not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: incomplete checkpoint (missing {', '.join(missing)})")
    return manifest


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# (key, required, check, what it must be): the fields nmt reads; the config's keys are from_dict's
_MANIFEST_FIELDS = (
    ("step", True, _is_count, "a whole number"),
    ("files", False, lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
     "a list of file names"),
    ("config", True, lambda v: isinstance(v, dict), "an object (the settings)"),
    ("averaged", False, lambda v: isinstance(v, list) and all(isinstance(source, dict) and
                                                               _is_count(source.get("step")) for source in v),
     'a list of objects with a whole-number "step"'),
)


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a checkpoint.json that nmt reads (a hand edit, a truncated
    copy), in a few words; None when nothing is. Checked once, here, so that every reader (loading,
    reports, ``nmt average --last``, resuming) may take them as they are."""
    for key, required, fits, what in _MANIFEST_FIELDS:
        if key not in manifest:
            if required:
                return f'"{key}" is missing'
        elif not fits(manifest[key]):
            return f'"{key}" must be {what}, not {_brief.repr(manifest[key])}'
    config = manifest["config"]
    for section in SECTIONS:  # a resumed run compares them as they are
        if not isinstance(config.get(section, {}), dict):
            return f'"config" section "{section}" must be an object, not {_brief.repr(config[section])}'
    return None


_brief = reprlib.Repr()  # a wrong value as the error shows it: one level deep, long strings cut
_brief.maxlevel = 1


def load_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> Loaded:
    """Rebuild the model from the checkpoint alone: config, tokenizer and weights.

    ``best`` and ``last`` are links that a running training moves on; they are followed once, so
    every file comes from one checkpoint (a link moved halfway would otherwise mix two)."""
    folder = Path(folder)
    real = folder.resolve() if folder.is_symlink() else folder
    manifest = read_manifest(real)
    try:
        config = from_dict(manifest["config"], checked=DECODING)
        tokenizer = Tokenizer.from_folder(real)
    except (ConfigError, TokenizerError, KeyError) as exc:
        raise CheckpointError(f"{folder}: unusable checkpoint ({exc})") from exc
    with torch.device("meta"):  # shapes only, before anything is allocated (load_weights checks again)
        _check_fit(build_model(config.model, tokenizer.src_vocab, tokenizer.tgt_vocab), real)
    model = build_model(config.model, tokenizer.src_vocab, tokenizer.tgt_vocab)
    load_weights(model, real)
    model.to(device).eval()
    longest = manifest.get(LONGEST_SOURCE)
    return Loaded(config, model, tokenizer, manifest["step"], folder,
                  longest if isinstance(longest, int) and not isinstance(longest, bool) and longest > 0 else None)


_FLOATS = ("F64", "F32", "F16", "BF16")  # safetensors' names of the dtypes weights may be stored in


# the tensors with a row per piece of the vocabulary: a tokenizer of another size than the weights'
_PIECES = {"encoder.embed.weight": "source", "decoder.embed.weight": "target", "generator.weight": "target",
           "generator.bias": "target"}


def _check_fit(model: Seq2Seq, folder: Path) -> None:
    """The stored tensors' shapes and kinds (floating point) against ``model``'s. A model on the
    meta device will do, so that a config that does not fit its weights (edited by hand, copied
    from another run) is refused before the real model is built: one asking for more memory than
    there is fails in the allocator, with a traceback. (Tensors missing or left over are
    ``load_weights``' to report.)"""
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            stored = {name: (tuple(weights.get_slice(name).get_shape()), weights.get_slice(name).get_dtype())
                      for name in weights.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder}: model weights unreadable ({str(exc).splitlines()[0]})") from exc
    for name, tensor in model.state_dict().items():
        if name not in stored:
            continue
        shape, dtype = stored[name]
        side = _PIECES.get(name)
        if side and shape != tuple(tensor.shape) and shape[1:] == tuple(tensor.shape)[1:]:  # a swapped tokenizer
            raise CheckpointError(f"{folder}: model weights do not fit the tokenizer ({name} has {shape[0]:,} rows "
                                  f"in model.safetensors, for {tensor.size(0):,} {side} pieces in the tokenizer)")
        if shape != tuple(tensor.shape):
            raise CheckpointError(f"{folder}: model weights do not fit the config ({name} is {list(shape)} "
                                  f"in model.safetensors, {list(tensor.shape)} by the config)")
        if tensor.is_floating_point() and dtype not in _FLOATS:  # loading would convert them without a word
            raise CheckpointError(f"{folder}: model weights do not fit the config ({name} is {dtype} in "
                                  f"model.safetensors, not floating point)")


def load_weights(model: Seq2Seq, folder: Path) -> None:
    """Fill ``model`` from ``folder/model.safetensors``: every tensor must fit, none may be missing
    or left over (a config edited to another attention, a weights file from another model)."""
    _check_fit(model, Path(folder))  # load_state_dict's own message is a paragraph
    try:
        missing, unexpected = load_model(model, str(Path(folder) / "model.safetensors"), strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{folder}: model weights do not fit the config ({str(exc).splitlines()[0]})") from exc
    if missing or unexpected:
        lacks = f"lacks {_some(missing)} the config asks for" if missing else ""
        holds = f"holds {_some(unexpected)} the config does not ask for" if unexpected else ""
        raise CheckpointError(f"{folder}: model weights do not fit the config (model.safetensors "
                              f"{' and '.join(filter(None, (lacks, holds)))})")


def _some(names: list[str], shown: int = 3) -> str:
    """"2 tensors (a, b)" or "5 tensors (a, b, c and 2 more)": a list kept to one line."""
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} tensor{'s' if len(names) > 1 else ''} ({', '.join(names[:shown])}{more})"


def step_info(folder: Path) -> dict[str, Any]:
    """What a report shows of a checkpoint's training: its step, and for an averaged checkpoint
    the steps it is the mean of (``averaged_steps``)."""
    manifest = read_manifest(Path(folder))
    info: dict[str, Any] = {"step": manifest["step"]}
    if averaged := manifest.get("averaged"):
        info["averaged_steps"] = [source["step"] for source in averaged]
    return info


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a run folder (or its checkpoints/ folder) holds, in step order."""
    folder = Path(folder)
    found = (folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder).glob("step-*")
    return sorted((p for p in found if p.name.removeprefix("step-").isdigit()),
                  key=lambda p: int(p.name.removeprefix("step-")))


def latest_checkpoints(folder: Path) -> list[Path]:
    """The latest checkpoints a run folder holds, in step order: its train.keep_checkpoints latest
    (as its newest checkpoint's config sets it), without an older ``best`` kept beside them."""
    saved = run_checkpoints(folder)
    if not saved:
        return []
    try:
        keep = from_dict(read_manifest(saved[-1])["config"], checked=()).train.keep_checkpoints
    except ConfigError as exc:
        raise CheckpointError(f"{saved[-1]}: unusable checkpoint (checkpoint.json: {exc})") from exc
    return saved[-max(keep, 1):]
