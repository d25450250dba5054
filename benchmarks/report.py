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


ATTENTION = {"fairseq": "luong", "opennmt": "bahdanau", "joeynmt": "bahdanau"}  # each peer's attention
# The nmt model that is the peer's own: fairseq has Luong attention only; OpenNMT-py's brnn needs a
# 2 x 128 encoder with a 256 decoder; JoeyNMT runs nmt's default model.
MATCH = {"fairseq": "luong", "opennmt": "enc128", "joeynmt": "bahdanau"}
TWINS = {"luong": "nmt luong", "enc128": "nmt enc 2×128"}


def nmt_variants(results: dict) -> list[tuple[str, str, dict]]:
    """(label, variant, results) for nmt's default (Bahdanau) model and each twin measured."""
    nmt = results.get("nmt", {})
    return [("nmt", "bahdanau", nmt)] + [(label, key, nmt[key]) for key, label in TWINS.items() if nmt.get(key)]


def matches(results: dict, peer: str, variant: str) -> bool:
    """Whether the nmt variant is the peer's model (by attention alone when no twin was measured)."""
    measured = {key for _, key, _ in nmt_variants(results)}
    wanted = MATCH.get(peer)
    if wanted in measured:
        return variant == wanted
    return {"luong": "luong", "bahdanau": "bahdanau", "enc128": "bahdanau"}[variant] == ATTENTION.get(peer)


def toolkit_rows(results: dict) -> list[tuple[str, dict, dict]]:
    """(label, training result, decode results) for nmt's models and precisions and each peer."""
    rows = []
    for name, _, res in nmt_variants(results):
        trains = res.get("train", {})
        for precision, train in trains.items():
            first = precision == next(iter(trains))  # decoding ran with the first precision's checkpoint
            rows.append((f"{name} ({precision})", train, res.get("decode", {}) if first else {}))
        if res.get("decode_bf16"):
            rows.append((f"{name}, bf16 decoding", {}, res["decode_bf16"]))
    for peer, res in results.get("peers", {}).items():
        rows.append((f"{peer} ({ATTENTION.get(peer, '?')})", _get(res, "train", "fp32", default={})
                     or {"error": res.get("error")}, res.get("decode", {})))
    return rows


def _rounds(results: dict) -> str:
    rounds = results["settings"].get("rounds", 1)
    return (f", {rounds} interleaved rounds per toolkit (every toolkit once a round), the fastest round kept"
            f" and every round's tok/s in brackets" if rounds > 1 else "")


def _spread(train: dict) -> str:
    rounds = train.get("rounds_tokens_per_s") or []
    return f" ({' / '.join(f'{r:,}' for r in rounds)})" if len(rounds) > 1 else ""


def fp32_libraries(peak: dict) -> str:
    """" (MKL a, oneDNN b)" where both fp32 libraries were measured (the peak is the better)."""
    by = (peak.get("fp32") or {}).get("by_library") or {}
    return f" (MKL {_num(by['mkl']['gflops'])}, oneDNN {_num(by['onednn']['gflops'])})" if by.get("onednn") else ""


def at_code(results: dict) -> str:
    """' at <commit>' for a results file that records its code (files from before 2026-12-06 do not)."""
    return f" at {results['code']}" if results.get("code") else ""


def isa_text(m: dict) -> str:
    """" (GenuineIntel 6 143; avx512_bf16, AMX)": what the model name of a VM hides, from what the
    results file recorded (older files recorded less)."""
    isa = [name for name in ("avx512_bf16", "avx512_vnni") if m.get(name)] + (["AMX"] if m.get("amx") else [])
    parts = [m.get("cpu_vendor_family_model", ""), ", ".join(isa)]
    return f" ({'; '.join(p for p in parts if p)})" if any(parts) else ""


