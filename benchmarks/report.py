"""Render a results dict (bench.py) as the Markdown tables of benchmarks/README.md."""

from __future__ import annotations

TARGETS = {"train": 2.0, "beam5": 3.0, "beam1": 3.0, "peak_fraction": 0.5}


def _get(d: dict, *keys, default=None):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _num(x, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _ratio(a, b) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def toolkit_rows(results: dict) -> list[tuple[str, dict, dict]]:
    """(label, training result, decode results) for nmt's precisions and each peer."""
    rows = []
    nmt = results.get("nmt", {})
    for precision, train in nmt.get("train", {}).items():
        rows.append((f"nmt ({precision})", train, nmt.get("decode", {}) if precision == "bf16" or
                     "bf16" not in nmt.get("train", {}) else {}))
    for peer, res in results.get("peers", {}).items():
        rows.append((peer, _get(res, "train", "fp32", default={}) or {"error": res.get("error")},
                     res.get("decode", {})))
    return rows


def render_markdown(results: dict) -> str:
    m = results["machine"]
    peak = results.get("matmul_peak", {})
    fp32_peak, bf16_peak = _get(peak, "fp32", "gflops"), _get(peak, "bf16", "gflops")
    lines = [
        f"Machine: {m['cpu']}, {m['cores_available']} cores, torch {m['torch']}, {m['threads']} threads, "
        f"Python {m['python']}; {results['date']}. Cores busy with other work at start / end: "
        f"{m.get('busy_cores_at_start', '?')} / {m.get('busy_cores_at_end', '?')}.",
        f"Command: `{results['command']}` ({results.get('minutes', '?')} min).",
        f"Training: {results['settings']['timed_steps']} timed steps after {results['settings']['warmup_steps']} "
        f"warm-up steps, batches of ≤ {results['settings']['max_tokens']} padded tokens. Decoding: dev split "
        f"({results['settings']['decode_sentences']}), batches of 64 sentences, generation time only.",
        f"Matrix-multiply peak measured in the same run: fp32 {_num(fp32_peak)} GFLOP/s, "
        f"bf16 {_num(bf16_peak)} GFLOP/s.",
        "",
        "| toolkit | train tok/s | train GFLOP/s | greedy sent/s | greedy tok/s | beam-5 sent/s | beam-5 tok/s "
        "| out len greedy / beam-5 | peak RSS train / greedy / beam-5 (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, train, decode in toolkit_rows(results):
        g, b = decode.get("beam1", {}), decode.get("beam5", {})
        if train.get("error") and not g:
            lines.append(f"| {label} | failed: {train['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {label} | {_num(train.get('tokens_per_s'))} | {_num(train.get('gflops_per_s'), 1)} "
            f"| {_num(g.get('sentences_per_s'), 1)} | {_num(g.get('tokens_per_s'))} "
            f"| {_num(b.get('sentences_per_s'), 1)} | {_num(b.get('tokens_per_s'))} "
            f"| {_num(g.get('mean_output_len'), 1)} / {_num(b.get('mean_output_len'), 1)} "
            f"| {_num(train.get('peak_rss_mib'))} / {_num(g.get('peak_rss_mib'))} / {_num(b.get('peak_rss_mib'))} |"
        )
    ref = _get(results, "nmt", "decode_reference")
    if ref:
        g, b = ref.get("beam1", {}), ref.get("beam5", {})
        lines.append(
            f"| nmt, fully trained checkpoint¹ | | | {_num(g.get('sentences_per_s'), 1)} "
            f"| {_num(g.get('tokens_per_s'))} | {_num(b.get('sentences_per_s'), 1)} | {_num(b.get('tokens_per_s'))} "
            f"| {_num(g.get('mean_output_len'), 1)} / {_num(b.get('mean_output_len'), 1)} "
            f"| — / {_num(g.get('peak_rss_mib'))} / {_num(b.get('peak_rss_mib'))} |"
        )
    lines += ["", *ratio_table(results), "", *targets(results, fp32_peak, bf16_peak)]
    if ref:
        lines += ["", f"¹ {ref.get('checkpoint')}: the 60-minute training run's best checkpoint, for reference "
                      "(no peer has an equally trained model here, so no ratio)."]
    return "\n".join(lines) + "\n"


def ratio_table(results: dict) -> list[str]:
    nmt = results.get("nmt", {})
    ours = {p: _get(nmt, "train", p, "tokens_per_s") for p in ("bf16", "fp32")}
    dec = {k: nmt.get("decode", {}).get(k, {}) for k in ("beam1", "beam5")}
    lines = [
        "Ratios nmt / peer (higher is better for nmt):",
        "",
        "| peer | train (nmt bf16) | train (nmt fp32) | greedy sent/s | greedy tok/s | beam-5 sent/s | beam-5 tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for peer, res in results.get("peers", {}).items():
        t = _get(res, "train", "fp32", "tokens_per_s")
        pd = {k: _get(res, "decode", k, default={}) or {} for k in ("beam1", "beam5")}
        lines.append(
            f"| {peer} | {_ratio(ours['bf16'], t)} | {_ratio(ours['fp32'], t)} | "
            + " | ".join(_ratio(dec[k].get(f), pd[k].get(f)) for k in ("beam1", "beam5")
                         for f in ("sentences_per_s", "tokens_per_s"))
            + " |"
        )
    return lines


def fastest_peer(results: dict, *path) -> tuple[str | None, float | None]:
    best = (None, None)
    for peer, res in results.get("peers", {}).items():
        value = _get(res, *path)
        if value is not None and (best[1] is None or value > best[1]):
            best = (peer, value)
    return best


def targets(results: dict, fp32_peak, bf16_peak) -> list[str]:
    nmt = results.get("nmt", {})
    lines = ["Targets (issue 4):", ""]
    train = _get(nmt, "train", "bf16", "tokens_per_s")
    peer, value = fastest_peer(results, "train", "fp32", "tokens_per_s")
    if peer:
        ratio = train / value if train else None
        lines.append(f"- training ≥ 2× the fastest peer ({peer}, {_num(value)} tok/s): nmt bf16 {_num(train)} tok/s "
                     f"= {_ratio(train, value)} → {'met' if ratio and ratio >= 2 else 'NOT met'}")
    for key, name in (("beam5", "beam-5"), ("beam1", "greedy")):
        ours = _get(nmt, "decode", key, "sentences_per_s")
        peer, value = fastest_peer(results, "decode", key, "sentences_per_s")
        if peer:
            ratio = ours / value if ours else None
            lines.append(f"- {name} decoding ≥ 3× the fastest peer ({peer}, {_num(value, 1)} sent/s): nmt "
                         f"{_num(ours, 1)} sent/s = {_ratio(ours, value)} → {'met' if ratio and ratio >= 3 else 'NOT met'}")
    for precision, peak_value, peak_name in (("bf16", bf16_peak, "bf16"), ("bf16", fp32_peak, "fp32"),
                                             ("fp32", fp32_peak, "fp32")):
        g = _get(nmt, "train", precision, "gflops_per_s")
        if g and peak_value:
            frac = g / peak_value
            lines.append(f"- training ({precision}) at ≥ 50 % of the {peak_name} matmul peak: {_num(g, 1)} of "
                         f"{_num(peak_value)} GFLOP/s = {frac:.0%} → {'met' if frac >= 0.5 else 'NOT met'}")
    return lines
