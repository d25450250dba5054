"""The report's figures, each returned as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` directly (rendered by the Agg backend), not
through pyplot: no display is needed, no global figure state is kept, and nothing leaks between
calls.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

DPI = 110
METRIC_LABELS = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER (lower is better)"}


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _plain(text: str) -> str:
    """``text`` (a system's name, a piece) shown as written: matplotlib reads $…$ as math, so a
    piece "▁$$" (LaTeX in a corpus) or a system named "price $$" ended a report, after all its
    decoding, in a traceback. (Math stays on for matplotlib's own labels: 10^1 on a log axis.)"""
    return text.replace("$", r"\$")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def scores_figure(intervals: dict[str, dict[str, dict]]) -> bytes:
    """One panel per metric: each system's score with its 95 % bootstrap interval."""
    names = list(intervals)
    fig = Figure(figsize=(10, 0.5 * len(names) + 1.4))
    axes = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(names))
    for ax, metric in zip(axes, ("bleu", "chrf", "ter")):
        cis = [intervals[n][metric] for n in names]
        score = np.array([c["score"] for c in cis])
        low = np.array([c["low"] for c in cis])
        high = np.array([c["high"] for c in cis])
        err = np.vstack([np.clip(score - low, 0, None), np.clip(high - score, 0, None)])
        ax.errorbar(score, y, xerr=err, fmt="o", color="#1f77b4", ecolor="#7f7f7f", capsize=4)
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
    axes[0].set_yticks(y, [_plain(name) for name in names])
    axes[0].invert_yaxis()
    return to_png(fig)


def length_figure(buckets: list[dict], systems: list[str]) -> bytes:
    """BLEU and chrF (with intervals) and the hypothesis/reference length ratio per bucket."""
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3)
    x = np.arange(len(buckets))
    labels = [f"{b['label']}\n(n={b['sentences']})" for b in buckets]
    width = 0.8 / max(1, len(systems))
    for j, (name, color) in enumerate(zip(systems, _colors(len(systems)))):
        shift = x - 0.4 + width * (j + 0.5)
        for ax, metric in zip(axes[:2], ("bleu", "chrf")):
            cis = [b["systems"][name][metric] for b in buckets]
            score = np.array([c["score"] for c in cis])
            err = np.vstack([
                np.clip(score - [c["low"] for c in cis], 0, None), np.clip([c["high"] for c in cis] - score, 0, None)
            ])
            ax.errorbar(shift, score, yerr=err, fmt="o", color=color, capsize=3, label=_plain(name))
        ratio = [b["systems"][name]["length"]["ratio"] for b in buckets]
        axes[2].plot(x, ratio, "o-", color=color, label=_plain(name))
    axes[2].axhline(1.0, color="#555555", linestyle="--", linewidth=1)
    for ax, title in zip(axes, ("BLEU", "chrF", "hypothesis / reference length")):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("source length (words)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def sweep_figure(sweeps: dict[str, list[dict]], errors: dict[str, list[dict]]) -> bytes:
    """BLEU, mean log-probability and (when measured) the search-error rate against beam size,
    one line per checkpoint."""
    panels = 3 if errors else 2
    fig = Figure(figsize=(3.7 * panels, 3.3))
    axes = fig.subplots(1, panels)
    for (name, rows), color in zip(sweeps.items(), _colors(len(sweeps))):
        beams = [r["beam"] for r in rows]
        axes[0].plot(beams, [r["bleu"] for r in rows], "o-", color=color, label=_plain(name))
        axes[1].plot(beams, [r["mean_log_prob"] for r in rows], "o-", color=color, label=_plain(name))
        if errors and name in errors:
            rate = [100 * r["search_errors"] for r in errors[name]]
            axes[2].plot([r["beam"] for r in errors[name]], rate, "o-", color=color, label=_plain(name))
    titles = ("BLEU", "mean log p(translation) per sentence", "search errors found (% of short sentences)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("beam size", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        beams = sorted({r["beam"] for rows in sweeps.values() for r in rows})
        ax.set_xticks(beams, [str(b) for b in beams])
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def training_figure(runs: dict[str, dict], marks: dict[str, list[int]]) -> bytes:
    """Train/dev loss, dev perplexity, dev BLEU, learning rate, gradient norm (before clipping,
    with clipping events and the clip threshold) and clipped steps, for each run.

    ``runs``: {name: {"train": [...], "valid": [...], "clip_norm": float}}; ``marks``: {name:
    steps of the evaluated checkpoints}, drawn as dashed lines."""
    fig = Figure(figsize=(12, 6.4))
    axes = fig.subplots(2, 3).ravel()
    for (name, run), color in zip(runs.items(), _colors(len(runs))):
        train, valid = run["train"], run["valid"]
        ts, vs = [r["step"] for r in train], [r["step"] for r in valid]
        axes[0].plot(ts, [r["train_loss"] for r in train], color=color, label=f"{_plain(name)} train")
        axes[0].plot(vs, [r["dev_loss"] for r in valid], "o--", color=color, markersize=3,
                     label=f"{_plain(name)} dev")
        axes[1].plot(vs, [r["dev_ppl"] for r in valid], "o-", color=color, markersize=3, label=_plain(name))
        axes[2].plot(vs, [r["dev_bleu"] for r in valid], "o-", color=color, markersize=3, label=_plain(name))
        axes[3].plot(ts, [r["lr"] for r in train], color=color, label=_plain(name))
        axes[4].plot(ts, [r["grad_norm"] for r in train], color=color, label=f"{_plain(name)} mean")
        axes[4].plot(ts, [r["grad_norm_max"] for r in train], color=color, alpha=0.4, linewidth=0.8,
                     label=f"{_plain(name)} max")
        clipped = [r for r in train if r.get("clipped_steps", 0) > 0]
        axes[4].scatter([r["step"] for r in clipped], [r["grad_norm_max"] for r in clipped], marker="x",
                        color="#d62728", s=18, zorder=3, label="clipping fired" if clipped else None)
        axes[4].axhline(run["clip_norm"], color=color, linestyle=":", linewidth=1)
        axes[5].bar(ts, [r.get("clipped_steps", 0) for r in train], width=_bar_width(ts), color=color, alpha=0.7,
                    label=_plain(name))
        for ax in axes:
            for step in marks.get(name, []):
                ax.axvline(step, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
    titles = ("loss per token (train: label-smoothed)", "dev perplexity", "dev BLEU (greedy)", "learning rate",
              "gradient norm before clipping (dotted: clip_norm)", "clipped steps per log interval")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    for ax, key, kind in ((axes[1], "dev_ppl", "valid"), (axes[3], "lr", "train")):
        values = [r[key] for run in runs.values() for r in run[kind]]
        if values and min(values) > 0:  # perplexity and lr span decades
            ax.set_yscale("log")
    for ax in (axes[0], axes[4]):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def _bar_width(steps: list[int]) -> float:
    return 0.8 * float(np.min(np.diff(steps))) if len(steps) > 1 else 1.0


def attention_figure(source_pieces: list[str], target_pieces: list[str], weights: np.ndarray, title: str) -> bytes:
    """A heatmap of ``weights`` (T', S): target pieces down, source pieces across."""
    rows, cols = weights.shape
    cell = 0.12 if max(rows, cols) > 50 else 0.26
    fig = Figure(figsize=(min(16.0, max(4.0, cols * cell + 1.8)), min(14.0, max(2.5, rows * cell + 1.6))))
    ax = fig.subplots()
    # A fixed 0..1 scale keeps maps comparable (a row sums to 1: uniform attention stays pale);
    # the square-root norm keeps weights of 0.05–0.2, common on long sentences, visible.
    image = ax.imshow(weights, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), aspect="auto",
                      interpolation="nearest")
    size = 5 if max(rows, cols) > 50 else 8
    ax.set_xticks(np.arange(cols), [_plain(p) for p in source_pieces], rotation=90, fontsize=size)
    ax.set_yticks(np.arange(rows), [_plain(p) for p in target_pieces], fontsize=size)
    ax.set_xlabel("source pieces", fontsize=9)
    ax.set_ylabel("output pieces", fontsize=9)
    ax.set_title(_plain(title), fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    return to_png(fig)
