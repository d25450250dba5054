"""``nmt report``: decode one test set with one or more checkpoints (greedy and beam each), then
score, test, probe and plot, and write into one folder

    report.html     self-contained: inline CSS, figures embedded as base64 PNG, no links out
    report.md       the same content; figures in figures/*.png
    report.json     every number, for machines
    hyps/*.<lang>   each system's output, so any score can be checked with the sacrebleu CLI
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nmt import analysis, diagnostics, plots
from nmt.atomic import atomic_write_bytes, atomic_write_text, check_destination
from nmt.checkpoint import step_info
from nmt.config import DecodeConfig
from nmt.data import check_test_split, read_test_pair
from nmt.diagnostics import Decoded
from nmt.errors import NmtError
from nmt.metrics import cli_options
from nmt.provenance import file_sha256, versions
from nmt.trainstate import trained_on
from nmt.translate import Translator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    beam: int | None = None  # the beam system's size; None = each checkpoint's decode.beam
    alpha: float | None = None  # the length penalty's exponent; None = each checkpoint's decode.alpha
    sweep_beams: tuple[int, ...] = (1, 2, 5, 10)
    sweep_sentences: int = 500  # the sweep decodes this many lines per extra beam size
    search_sentences: int = 100  # short lines checked for search errors
    search_max_pieces: int = 20  # "short": at most this many source pieces, </s> included
    wide_beam: int = 50  # the beam a checked output must not lose to
    heatmaps: int = 4
    examples: int = 5
    bootstrap: int = analysis.BOOTSTRAP


@dataclass
class Candidate:
    """One checkpoint and what it decoded on the whole test set, by beam size."""

    name: str
    path: Path
    translator: Translator
    beam: int
    alpha: float
    decoded: dict[int, Decoded] = field(default_factory=dict)

    def system_names(self, several: bool) -> dict[int, str]:
        prefix = f"{self.name} " if several else ""
        names = {1: f"{prefix}greedy"}
        if self.beam > 1:
            names[self.beam] = f"{prefix}beam{self.beam}"
        return names

    @property
    def main_beam(self) -> int:
        return max(self.system_names(False))


def _names(checkpoints: list[Path], names: list[str] | None) -> list[str]:
    """Given names, else the run folder (runs/x/best → x), plus the folder for other checkpoints.
    Names alike, or alike as file names (x/y and x_y: the hypotheses of one would overwrite the
    other's), are numbered."""
    if names and len(names) != len(checkpoints):
        raise NmtError(f"{len(names)} --name for {len(checkpoints)} --checkpoint: give one per checkpoint or none")
    found = list(names) if names else [_default_name(Path(p)) for p in checkpoints]
    if len({_slug(n) for n in found}) < len(found):
        found = [f"{n} ({i + 1})" for i, n in enumerate(found)]
    return found


def _default_name(path: Path) -> str:
    """runs/x/best → x; another checkpoint folder by its own name and its parent's (a folder given
    by its name alone too: not symlinks followed, which would name best's step folder)."""
    path = Path(os.path.abspath(path))
    if path.name in ("best", "last"):
        return path.parent.name
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _load(
    checkpoints: list[Path], names: list[str] | None, options: ReportOptions, device: str | None,
    decode: DecodeConfig | None,
) -> list[Candidate]:
    out = []
    for name, path in zip(_names(checkpoints, names), checkpoints):
        translator = Translator.from_checkpoint(path, device, decode)
        cfg = translator.config.decode
        alpha = cfg.alpha if options.alpha is None else options.alpha
        out.append(Candidate(name, Path(path), translator, options.beam or cfg.beam, alpha))
    return out


def _test_set(cands: list[Candidate], src: Path | None, ref: Path | None) -> tuple[Path, Path, list[str], list[str]]:
    """The given test files, else the first checkpoint's run's test split: one every checkpoint was
    trained beside, on its train split as it is or under its data settings (another run's seed can
    have trained on its sentences)."""
    run_dir = analysis.find_run_dir(cands[0].path) or cands[0].path.parent
    first = cands[0].translator.config
    if src is not None and ref is not None:
        return read_test_pair(run_dir / "data", first.data, src, ref)
    for cand in cands[1:]:
        check_test_split(run_dir / "data", cand.translator.config.data, str(cand.path),
                         functools.partial(trained_on, cand.path, run_dir, cand.translator.config))
    return read_test_pair(run_dir / "data", first.data, src, ref,
                          functools.partial(trained_on, cands[0].path, run_dir, first))


def _decode_systems(cands: list[Candidate], sources: list[str]) -> dict[str, tuple[Candidate, int]]:
    """Decode the whole test set greedily and with each checkpoint's beam; {system: (cand, beam)}."""
    systems = {}
    for cand in cands:
        for beam, system in cand.system_names(len(cands) > 1).items():
            log.info("decoding %d lines: %s", len(sources), system)
            cand.decoded[beam] = diagnostics.decode(cand.translator, sources, beam, cand.alpha)
            systems[system] = (cand, beam)
    return systems


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "system"


def _score(systems: dict, intervals: dict, refs: list[str], out_dir: Path, lang: str) -> dict:
    """Scores with intervals, length ratio and speed of every system; writes hyps/<system>.<lang>."""
    from nmt.metrics import corpus_scores

    out = {}
    for name, (cand, beam) in systems.items():
        decoded = cand.decoded[beam]
        hyp_file = Path("hyps") / f"{_slug(name)}.{lang}"
        atomic_write_text(out_dir / hyp_file, "".join(t + "\n" for t in decoded.texts))
        scores = corpus_scores(decoded.texts, refs, lang=lang)
        for metric, values in scores.items():  # sacreBLEU's score and signature, then the interval
            values.update({k: v for k, v in analysis.interval_only(intervals[name][metric]).items() if k != "score"})
        out[name] = {
            "checkpoint": cand.name, "beam": beam, "alpha": cand.alpha if beam > 1 else 0.0,
            "hypotheses": str(hyp_file), "scores": scores, "length": analysis.length_ratio(decoded.texts, refs, lang),
            "seconds": round(decoded.seconds, 2),
            "sentences_per_s": round(len(refs) / max(decoded.seconds, 1e-9), 2),
        }
    return out


def _significance(
    cands: list[Candidate], texts: dict[str, list[str]], intervals: dict, refs: list[str], n: int, lang: str
) -> dict:
    """Greedy vs beam for each checkpoint; every later checkpoint's main system vs the first's.

    ``intervals`` already holds the paired tests against the first system (the first greedy)."""
    several = len(cands) > 1
    pairs = [tuple(c.system_names(several).values()) for c in cands if c.beam > 1]
    first = cands[0].system_names(several)[cands[0].main_beam]
    pairs += [(first, c.system_names(several)[c.main_beam]) for c in cands[1:]]
    baseline = next(iter(intervals))
    tests = [
        analysis.compare(a, b, intervals) if a == baseline
        else analysis.paired_test((a, texts[a]), (b, texts[b]), refs, n=n, lang=lang)
        for a, b in pairs
    ]
    return {"method": "paired bootstrap resampling (sacreBLEU)", "resamples": n, "seed": analysis.bootstrap_seed(),
            "pairs": tests}


def _probe(cands: list[Candidate], sources: list[str], refs: list[str], options: ReportOptions,
           widest: int) -> tuple[dict, dict]:
    """The beam sweep and the search-error check of every checkpoint. Beams wider than ``widest``,
    the fewest target pieces a model here chooses from (``Translator.widest_beam``: a model of 41
    pieces), are left out of the sweep, and the check's wide beam is that many: the default 50
    failed such a report after all its decoding."""
    beams = tuple(sorted(b for b in set(options.sweep_beams) if b <= widest))
    wide = min(options.wide_beam, widest)
    if beams != tuple(sorted(set(options.sweep_beams))) or wide != options.wide_beam:
        log.warning("the target vocabulary has %d pieces to choose from: beams up to %d in the sweep and the "
                    "search-error check", widest, widest)
    nonempty = [i for i, s in enumerate(sources) if s.strip()]
    sweep_index = diagnostics.spread(nonempty, options.sweep_sentences)
    sweep, errors = {}, {}
    for cand in cands:
        t = cand.translator
        rows = diagnostics.beam_sweep(t, sources, refs, beams, cand.alpha, sweep_index, cand.decoded)
        sweep[cand.name] = {"sentences": len(sweep_index), "alpha": cand.alpha, "rows": rows}
        short = diagnostics.short_sentences(t, sources, options.search_max_pieces, options.search_sentences)
        log.info("%s: search errors on %d short sentences", cand.name, len(short))
        found = diagnostics.search_errors(t, sources, refs, beams, cand.alpha, short, wide)
        errors[cand.name] = {"sentences": len(short), "alpha": cand.alpha, "rows": found}
    search = {"sentences_asked": options.search_sentences, "max_source_pieces": options.search_max_pieces,
              "wide_beam": wide,
              "tolerance": diagnostics.SCORE_TOLERANCE, "checkpoints": errors}
    return sweep, search


def _curves(cands: list[Candidate], run_dirs: list[Path | None]) -> dict:
    """Training curves of each distinct run behind the checkpoints (``run_dirs``, None where a
    checkpoint has none), with the checkpoints' steps."""
    curves: dict[str, dict] = {}
    for cand, run_dir in zip(cands, run_dirs):
        if run_dir is None:
            continue
        name = next((n for n, c in curves.items() if c["run_dir"] == str(run_dir)), None)
        if name is None:
            name = run_dir.name if run_dir.name not in curves else cand.name
            summary = run_dir / "train_summary.json"
            curves[name] = {
                "run_dir": str(run_dir), "clip_norm": cand.translator.config.train.clip_norm, "checkpoint_steps": [],
                "summary": json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else None,
                **analysis.read_curves(run_dir / "metrics.jsonl"),
            }
        curves[name]["checkpoint_steps"].append(step_info(cand.path)["step"])
    return curves


def _attention(cands: list[Candidate], sources: list[str], count: int) -> tuple[dict, dict[str, bytes]]:
    """Heatmaps of the same test lines for every checkpoint: {checkpoint: [map]} and the images.
    Only lines every checkpoint decodes whole: one longer than its model was trained on is
    translated in parts (``nmt.segment``), whose text would sit beside another decoding's map."""
    whole = [all(n <= c.translator.config.train.max_train_len for c, n in zip(cands, lengths))
             for lengths in zip(*(c.translator.tokenizer.src_lengths(sources) for c in cands))]
    index = diagnostics.heatmap_sentences([s if fits else "" for s, fits in zip(sources, whole)], count)
    report, images = {}, {}
    if not index:
        return report, images
    for cand in cands:
        maps = diagnostics.attention_maps(cand.translator, sources, index, cand.main_beam, cand.alpha)
        report[cand.name] = []
        for m in maps:
            figure = f"attention-{_slug(cand.name)}-{m['index'] + 1}"
            title = f"{cand.name}, test line {m['index'] + 1}"
            images[figure] = plots.attention_figure(m["source_pieces"], m["target_pieces"], m["weights"], title)
            hypothesis = cand.decoded[cand.main_beam].texts[m["index"]]
            report[cand.name].append({
                "index": m["index"], "source": sources[m["index"]], "hypothesis": hypothesis,
                "source_pieces": m["source_pieces"], "target_pieces": m["target_pieces"], "figure": figure,
            })
    return report, images


def _checkpoint_info(cand: Candidate) -> dict:
    from nmt.model import count_parameters

    model = cand.translator.config.model
    return {
        "name": cand.name, "path": str(cand.path), **step_info(cand.path), "cell": model.cell,
        "attention": model.attention, "parameters": count_parameters(cand.translator.model),
        "model": asdict(model), "beam": cand.beam, "alpha": cand.alpha,
        "decode": {**asdict(cand.translator.config.decode), "beam": cand.beam},  # as used: --beam overrides
    }


def _figures(report: dict) -> dict[str, bytes]:
    systems = list(report["systems"])
    intervals = {n: s["scores"] for n, s in report["systems"].items()}
    images = {
        "scores": plots.scores_figure(intervals),
        "lengths": plots.length_figure(report["length_buckets"], systems),
        "beam-sweep": plots.sweep_figure(
            {n: r["rows"] for n, r in report["beam_sweep"].items()},
            {n: r["rows"] for n, r in report["search_errors"]["checkpoints"].items() if r["rows"]},
        ),
    }
    if report["curves"]:
        marks = {n: c["checkpoint_steps"] for n, c in report["curves"].items()}
        images["training"] = plots.training_figure(report["curves"], marks)
    return images


def _knobs(options: ReportOptions) -> dict:
    """A report's options but its beam and alpha (which the folder's name says), the sweep's beams as
    a set (``_probe`` sorts them: --beams 10,5,2,1 is the default sweep)."""
    knobs = {k: v for k, v in asdict(options).items() if k not in ("beam", "alpha")}
    return knobs | {"sweep_beams": sorted(set(options.sweep_beams))}


def _report_dir(cands: list[Candidate], src: Path | None, ref: Path | None, options: ReportOptions) -> Path:
    """Where a report goes by default: ``report/`` in the folder ``nmt evaluate`` would write to for
    the same request (``nmt.pipeline.report_folder``): runs/<name>/report for the run's best alone on
    its test split with its own settings and make report's knobs (the defaults), make report's
    folder, which make then takes as done; runs/<name>/eval/<checkpoint>[-…]/report for any other
    (other knobs too: a quick report with --sweep-sentences 3 was taken by make as its own), and
    <names joined by +>[-…] for several checkpoints (in the first one's run), so a comparison does
    not replace the run's report."""
    from nmt.pipeline import asked_suffix, report_folder

    first = cands[0].path
    run_dir = analysis.find_run_dir(first) or first.parent
    if len(cands) == 1:
        as_make = _knobs(options) == _knobs(ReportOptions())
        return report_folder(first, run_dir, src, options.beam, options.alpha, ref, as_make) / "report"
    together = "+".join(_slug(cand.name) for cand in cands)
    return run_dir / "eval" / (together + asked_suffix(src, ref, options.beam, options.alpha)) / "report"


def build_report(
    checkpoints: list[Path],
    names: list[str] | None = None,
    src: Path | None = None,
    ref: Path | None = None,
    out_dir: Path | None = None,
    options: ReportOptions = ReportOptions(),
    device: str | None = None,
    decode: DecodeConfig | None = None,
) -> dict:
    """Write report.html, report.md, report.json, figures/ and hyps/ into ``out_dir`` (default:
    ``_report_dir``); returns the report dict (report.json). Each checkpoint decodes with the
    settings it was trained with, or with ``decode``."""
    import sacrebleu

    if not checkpoints:
        raise NmtError("give at least one --checkpoint")
    t0 = time.perf_counter()
    cands = _load(checkpoints, names, options, device, decode)
    if (widest := min(c.translator.widest_beam() for c in cands)) < min(options.sweep_beams):  # before the decoding
        raise NmtError(f"--beams: every beam of the sweep is wider than the {widest:,} target pieces a model here "
                       f"chooses from; give beams of at most {widest:,}")
    given_out, named_by_files = out_dir is not None, src is not None or ref is not None
    out_dir = Path(out_dir or _report_dir(cands, src, ref, options))
    src, ref, sources, refs = _test_set(cands, src, ref)
    if not given_out and named_by_files:  # (the run's own test split: a copied run's report names the original's)
        from nmt.pipeline import check_folder_inputs, earlier_report

        check_folder_inputs(out_dir, earlier_report(out_dir), {"source": src, "reference": ref})
    check_destination(out_dir, folder=True)  # before minutes of decoding, not after
    with contextlib.ExitStack() as noting:  # a model's notes on the lines (lines cut …) once, not once a pass
        for cand in cands:
            noting.enter_context(cand.translator.noting("first"))
        systems = _decode_systems(cands, sources)
        texts = {name: cand.decoded[beam].texts for name, (cand, beam) in systems.items()}
        lang = cands[0].translator.config.data.tgt_lang
        intervals = analysis.confidence_intervals(texts, refs, n=options.bootstrap, lang=lang)  # and tests vs the first
        report = {
            "title": f"Evaluation report: {', '.join(c.name for c in cands)}",
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "sacrebleu": sacrebleu.__version__,
            "versions": versions(),
            "output": str(out_dir), "source": str(src), "reference": str(ref),
            "sha256": {"source": file_sha256(src), "reference": file_sha256(ref)}, "sentences": len(sources),
            "checkpoints": [_checkpoint_info(c) for c in cands],
            "options": asdict(options),
            "bootstrap": {
                "resamples": options.bootstrap, "seed": analysis.bootstrap_seed(), "hypotheses_dir": str(out_dir / "hyps"),
                "sacrebleu_options": cli_options(lang),  # the command line's, to score as the report does
            },
            "systems": _score(systems, intervals, refs, out_dir, lang),
            "significance": _significance(cands, texts, intervals, refs, options.bootstrap, lang),
            "length_buckets": analysis.length_buckets(sources, refs, texts, n=options.bootstrap, lang=lang),
        }
        report["beam_sweep"], report["search_errors"] = _probe(cands, sources, refs, options, widest)
        run_dirs = [analysis.find_run_dir(c.path) for c in cands]
        report["curves"] = _curves(cands, run_dirs)
        report["no_training_log"] = [c.name for c, run_dir in zip(cands, run_dirs) if run_dir is None]
        main = {n: texts[n] for n in (c.system_names(len(cands) > 1)[c.main_beam] for c in cands)}
        report["examples"] = {
            n: analysis.best_and_worst(sources, refs, t, options.examples) for n, t in main.items() if options.examples
        }
        report["attention"], images = _attention(cands, sources, options.heatmaps)
    images.update(_figures(report))
    report["figures"] = sorted(images)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    _write(out_dir, report, images)
    return report


def _outputs(report: dict) -> set[str]:
    """The figures and hypothesis files a report wrote (paths in its folder), as its report.json
    names them."""
    figures = {f"figures/{name}.png" for name in report.get("figures", []) if isinstance(name, str) and "/" not in name}
    systems = report.get("systems", {})
    hyps = {s.get("hypotheses") for s in systems.values() if isinstance(s, dict)} if isinstance(systems, dict) else set()
    return figures | {h for h in hyps if isinstance(h, str) and re.fullmatch(r"hyps/[\w-][\w.-]*", h)}


def _write(out_dir: Path, report: dict, images: dict[str, bytes]) -> None:
    from nmt.report import render_html, render_markdown

    from nmt.pipeline import earlier_report

    # an earlier report's figures and outputs, not made again: its report is gone, and hyps/ is what
    # its "reproduce with" command scores (only those: any other file there is the user's and stays)
    for name in _outputs(earlier_report(out_dir)) - _outputs(report):
        (out_dir / name).unlink(missing_ok=True)
    for name, data in images.items():
        atomic_write_bytes(out_dir / "figures" / f"{name}.png", data)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    atomic_write_text(out_dir / "report.html", render_html(report, images))
    log.info("report written to %s (%.0f s)", out_dir / "report.html", report["seconds"])
