"""Turn evaluation results into a report a person reads: Markdown, or one self-contained HTML file.

A report is the dict written as report.json, by ``nmt evaluate`` (scores and samples) or by
``nmt report`` (nmt.evaluation: intervals, significance, lengths, beam sweep, search errors,
training curves, attention, best and worst sentences). Each section is drawn when its key is
present, with a one-line "how to read this" note; figures are named in ``report["figures"]``.
"""

from __future__ import annotations

from nmt.document import Image, Paragraph, Section, Subheading, Table, Verbatim, to_html, to_markdown
from nmt.provenance import CHANGED

SECTION_IDS = ("scores", "significance", "lengths", "beam-sweep", "search-errors", "training", "attention",
               "examples")
METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("ter", "TER"))


def _num(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _with_ci(score: dict) -> str:
    """"23.41 [22.30, 24.50]": the score, then its 95 % interval when there is one."""
    text = _num(score["score"])
    return f"{text} [{_num(score['low'])}, {_num(score['high'])}]" if "low" in score else text


def _images(report: dict, *names: str) -> list[Image]:
    present = set(report.get("figures", []))
    return [Image(name, name.replace("-", " ")) for name in names if name in present]


def _averaged(checkpoint: dict) -> str:
    steps = checkpoint.get("averaged_steps")
    return f", the mean of the weights of steps {', '.join(f'{s:,}' for s in steps)}" if steps else ""


def _preamble(report: dict) -> list[str]:
    lines = []
    for ckpt in report.get("checkpoints", []):
        lines.append(
            f"- checkpoint {ckpt['name']}: `{ckpt['path']}` (step {ckpt['step']}{_averaged(ckpt)}; "
            f"{ckpt['cell'].upper()} cells, "
            f"attention {ckpt['attention']}, {ckpt['parameters']:,} parameters; beam {ckpt['beam']}, "
            f"alpha {ckpt['alpha']:g})"
        )
    if "checkpoint" in report:
        lines.append(f"- checkpoint: `{report['checkpoint']}` (step {report['step']}{_averaged(report)})")
    lines.append(f"- test set: `{report['source']}` → `{report['reference']}` ({report['sentences']} sentences)")
    training = report.get("training")
    if training:
        lines.append(
            f"- training: {training['steps']} steps, {training['train_minutes']:.1f} min on "
            f"{training['device']} ({training['threads']} thread{'s' * (training['threads'] != 1)}); "
            f"{training['stopped']}"
        )
    made = [f"nmt {v['nmt']}{_commit(v)} (torch {v['torch']}, "
            f"{'SentencePiece ' + v['sentencepiece'] + ', ' if 'sentencepiece' in v else ''}Python {v['python']})"
            for v in [report.get("versions")] if v]
    if "created" in report:
        made.append(f"sacreBLEU {report['sacrebleu']}")
        lines.append(f"- made {report['created']} with {' and '.join(made)}")
    elif made:
        lines.append(f"- made with {made[0]}")
    return lines


def _commit(versions: dict) -> str:
    """" at 1a2b3c4d5e6f" (with "+changes" where tracked files differed from it), or "" where the
    report has no commit (nmt not run from a git checkout, or a report from before it was kept)."""
    commit = versions.get("commit")
    return f" at {commit[:12]}{CHANGED if commit.endswith(CHANGED) else ''}" if isinstance(commit, str) else ""


def _scores_section(report: dict) -> Section:
    systems = report["systems"]
    has_length = all("length" in s for s in systems.values())
    header = ["system", "beam", "BLEU", "chrF", "TER"] + (["hyp/ref length"] if has_length else []) + ["sentences/s"]
    rows = []
    for name, system in systems.items():
        s = system["scores"]
        length = [_num(system["length"]["ratio"], 3)] if has_length else []
        beam = str(system["beam"]) + (f" (α {system['alpha']:g})" if system["beam"] > 1 and "alpha" in system else "")
        rows.append([name, beam, *(_with_ci(s[m]) for m, _ in METRICS), *length,
                     _num(system["sentences_per_s"], 1)])
    first = next(iter(systems.values()))["scores"]
    uncertainty = (
        "In brackets, the 95 % confidence interval from bootstrap resampling of the test sentences: on another "
        "test set like this one the score would most likely land inside it. Overlapping intervals do not make two "
        "systems equal — the paired tests below are the sharper check. "
        if "low" in first["bleu"] else "`nmt report` adds confidence intervals and significance tests. "
    )
    blocks = [
        Paragraph("Corpus scores on the whole test set: higher BLEU and chrF are better, lower TER is better. "
                  + uncertainty + ("hyp/ref length below 1 means translations are too short." if has_length else ""),
                  note=True),
        Table(header, rows, [False] + [True] * (len(header) - 1)),
        *_images(report, "scores"),
    ]
    blocks += [Paragraph(f"{label} signature: `{first[m]['signature']}`") for m, label in METRICS]
    if "bootstrap" in report:
        b = report["bootstrap"]
        # the options that score as the report did (-tok zh for Chinese, say): without, the command gave 13a BLEU
        command = " ".join(filter(None, ("sacrebleu", report["reference"], "-i HYP -m bleu chrf ter",
                                         b.get("sacrebleu_options"), "--confidence")))
        blocks.append(Paragraph(
            f"Intervals: sacreBLEU bootstrap, {b['resamples']} resamples, seed {b['seed']}; sacreBLEU states them "
            f"as mean ± half-width, shown here as [mean − half, mean + half] within the metric's range (0–100 for "
            f"BLEU and chrF). Reproduce with `{command}` on the files in `{b['hypotheses_dir']}`."))
    return Section("scores", "Scores", blocks)


def _significance_section(report: dict) -> Section | None:
    sig = report.get("significance")
    if not sig:
        return None
    rows = []
    for pair in sig["pairs"]:
        for metric, label in METRICS:
            r = pair["metrics"][metric]
            verdict = f"{r['better']} better" if r["better"] else "no significant difference"
            rows.append([pair["baseline"], pair["system"], label, _num(r["baseline"]), _num(r["system"]),
                         f"{r['delta']:+.2f}", _num(r["p_value"], 4), verdict])
    note = Paragraph(
        "Each pair is scored on the same bootstrap resamples of the test sentences (sacreBLEU's paired bootstrap, "
        f"{sig['resamples']} resamples, seed {sig['seed']}). p is the chance of a difference this large if the two "
        "systems were equally good; below 0.05 we call it significant. Significant is not the same as large: "
        "look at Δ too.", note=True)
    if not rows:
        return Section("significance", "Paired significance", [note, Paragraph("Only one system: nothing to compare.")])
    header = ["baseline", "system", "metric", "baseline score", "system score", "Δ", "p", "verdict"]
    return Section("significance", "Paired significance",
                   [note, Table(header, rows, [False, False, False, True, True, True, True, False])])


def _length_section(report: dict) -> Section | None:
    buckets = report.get("length_buckets")
    if not buckets:
        return None
    rows = [
        [b["label"], str(b["sentences"]), name, _with_ci(s["bleu"]), _with_ci(s["chrf"]), _num(s["length"]["ratio"], 3)]
        for b in buckets for name, s in b["systems"].items()
    ]
    return Section("lengths", "Scores by source length", [
        Paragraph("Test sentences grouped by source length in words, each group scored on its own. Error bars and "
                  "brackets are 95 % bootstrap intervals — wide where a group holds few sentences. The length ratio "
                  "is hypothesis length / reference length (BLEU's tokens): below 1 the system says too little "
                  "and BLEU's brevity penalty bites; above 1 it rambles or repeats.", note=True),
        *_images(report, "lengths"),
        Table(["source words", "sentences", "system", "BLEU", "chrF", "hyp/ref length"], rows,
              [False, True, False, True, True, True]),
    ])


def _sweep_summary(rows: list[dict]) -> str:
    best = max(rows, key=lambda r: (r["bleu"], -r["beam"]))
    first, last = rows[0], rows[-1]
    if len(rows) == 1:  # (--beams 1): nothing to compare
        return (f"One beam size, {first['beam']}: BLEU {_num(first['bleu'])}, mean log-probability "
                f"{_num(first['mean_log_prob'])}.")
    if len({r["bleu"] for r in rows}) == 1:
        peak = "BLEU is the same at every beam size"
    else:
        peak = f"BLEU is highest at beam {best['beam']} ({_num(best['bleu'])})"
    return (f"{peak}; from beam {first['beam']} to "
            f"{last['beam']} the mean log-probability moves from {_num(first['mean_log_prob'])} to "
            f"{_num(last['mean_log_prob'])} and BLEU from {_num(first['bleu'])} to {_num(last['bleu'])}.")


def _sweep_section(report: dict) -> Section | None:
    sweep = report.get("beam_sweep")
    if not sweep:
        return None
    blocks: list = [
        Paragraph("The same sentences decoded with growing beams. Mean log p is the model's log-probability of "
                  "its chosen translation (what search tries to raise; the objective also divides by the length "
                  "penalty); BLEU is what we care about. Where log p still rises but BLEU does not, a wider beam "
                  "finds translations the model prefers and people do not — search stopped helping. "
                  "These are a subset of the test set: BLEU differences of a point or less are within noise here. "
                  "A beam already decoded on the whole test set above is not decoded again: its row takes those "
                  "translations of these sentences, and its sentences/s is the whole test set's.",
                  note=True),
        *_images(report, "beam-sweep"),
    ]
    header = ["beam", "BLEU", "mean log p", "mean objective", "mean output pieces", "sentences/s"]
    for name, run in sweep.items():
        title = f"{name}: {run['sentences']} sentences spread over the test set, alpha {run['alpha']:g}"
        blocks.append(Subheading(title))
        rows = [[str(r["beam"]), _num(r["bleu"]), _num(r["mean_log_prob"], 3), _num(r["mean_objective"], 3),
                 _num(r["mean_tokens"], 1), _num(r["sentences_per_s"], 1)] for r in run["rows"]]
        blocks += [Table(header, rows, [True] * len(header)), Paragraph(_sweep_summary(run["rows"]))]
    return Section("beam-sweep", "Beam-size sweep", blocks)


def _search_section(report: dict) -> Section | None:
    errors = report.get("search_errors")
    if not errors:
        return None
    blocks: list = [Paragraph(
        f"A search error is a translation the model scores higher than the one beam search returned. Finding all of "
        f"them needs exhaustive search over every output, which no real vocabulary allows, so this is a lower bound, "
        f"measured on short sentences (at most {errors['max_source_pieces']} source pieces): the beam output counts "
        f"as a search error when the output of a beam of {errors['wide_beam']} or the reference translation scores "
        f"higher under the same objective (log p / length penalty), by more than {errors['tolerance']:g}. "
        f"The true rate can only be higher.", note=True)]
    header = ["beam", f"beaten by beam {errors['wide_beam']}", "beaten by reference", "search errors (either)"]
    for name, run in errors["checkpoints"].items():
        blocks.append(Subheading(f"{name}: {run['sentences']} short sentences"))
        if not run["rows"]:
            asked = errors.get("sentences_asked")
            blocks.append(Paragraph("None checked (--search-sentences 0)." if asked == 0 else
                                    "No test sentence is short enough."))
            continue
        rows = [[str(r["beam"]), _pct(r["beaten_by_wide_beam"]), _pct(r["beaten_by_reference"]),
                 _pct(r["search_errors"])] for r in run["rows"]]
        blocks.append(Table(header, rows, [True] * 4))
    return Section("search-errors", "Search errors", blocks)


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def _training_section(report: dict) -> Section | None:
    curves = report.get("curves")
    if curves is None:
        return None
    blocks: list = [Paragraph(
        "From each run's metrics.jsonl. Training loss is label-smoothed cross-entropy per token (mean of 20 steps); "
        "dev loss and perplexity are unsmoothed; dev BLEU is greedy on the dev split. The gradient norm is measured "
        "before clipping; red crosses mark log intervals in which clipping fired, the dotted line is clip_norm. "
        "Dashed vertical lines: the evaluated checkpoints.", note=True)]
    if not curves:
        blocks.append(Paragraph("No metrics.jsonl found beside the checkpoints."))
        return Section("training", "Training curves", blocks)
    if missing := report.get("no_training_log"):  # a checkpoint copied out of its run folder
        blocks.append(Paragraph(f"No metrics.jsonl beside {', '.join(missing)}: not in the table or the figure."))
    blocks += _images(report, "training")
    rows = []
    for name, run in curves.items():
        summary, train, valid = run.get("summary") or {}, run["train"], run["valid"]
        clipped = sum(r.get("clipped_steps", 0) for r in train)
        last = train[-1]["step"] if train else 0
        best = max(valid, key=lambda r: r["dev_bleu"]) if valid else None
        rows.append([name, str(summary.get("steps", last)), str(best["step"]) if best else "–",
                     _num(best["dev_bleu"]) if best else "–", _num(summary.get("train_minutes", 0.0), 1),
                     f"{clipped} of {last}", str(summary.get("stopped", "–"))])
    header = ["run", "steps", "best dev step", "best dev BLEU", "minutes", "clipped steps", "stopped"]
    blocks.append(Table(header, rows, [False, True, True, True, True, True, False]))
    return Section("training", "Training curves", blocks)


def _attention_section(report: dict) -> Section | None:
    attention = report.get("attention")
    if attention is None:
        return None
    blocks: list = [Paragraph(
        "Rows are the pieces the model wrote, columns the source pieces; darker cells got more attention while "
        "that output piece was produced. A clean diagonal band means the model walks through the source in order; "
        "source columns nobody looks at often mark words left untranslated, and smeared rows mark guessing. "
        "Sentences were picked to include the longest in the test set.", note=True)]
    if not attention:
        blocks.append(Paragraph("No heatmaps were asked for (--heatmaps 0)."))
    for name, maps in attention.items():
        blocks.append(Subheading(name))
        if not maps:
            blocks.append(Paragraph("No attention weights: this model has no attention (or produced no output)."))
        for m in maps:
            said = (Verbatim(m["source"]), " → ", Verbatim(m["hypothesis"]) if m["hypothesis"] else "(empty output)")
            blocks += [Paragraph((f"Test line {m['index'] + 1} ({len(m['source_pieces'])} source pieces): ", *said)),
                       *_images(report, m["figure"])]
    return Section("attention", "Attention", blocks)


def _examples_section(report: dict) -> Section | None:
    examples = report.get("examples")
    if not examples:
        return None
    blocks: list = [Paragraph(
        "Test sentences ranked by sentence-level chrF. The worst show what goes wrong, the best what works. "
        "A single sentence's score is noisy, so read these as examples, not as statistics.", note=True)]
    header = ["line", "chrF", "source", "reference", "hypothesis"]
    for name, ranked in examples.items():
        for which in ("best", "worst"):
            rows = [[str(r["index"] + 1), _num(r["chrf"], 1),
                     *map(Verbatim, (r["source"], r["reference"], r["hypothesis"]))] for r in ranked[which]]
            blocks += [Subheading(f"{name}: {which} {len(rows)}"), Table(header, rows, [True, True])]
    return Section("examples", "Best and worst sentences", blocks)


def _samples_section(report: dict) -> Section | None:
    if not report.get("samples"):
        return None
    names = list(report["systems"])
    rows = [[str(s["index"] + 1), *map(Verbatim, (s["source"], s["reference"], *(s[n] for n in names)))]
            for s in report["samples"]]
    return Section("samples", "Samples", [Table(["line", "source", "reference", *names], rows, [True])])


def sections(report: dict) -> list[Section]:
    builders = (_scores_section, _significance_section, _length_section, _sweep_section, _search_section,
                _training_section, _attention_section, _examples_section, _samples_section)
    return [s for s in (build(report) for build in builders) if s is not None]


def render_markdown(report: dict) -> str:
    """The report as Markdown; figures are linked as figures/<name>.png beside it."""
    return to_markdown(report.get("title", "Evaluation report"), _preamble(report), sections(report))


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """The report as one self-contained HTML file; ``images`` holds each figure's PNG bytes."""
    return to_html(report.get("title", "Evaluation report"), _preamble(report), sections(report), images)