def render_markdown(results: dict) -> str:
    m = results["machine"]
    peak = results.get("matmul_peak", {})
    fp32_peak, bf16_peak = _get(peak, "fp32", "gflops"), _get(peak, "bf16", "gflops")
    lines = [
        f"Machine: {m['cpu']}{isa_text(m)}, {m['cores_available']} cores, torch {m['torch']}, {m['threads']} threads, "
        f"Python {m['python']}; {results['date']}. Cores busy with other work at start / end: "
        f"{m.get('busy_cores_at_start', '?')} / {m.get('busy_cores_at_end', '?')}.",
        f"Command: `{results['command']}`{at_code(results)} ({results.get('minutes', '?')} min).",
        f"Training: {results['settings']['timed_steps']} timed steps after {results['settings']['warmup_steps']} "
        f"warm-up steps, batches of ≤ {results['settings']['max_tokens']} padded tokens{_rounds(results)}. Decoding: dev split "
        f"({results['settings']['decode_sentences']}), 64 sentences at a time (nmt: a finished one's place goes to the next), generation time only, fp32 unless the row says bf16 decoding.",
        f"Matrix-multiply peak measured in the same run: fp32 {_num(fp32_peak)}{fp32_libraries(peak)} GFLOP/s, "
        + (f"bf16 {_num(bf16_peak)} GFLOP/s." if bf16_peak else f"bf16 not measured ({peak.get('bf16_not_measured')})."),
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
            f"| {label} | {_num(train.get('tokens_per_s'))}{_spread(train)} | {_num(train.get('gflops_per_s'), 1)} "
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


def primary(res: dict) -> str | None:
    """The precision an nmt model was measured in first: its twins' and its decoding checkpoint's."""
    return next(iter(res.get("train") or {}), None)


def ratio_table(results: dict) -> list[str]:
    first = primary(nmt_variants(results)[0][2]) if nmt_variants(results) else None
    others = " (fp32 in brackets)" if first == "bf16" else ""
    lines = [
        f"Ratios nmt / peer (higher is better for nmt); nmt trains in {first}{others}, peers in fp32.",
        "Matched = the peer's own model: fairseq ↔ nmt luong (fairseq has Luong attention only), OpenNMT-py ↔ nmt "
        "enc 2×128 (its brnn needs a 2 × 128 encoder), JoeyNMT ↔ nmt (the default model).",
        "",
        "| nmt model | peer | matched | train | greedy sent/s | greedy tok/s | beam-5 sent/s | beam-5 tok/s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, variant, res in nmt_variants(results):
        ours = _get(res, "train", primary(res), "tokens_per_s")
        fp32 = _get(res, "train", "fp32", "tokens_per_s") if primary(res) != "fp32" else None
        for label, key in ((name, "decode"), (f"{name}, bf16 decoding", "decode_bf16")):
            if not res.get(key):
                continue
            dec = {k: res[key].get(k, {}) for k in ("beam1", "beam5")}
            for peer, peer_res in results.get("peers", {}).items():
                t = _get(peer_res, "train", "fp32", "tokens_per_s")
                pd = {k: _get(peer_res, "decode", k, default={}) or {} for k in ("beam1", "beam5")}
                train = _ratio(ours, t) + (f" ({_ratio(fp32, t)})" if fp32 else "")
                lines.append(
                    f"| {label} | {peer} | {'yes' if matches(results, peer, variant) else 'no'} "
                    f"| {train if key == 'decode' else ''} | "
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


def _matched(results: dict, peer: str) -> tuple[str, dict]:
    """The nmt model that is the peer's own (see ``matches``; the default model if none is)."""
    for name, variant, res in nmt_variants(results):
        if matches(results, peer, variant):
            return name, res
    return nmt_variants(results)[0][0], nmt_variants(results)[0][2]


def targets(results: dict, fp32_peak, bf16_peak) -> list[str]:
    lines = ["Targets (issue 4), each against the fastest peer, by the nmt model matched to that peer:", ""]

    def verdict(ratio, goal):
        if ratio is None:  # nmt's run failed: nothing was measured to meet the target or miss it
            return "not measured"
        return "met" if ratio >= goal else "NOT met"

    peer, value = fastest_peer(results, "train", "fp32", "tokens_per_s")
    if peer:
        name, res = _matched(results, peer)
        train = _get(res, "train", primary(res), "tokens_per_s")
        ratio = train / value if train else None
        lines.append(f"- training ≥ 2× the fastest peer ({peer}, {_num(value)} tok/s): {name} {primary(res)} {_num(train)} tok/s "
                     f"= {_ratio(train, value)} → {verdict(ratio, 2)}")
    for key, label in (("beam5", "beam-5"), ("beam1", "greedy")):
        peer, value = fastest_peer(results, "decode", key, "sentences_per_s")
        if peer:
            name, res = _matched(results, peer)
            for decode, how in (("decode", "fp32"), ("decode_bf16", "bf16")):
                ours = _get(res, decode, key, "sentences_per_s")
                if ours is None:
                    continue
                ratio = ours / value
                per_token = _ratio(_get(res, decode, key, "tokens_per_s"), _get(results, "peers", peer, "decode", key,
                                                                              "tokens_per_s"))
                lengths = (f"{_num(_get(res, decode, key, 'mean_output_len'), 1)} vs "
                           f"{_num(_get(results, 'peers', peer, 'decode', key, 'mean_output_len'), 1)} pieces")
                lines.append(f"- {label} decoding ≥ 3× the fastest peer ({peer}, {_num(value, 1)} sent/s): {name} "
                             f"({how}) {_num(ours, 1)} sent/s = {_ratio(ours, value)} → {verdict(ratio, 3)} "
                             f"(per generated token {per_token}; mean output {lengths})")
    for name, _, res in nmt_variants(results):
        for precision, peak_value, peak_name in (("bf16", bf16_peak, "bf16"), ("bf16", fp32_peak, "fp32"),
                                                 ("fp32", fp32_peak, "fp32")):
            g = _get(res, "train", precision, "gflops_per_s")
            if g and peak_value:
                frac = g / peak_value
                lines.append(f"- {name} training ({precision}) at ≥ 50 % of the {peak_name} matmul peak: "
                             f"{_num(g, 1)} of {_num(peak_value)} GFLOP/s = {frac:.0%} → {verdict(frac, 0.5)}")
    return lines
