"""The stages as functions — prepare → tokenize → train → evaluate — each writing one artifact.

Both the ``nmt`` command line and the scripts in ``pipelines/`` call these, so a stage behaves
the same whichever way it is run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nmt.config import Config, DecodeConfig, RunPaths
from nmt.errors import DataError, NmtError

if TYPE_CHECKING:  # imported where used: the command line's --help stays light
    from nmt.translate import Translator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _run_held(paths: RunPaths, stage: str) -> Iterator[None]:
    """The run folder's lock, which training holds (``Trainer``), held while ``stage`` runs: it
    rewrites files training reads (``nmt prepare`` rewrote a run's splits while it trained).
    Taken first, so a busy run is refused before the stage's work, not after; none where the run
    folder is not there yet (nothing can be training in it), so a stage that fails leaves none."""
    from nmt.atomic import FolderBusy, folder_lock

    with contextlib.ExitStack() as held:
        try:
            if paths.root.is_dir():
                held.enter_context(folder_lock(paths.root))
        except FolderBusy as exc:
            raise NmtError(f"{paths.root} is in use by another process ({exc.strerror}): {stage} would rewrite "
                           f"the files it reads; wait for it or stop it") from None
        yield


def prepare(config: Config, paths: RunPaths) -> Path:
    """Load, normalise, filter and split the parallel text; returns ``data/stats.json``."""
    from nmt import data
    from nmt.config import settings_json

    with _run_held(paths, "nmt prepare"):
        prepared = data.prepare(config.data)
        texts = data.split_texts(prepared, config.data)
        if _trained(paths):  # splits a run has trained on are not replaced by others (a missing one is written)
            from nmt.trainset import input_splits  # (torch: only for a run that has trained)
            from nmt.trainstate import trained_on

            trained = {name: texts[name].encode("utf-8") for name in input_splits(config)}
            changed = [name for name, content in trained.items()
                       if (paths.data / name).is_file() and (paths.data / name).read_bytes() != content]
            # (unless they are what its last checkpoint trained on: written, they restore the run's files)
            if changed and not trained_on(paths.root / "last", paths.root, config, trained):
                raise _replacing_trained(paths, "splits", changed, data.settings_changed(
                    paths.data / "stats.json", "data", settings_json(config.data)), "the corpus changed")
        return data.write_splits(prepared, paths.data, config.data, texts)


def _trained(paths: RunPaths) -> bool:
    """Whether the run has trained: its ``last`` checkpoint is there."""
    return os.path.lexists(paths.root / "last")


def _replacing_trained(paths: RunPaths, what: str, files: list[str], settings: str, otherwise: str) -> NmtError:
    """The error of a stage that would replace ``files`` a run has trained on, said before anything
    is written: a tokenizer.vocab_size edit retrained the run's tokenizer, and only then did
    training refuse to resume, the run's files replaced. (The same settings, or others that leave
    the files as they are, go on.) ``settings``: those changed, old → new; ``otherwise``: why,
    where none did."""
    from nmt.trainstate import unusable_run

    why = f"settings changed: {settings}" if settings else otherwise
    return unusable_run(paths.root, f"{paths.root / 'last'} was trained on the {what} this would replace "
                                    f"({', '.join(files)}; {why})")


def _after(*stages: tuple[Path, str]) -> None:
    """Each stage before this one has finished: its last file (``marker``) is there. Else one line
    that names the stage to run, not the first file it would have written."""
    for marker, stage in stages:
        if not marker.is_file():
            raise NmtError(f"{marker.parent} is not ready ({marker.name} missing): run `{stage}` first with this "
                           f"config (make runs every stage in order)")


def tokenize(config: Config, paths: RunPaths) -> Path:
    """Train SentencePiece on the training split only; returns ``tokenizer/tokenizer.json``."""
    import tempfile

    from nmt.atomic import atomic_write_bytes
    from nmt.config import settings_json
    from nmt.data import check_made_with, settings_changed, split_path
    from nmt.lines import read_lines
    from nmt.tokenizer import FILES, train_tokenizer

    _after((paths.data / "stats.json", "nmt prepare"))
    check_made_with(paths.data / "stats.json", "data", settings_json(config.data), "nmt prepare")
    with _run_held(paths, "nmt tokenize"):
        src = read_lines(split_path(paths.data, "train", config.data.src_lang))
        tgt = read_lines(split_path(paths.data, "train", config.data.tgt_lang))
        if not _trained(paths):
            return train_tokenizer(src, tgt, config.tokenizer, paths.tokenizer)
        with tempfile.TemporaryDirectory(prefix=".tokenizer.", dir=paths.root) as made:  # trained on: compare first
            train_tokenizer(src, tgt, config.tokenizer, Path(made))
            trained = paths.root / "last"  # a checkpoint holds the models it was trained with
            if changed := [name for name in FILES if not _same_pieces(Path(made) / name, trained / name,
                                                                      src[:1000] + tgt[:1000])]:
                raise _replacing_trained(paths, "tokenizer", changed, settings_changed(
                    paths.tokenizer / "tokenizer.json", "tokenizer", settings_json(config.tokenizer)),
                    "the training split changed, or the tokenizer there has no record of its settings")
            paths.tokenizer.mkdir(exist_ok=True)
            for name in FILES:  # the checkpoint's own bytes (training's fingerprint), not the new model's
                atomic_write_bytes(paths.tokenizer / name, (trained / name).read_bytes())
            os.replace(Path(made) / "tokenizer.json", paths.tokenizer / "tokenizer.json")  # last: the marker
        return paths.tokenizer / "tokenizer.json"


def _same_pieces(new: Path, old: Path, lines: list[str]) -> bool:
    """Whether SentencePiece model ``new`` cuts text as ``old`` does: the same pieces, scores and
    cuts of ``lines``. Not the bytes: a model records the options it was trained with, which
    another nmt or SentencePiece version passes otherwise for the same pieces."""
    import sentencepiece as spm

    if not old.is_file():
        return False
    if new.read_bytes() == old.read_bytes():
        return True
    a, b = (spm.SentencePieceProcessor(model_file=str(path)) for path in (new, old))
    table = lambda proc: [(proc.id_to_piece(i), proc.get_score(i)) for i in range(proc.get_piece_size())]  # noqa: E731
    probe = [*lines, "，！？ m² ｶﾞ Ⅻ ﬁ"]  # NFKC would fold these, identity keeps them
    return table(a) == table(b) and a.encode(probe) == b.encode(probe)


def train(config: Config, paths: RunPaths, device: str | None = None, on_progress: Callable | None = None) -> dict:
    """Train (resuming from ``last`` if present); returns the summary also written to disk."""
    from nmt.train import Trainer

    _after((paths.data / "stats.json", "nmt prepare"), (paths.tokenizer / "tokenizer.json", "nmt tokenize"))
    trainer = Trainer(config, paths.data, paths.tokenizer, paths.root, device)
    return trainer.train(on_progress)


def report_folder(checkpoint: Path, run_dir: Path, src_path: Path | None, beam: int | None = None,
                  alpha: float | None = None, ref_path: Path | None = None, as_make: bool = True) -> Path:
    """Where ``evaluate`` writes by default: the run folder for the run's best checkpoint on its
    test split and references with its own beam and alpha (what make eval writes, and make then
    takes as done), unless ``as_make`` is False (other settings than make's, not named here: a
    report's knobs); anything else a folder of its own,
    ``<run>/eval/<checkpoint>[-<source>][-ref-<reference>][-beamK][-alphaA]`` (``<run>``: a
    checkpoint outside a run, its parent folder; ``-ref-``: references of another name than the
    source's, as dev.es with other.en), so a report and its translations are not written over
    by another's without a word (``<checkpoint>``: the folder's name, that of the step ``last``
    points to for it)."""
    folder = Path(checkpoint).resolve()  # best and last: the step they point to
    asked = asked_suffix(src_path, ref_path, beam, alpha)
    if as_make and not asked and folder == (run_dir / "best").resolve():
        return run_dir
    return run_dir / "eval" / (folder.name + asked)


def earlier_report(folder: Path) -> dict:
    """The report.json a report folder holds from an earlier evaluation or report, {} where there is
    none (or it is not a JSON object)."""
    try:
        before = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return before if isinstance(before, dict) else {}


def check_folder_inputs(folder: Path, before: dict, inputs: dict[str, Path]) -> None:
    """A DataError where a default report folder named by the files given (``report_folder``:
    ``--src`` or ``--ref``) holds the report (``before``: ``earlier_report``) of another source or
    reference file of the same name: the folder is named by the file's stem, so ``--src
    /tmp/a/x.es``, then ``--src /tmp/b/x.es``, wrote the second report over the first. An earlier
    report whose file is not there now (moved, or named relative to another folder), or whose file
    holds the same bytes (its recorded sha256), cannot be told apart from this one, and is written
    over as before."""
    from nmt.provenance import file_sha256
    from nmt.terminal import same_file

    hashes = before.get("sha256") if isinstance(before.get("sha256"), dict) else {}
    for role, given in inputs.items():
        was = before.get(role)
        if not isinstance(was, str) or not Path(was).is_file() or same_file(Path(was), given):
            continue
        if hashes.get(role) is None or hashes.get(role) != file_sha256(given):
            raise DataError(f"{folder} holds the report of the {role} file {was}, not of {given}; "
                            f"give --out to keep both")


def asked_suffix(src_path: Path | None, ref_path: Path | None, beam: int | None, alpha: float | None) -> str:
    """``[-<source>][-ref-<reference>][-beamK][-alphaA]``: what an evaluation was asked for beyond
    the checkpoint's own test split and decoding settings, as ``report_folder`` names it."""
    src, ref = (Path(path).stem if path is not None else None for path in (src_path, ref_path))
    return "".join([f"-{src}" if src else "", f"-ref-{ref}" if ref and ref != src else "",
                    f"-beam{beam}" if beam is not None else "", f"-alpha{alpha:g}" if alpha is not None else ""])


def evaluate(
    checkpoint: Path,
    src_path: Path | None = None,
    ref_path: Path | None = None,
    out_dir: Path | None = None,
    beam: int | None = None,
    device: str | None = None,
    samples: int = 8,
    decode: DecodeConfig | None = None,
    alpha: float | None = None,
) -> dict:
    """Decode ``src_path`` greedily and with beam search (greedy only at beam 1), score each against
    ``ref_path`` with sacreBLEU, and write the hypotheses, ``report.json`` and ``report.md`` into
    ``out_dir``.

    Defaults: the test split of the run that holds ``checkpoint`` (runs/<name>/best or
    runs/<name>/checkpoints/step-N → runs/<name>), ``report_folder`` for the output, and the
    decoding settings the checkpoint was trained with (``decode``: the experiment's current ones
    instead; ``beam`` and ``alpha`` override either's)."""
    from nmt.analysis import find_run_dir
    from nmt.atomic import atomic_write_text, check_destination
    from nmt.checkpoint import step_info
    from nmt.data import read_test_pair
    from nmt.provenance import file_sha256, versions
    from nmt.report import render_markdown
    from nmt.trainstate import trained_on
    from nmt.translate import Translator

    run_dir = find_run_dir(checkpoint) or Path(checkpoint).parent  # runs/x/checkpoints/step-N → runs/x too
    given_out, named_by_files = out_dir is not None, src_path is not None or ref_path is not None
    out_dir = Path(out_dir) if out_dir else report_folder(checkpoint, run_dir, src_path, beam, alpha, ref_path)
    check_destination(out_dir, folder=True)  # before decoding, not after
    translator = Translator.from_checkpoint(checkpoint, device, decode)
    src_path, ref_path, sources, refs = read_test_pair(
        run_dir / "data", translator.config.data, src_path, ref_path,
        lambda: trained_on(checkpoint, run_dir, translator.config))
    beam = beam or translator.config.decode.beam
    translator.check_beam(beam)  # before the greedy pass writes its translations
    inputs, before = {"source": src_path, "reference": ref_path}, earlier_report(out_dir)
    if not given_out and named_by_files:
        check_folder_inputs(out_dir, before, inputs)
    alpha = translator.config.decode.alpha if alpha is None else alpha
    outputs = _outputs(out_dir / src_path.stem, translator.config.data.tgt_lang, beam)
    _check_not_inputs([path for _, path in outputs.values()] + [out_dir / "report.json", out_dir / "report.md"],
                      inputs)
    stale = _stale_outputs(before, out_dir, src_path.stem, translator.config.data.tgt_lang, set(outputs), inputs)
    systems = _systems(translator, sources, refs, alpha, outputs)
    report = {
        "checkpoint": str(checkpoint),
        **step_info(checkpoint),
        "source": str(src_path),
        "reference": str(ref_path),
        "sha256": {"source": file_sha256(src_path), "reference": file_sha256(ref_path)},
        "sentences": len(sources),
        "decode": {**asdict(translator.config.decode), "beam": beam, "alpha": alpha},  # as used: --beam, --alpha
        "systems": {name: {k: v for k, v in s.items() if k != "hypotheses"} for name, s in systems.items()},
        "samples": _samples(sources, refs, systems, samples),
        "versions": versions(),
    }
    summary_path = run_dir / "train_summary.json"
    if summary_path.is_file():
        report["training"] = json.loads(summary_path.read_text(encoding="utf-8"))
    atomic_write_text(Path(out_dir) / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(Path(out_dir) / "report.md", render_markdown(report))
    for path in stale:
        path.unlink(missing_ok=True)
    return report


def _stale_outputs(before: dict, out_dir: Path, stem: str, lang: str, systems: set[str],
                   inputs: dict[str, Path]) -> list[Path]:
    """The translations the earlier report in ``out_dir`` (``before``) names, of a source called
    ``stem``, that this evaluation will not write again: ``decode.beam=1`` after a beam-3
    evaluation left test.beam3.en beside a report that no longer scored it, an output that read as
    current. Not the files evaluate reads, and nothing of another source's report."""
    from nmt.terminal import same_file

    try:
        if Path(before["source"]).stem != stem:
            return []
        names = [name for name in before["systems"] if re.fullmatch(r"greedy|beam[0-9]+", name)]
    except (KeyError, TypeError):
        return []
    paths = [out_dir / f"{stem}.{name}.{lang}" for name in names if name not in systems]
    return [path for path in paths if not any(same_file(given, path) for given in inputs.values())]


def _outputs(stem: Path, lang: str, beam: int) -> dict[str, tuple[int, Path]]:
    """Each system evaluate runs, greedy and beam-``beam`` (greedy alone at beam 1), with its beam
    and the file its translations go to, ``<stem>.<system>.<lang>``."""
    systems = {"greedy": 1} | ({f"beam{beam}": beam} if beam > 1 else {})
    return {name: (k, stem.parent / f"{stem.name}.{name}.{lang}") for name, k in systems.items()}


def _check_not_inputs(outputs: list[Path], inputs: dict[str, Path]) -> None:
    """A DataError where a file evaluate writes is one it reads (--out the folder of a reference
    called test.greedy.en): the reference was replaced by the greedy translation, and the next
    evaluation scored 100."""
    from nmt.terminal import same_file

    for path in outputs:
        for role, given in inputs.items():
            if same_file(given, path):
                raise DataError(f"{path} would be written over the {role} file {given}; "
                                f"give another --out, or rename the {role} file")


def _systems(translator: Translator, sources: list[str], refs: list[str], alpha: float,
             outputs: dict[str, tuple[int, Path]]) -> dict[str, dict]:
    """The translations of ``sources`` by each system of ``outputs`` (``_outputs``), each written
    to its file and scored against ``refs``, with its speed."""
    import time

    from nmt.atomic import atomic_write_text
    from nmt.metrics import corpus_scores

    systems, lang = {}, translator.config.data.tgt_lang
    with translator.noting("first"):  # the same lines for each system: their notes (lines cut …) once
        for name, (k, path) in outputs.items():
            t0 = time.perf_counter()
            hyps = translator.translate(sources, beam=k, alpha=alpha)
            seconds = time.perf_counter() - t0
            atomic_write_text(path, "".join(h + "\n" for h in hyps))
            systems[name] = {
                "beam": k,
                "alpha": alpha if k > 1 else 0.0,
                "scores": corpus_scores(hyps, refs, lang=lang),
                "seconds": round(seconds, 2),
                "sentences_per_s": round(len(sources) / max(seconds, 1e-9), 2),
                "hypotheses": hyps,
            }
    return systems


def _samples(sources: list[str], refs: list[str], systems: dict, count: int) -> list[dict]:
    """Evenly spaced test sentences, so the samples are not all from the first chapter."""
    if not sources or count <= 0:
        return []
    step = max(1, len(sources) // count)
    picks = list(range(0, len(sources), step))[:count]
    return [
        {"index": i, "source": sources[i], "reference": refs[i], **{n: s["hypotheses"][i] for n, s in systems.items()}}
        for i in picks
    ]
