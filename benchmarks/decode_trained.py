"""Decoding speed of equally trained models, side by side: every toolkit's weights from the
quality benchmark (``make bench-quality``: the same wall-clock training budget each) translate the
test split with greedy and beam-5 search, in interleaved rounds (every toolkit once a round, the
fastest round kept). Always the whole test split: each peer decodes the test set its quality run
prepared (fairseq binarised it then).

    python benchmarks/decode_trained.py --rounds 2          (make bench-decode, after bench-quality)

Why beside bench.py's decoding: bench.py decodes 60-step models, and those write very different
lengths from toolkit to toolkit (nmt's mostly run to the length limit, fairseq's beam stops at
half that), so its sentences/s compare different amounts of work. Models trained for the same
budget write translations of realistic length, and what is timed is what a user waits for.

What is matched: the test split, 64 sentences at a time (``--decode-batch``; the peers batch by
batch; nmt gives a finished sentence's place in the batch to the next one, ``nmt.search``), the
length limit (2 × source + 10 tokens, the source's </s> counted: 2n + 12 for n pieces), beam 5 with
length penalty 0.6, 2 threads, generation time only (encoder and search, the peers' own search
functions, one pass per batch). nmt's beam search runs with each stopping rule of ``--stopping``:
``bound`` (nmt's default, exact: a sentence stops when no live hypothesis can still beat its best
finished one) and ``finished`` (a sentence stops once 5 hypotheses have finished: fairseq's own
rule, so the like-for-like row against fairseq; OpenNMT-py stops when the best live hypothesis
ends, a rule of its own). With ``--unscored``, a row of greedy search as ``nmt translate`` runs it,
without log-probabilities (the peers' searches compute theirs, so that row is not like for like in
work). What is not: the models are each toolkit's own (peers/common.py; OpenNMT-py's encoder is
2 × 128, fairseq's attention is Luong), so the matched pair for fairseq is nmt's Luong model and
for OpenNMT-py nmt's enc128 twin (``NMT_MODELS``), each decoded when ``quality.py --nmt-variant
luong`` / ``enc128`` has trained it.

Each search's output is scored (sacreBLEU, test BLEU), so a faster precision (bf16, int8) shows
what it costs in quality.
Also, for greedy search, the achieved GFLOP/s against the matmul peak measured in the same run
(``flops.forward_flops``: greedy costs the model's forward pass over its own output, the encoder
once per sentence; each peer counted with its matched nmt model's dimensions, output lengths taken
as their mean). It says how far a decoding ratio can go on this machine: a peer at x % of the
fp32 peak can be beaten at most 100 / x times in fp32.
Results: benchmarks/results/<date>-<machine>-decode-trained.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import DECODE_BATCH, PEER_DIR, THREADS, begin, finish, measured, peer_list, precision_list  # noqa: E402
from flops import Dims, forward_flops  # noqa: E402
from quality import score, test_text  # noqa: E402
from report import at_code, fp32_libraries, isa_text  # noqa: E402

log = logging.getLogger("bench")
# nmt models of the quality benchmark (quality.py's run folders) and the peer each is matched to.
NMT_MODELS = {"nmt": ("nmt-run", "joeynmt"), "nmt luong": ("nmt-luong-run", "fairseq"),
              "nmt enc 2×128": ("nmt-enc128-run", "opennmt")}


def decode_precisions(spec: str) -> list[str]:
    """--precisions of decoding: 'auto' (fp32, bf16 where it is native, int8), or a comma list."""
    import typing

    from nmt.config import DecodePrecision
    from nmt.hardware import native_bf16

    auto = ["fp32"] + (["bf16"] if native_bf16("cpu") else []) + ["int8"]
    return precision_list(spec, auto, [p for p in typing.get_args(DecodePrecision) if p != "auto"])


def jobs(args, quality: Path) -> list[tuple[str, list, str]]:
    """(name, command without --out and nmt's --hyps, results key) of every decoding measurement
    that can run."""
    py, script = sys.executable, HERE / "nmt_runs.py"
    src = test_text(Path(args.work), quality, "es", 0)
    out = []
    for name, (folder, _) in NMT_MODELS.items():
        checkpoint = quality / folder / "last"
        if not (checkpoint / "model.safetensors").is_file():
            continue
        decode = [py, script, "decode", "--checkpoint", checkpoint, "--src", src, "--repeats", 1,
                  "--decode-batch", args.decode_batch]
        for precision in args.precisions:
            for stopping in args.stopping:
                label = f"{name} ({precision})" if stopping == args.stopping[0] else f"{name} ({precision}, {stopping})"
                for beam in args.beams:
                    if beam == 1 and stopping != args.stopping[0]:
                        continue  # greedy search has no stopping rule: once per precision
                    out.append((label, [*decode, "--beam", beam, "--precision", precision, "--stopping", stopping],
                                f"beam{beam}"))
            if args.unscored and 1 in args.beams:  # greedy as nmt translate runs it: no log-probabilities
                out.append((f"{name} ({precision}, unscored)",
                            [*decode, "--beam", 1, "--precision", precision, "--unscored"], "beam1"))
    for peer in peer_list(args.peers):
        peer_work, python = quality / peer, PEER_DIR / peer / "venv" / "bin" / "python"
        if not (peer_work.is_dir() and python.is_file()):
            log.warning("%s: no trained model in %s (run quality.py first)", peer, peer_work)
            continue
        for beam in args.beams:
            out.append((peer, [python, HERE / "peers" / f"run_{peer}.py", "decode", "--work", args.work,
                               "--peer-work", peer_work, "--threads", THREADS, "--split", "test",
                               "--decode-batch", args.decode_batch,
                               "--beam", beam, "--repeats", 1], f"beam{beam}"))
    return out


def _stem(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "-").replace("(", "").replace(")", "")


def run(args, quality: Path, tmp: Path) -> dict:
    """Every job once a round, ``args.rounds`` rounds; per job the fastest round and all rounds."""
    found: dict = {}
    planned = jobs(args, quality)  # the same jobs every round (and a missing model warned of once)
    for r in range(1, args.rounds + 1):
        for name, cmd, key in planned:
            stem = f"{_stem(name)}-{key}-r{r}"
            kept = tmp / f"{stem}.hyp"  # this search's translations, for its BLEU
            extra = ["--hyps", kept] if name.startswith("nmt") else []
            result = measured([*cmd, *extra, "--out", tmp / f"{stem}.json"], tmp / f"{stem}.json",
                              tmp / f"{stem}.log", args.timeout)
            # a peer writes every search to one file: copied away before its next search
            if not extra and "hyps" in result and Path(result["hyps"]).is_file():
                shutil.copyfile(result["hyps"], kept)
                result["hyps"] = str(kept)
            slot = found.setdefault(name, {}).setdefault(key, {"rounds": []})
            slot["rounds"].append(result)
            ok = [x for x in slot["rounds"] if "error" not in x]
            if ok:
                slot["best"] = max(ok, key=lambda x: x["sentences_per_s"])
    return found


def add_bleu(found: dict, work: Path, refs: Path) -> None:
    """sacreBLEU of every measurement's output (the last round's: decoding is deterministic), into
    its slot as "scores"; nmt writes text, the peers SentencePiece pieces."""
    for name, by_beam in found.items():
        for slot in by_beam.values():
            hyps = next((x["hyps"] for x in reversed(slot["rounds"]) if "hyps" in x), None)
            if hyps and Path(hyps).is_file():
                kind = "text" if name.startswith("nmt") else "pieces"
                slot["scores"] = score({"decode": {"hyps": hyps}, "hyps_are": kind}, work, refs)


def model_dims(quality: Path, tgt_vocab: int) -> dict:
    """Dimensions of every nmt model decoded here, by name (from its checkpoint's config)."""
    dims = {}
    for name, (folder, _) in NMT_MODELS.items():
        path = quality / folder / "last" / "checkpoint.json"
        if path.is_file():
            model = json.loads(path.read_text(encoding="utf-8"))["config"]["model"]
            dims[name] = Dims.from_config(SimpleNamespace(**model), tgt_vocab)
    return dims


def greedy_gflops(results: dict) -> dict:
    """Per toolkit: greedy GFLOP/s of its fastest round and its share of the fp32 and bf16 peaks."""
    src = np.asarray(results["settings"]["source_lengths"], dtype=np.float64)
    peak = results.get("matmul_peak", {})
    out = {}
    for name, by_beam in results["toolkits"].items():
        best = by_beam.get("beam1", {}).get("best")
        base = name.rsplit(" (", 1)[0]
        model = base if base in results["dims"] else next((n for n, (_, p) in NMT_MODELS.items() if p == name), None)
        if best is None or model not in results["dims"]:
            continue
        dims = Dims(**results["dims"][model])
        flops = forward_flops(dims, src, np.full(len(src), best["mean_output_len"]))
        rate = flops * best["sentences_per_s"] / len(src) / 1e9
        out[name] = {"gflops": rate, "model": model,
                     **{f"share_{p}": rate / peak[p]["gflops"] for p in ("fp32", "bf16") if p in peak}}
    return out


def render(results: dict) -> str:
    m, s, runs = results["machine"], results["settings"], results["toolkits"]
    out = [f"# Decoding equally trained models — {results['date'][:10]}, {m['cpu']}{isa_text(m)}, "
           f"{m['cores_available']} cores",
           "", f"Command: `{results['command']}`{at_code(results)} ({results['minutes']} min). torch {m['torch']}, {s['threads']} threads. "
           f"Models: {s['models']}. The {s['sentences']} test verses, {s.get('decode_batch', DECODE_BATCH)} sentences at a time (nmt: a finished "
           f"one's place goes to the next), generation time only, {s['rounds']} interleaved rounds (the fastest kept; every round's sent/s in brackets).", "",
           "| model | " + " | ".join(f"{b} sent/s | {b} tok/s | {b} out len | {b} BLEU" for b in s["beam_names"])
           + " |", "|---|" + "---:|" * (4 * len(s["beam_names"]))]
    for name, by_beam in runs.items():
        cells = []
        for key in s["beam_keys"]:
            if key not in by_beam:  # not run: greedy of a second stopping rule
                cells += ["—", "", "", ""]
                continue
            slot = by_beam[key]
            best = slot.get("best")
            if best is None:
                cells += ["failed", "", "", ""]
                continue
            each = " / ".join(f"{x['sentences_per_s']:.1f}" for x in slot["rounds"] if "error" not in x)
            bleu = f"{slot['scores']['bleu']['score']:.2f}" if slot.get("scores") else "—"
            cells += [f"{best['sentences_per_s']:.1f} ({each})", f"{best['tokens_per_s']:,.0f}",
                      f"{best['mean_output_len']:.1f}", bleu]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "Ratios nmt / peer, sentences/s (tokens/s in brackets):", "",
            "| nmt model | peer | matched | " + " | ".join(s["beam_names"]) + " |",
            "|---|---|---|" + "---:|" * len(s["beam_names"])]
    for name in (n for n in runs if n.startswith("nmt")):
        base = name.rsplit(" (", 1)[0]
        for peer in (p for p in runs if not p.startswith("nmt")):
            cells = []
            for key in s["beam_keys"]:
                a, b = runs[name].get(key, {}).get("best"), runs[peer].get(key, {}).get("best")
                cells.append(f"{a['sentences_per_s'] / b['sentences_per_s']:.2f}× "
                             f"({a['tokens_per_s'] / b['tokens_per_s']:.2f}×)" if a and b else "—")
            matched = "no"
            if NMT_MODELS.get(base, ("", ""))[1] == peer:  # and fairseq's stopping rule is nmt's "finished"
                matched = "model + stopping rule" if peer == "fairseq" and name.endswith(", finished)") else "model"
                matched += "; nmt computes no scores" if name.endswith(", unscored)") else ""
            out.append(f"| {name} | {peer} | {matched} | " + " | ".join(cells) + " |")
    rates, peak = greedy_gflops(results), results.get("matmul_peak", {})
    if rates and "fp32" in peak:
        out += ["", f"Greedy search, analytic FLOPs (`flops.forward_flops`, each peer with its matched nmt model's "
                f"dimensions) against the matmul peak of this run: fp32 {peak['fp32']['gflops']:.0f}{fp32_libraries(peak)}, "
                + (f"bf16 {peak['bf16']['gflops']:.0f} GFLOP/s." if "bf16" in peak else
                   f"bf16 not measured ({peak.get('bf16_not_measured')})."), "",
                "| model | counted as | greedy GFLOP/s | of the fp32 peak | of the bf16 peak |", "|---|---|---:|---:|---:|"]
        for name, r in rates.items():
            bf16 = f"{100 * r['share_bf16']:.0f} %" if "share_bf16" in r else "—"
            out.append(f"| {name} | {r['model']} | {r['gflops']:.1f} | {100 * r['share_fp32']:.0f} % | {bf16} |")
    return "\n".join(out + [""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="all", help="comma-separated peers, 'all', or '' for nmt alone")
    parser.add_argument("--beams", default="1,5", help="beam sizes (1 = greedy)")
    parser.add_argument("--precisions", default="auto", help="nmt decoding precisions, comma-separated; "
                        "auto: fp32, bf16 where bf16 is native, int8")
    parser.add_argument("--stopping", default="bound,finished", help="nmt beam search's stopping rules (the first is "
                        "the rows' default; greedy runs once)")
    parser.add_argument("--unscored", action="store_true", help="also greedy search without log-probabilities "
                        "(what nmt translate runs; the peers compute theirs), a row of its own")
    parser.add_argument("--decode-batch", type=int, default=DECODE_BATCH,
                        help="sentences decoded at a time, by nmt and every peer alike (default: the harness's 64)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per decoding process")
    parser.add_argument("--wait-quiet", type=float, default=600)
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="", help="results file stem (default <date>-<machine>-decode-trained)")
    args = parser.parse_args(argv)
    args.beams = [int(b) for b in args.beams.split(",")]
    args.precisions = decode_precisions(args.precisions)
    args.stopping = [p for p in args.stopping.split(",") if p]
    work, tmp, results = begin("decode_trained.py", "decode-trained", args, argv)
    args.work = work
    quality = HERE / ".work" / "quality"
    if not quality.is_dir():
        raise SystemExit(f"no trained models in {quality}: run benchmarks/quality.py (make bench-quality) first")
    budgets = {}  # training budget and steps of every model decoded here (quality.py's <tag>-train.json)
    tags = [folder[: -len("-run")] for folder, _ in NMT_MODELS.values()] + peer_list(args.peers)
    for tag in tags:
        path = quality / f"{tag}-train.json"
        if path.is_file():
            train = json.loads(path.read_text(encoding="utf-8"))
            budgets[tag] = {k: train.get(k) for k in ("budget_minutes", "steps")}
    names = {1: "greedy", 5: "beam-5"}
    results["settings"] = {
        "threads": THREADS, "rounds": args.rounds, "stopping": args.stopping, "decode_batch": args.decode_batch,
        "beam_keys": [f"beam{b}" for b in args.beams],
        "beam_names": [names.get(b, f"beam-{b}") for b in args.beams],
        "sentences": len(test_text(work, quality, "es", 0).read_text(encoding="utf-8").splitlines()),
        "models": "the last weights of each toolkit's quality.py run (" + ", ".join(
            f"{k} {v['steps']} steps in {v['budget_minutes']:g} min" for k, v in sorted(budgets.items())
            if v.get("steps")) + ")",
        "trained": budgets,
    }
    from nmt.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(work / "tokenizer")  # the same pieces for every toolkit here
    src_lines = test_text(work, quality, "es", 0).read_text(encoding="utf-8").splitlines()
    results["settings"]["source_lengths"] = [len(ids) for ids in tokenizer.encode_src(src_lines)]  # with </s>
    results["dims"] = {name: vars(d) for name, d in model_dims(quality, tokenizer.tgt_vocab).items()}
    results["matmul_peak"] = measured([sys.executable, HERE / "nmt_runs.py", "peak", "--out", tmp / "peak.json"],
                                      tmp / "peak.json", tmp / "peak.log", args.timeout)
    results["toolkits"] = run(args, quality, tmp)
    add_bleu(results["toolkits"], work, test_text(work, quality, "en", 0))
    results["greedy_gflops"] = greedy_gflops(results)
    finish(results, render, args, suffix="-decode-trained")


if __name__ == "__main__":
    main()
