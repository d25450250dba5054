"""nmt's speed benchmark, and the same measurements of peer toolkits side by side.

    python benchmarks/bench.py                       nmt only               (make bench)
    python benchmarks/bench.py --peers all           nmt and every installed peer (make bench-peers)
    python benchmarks/bench.py --steps 50 --decode-sentences 200      a quicker, rougher run

Each measurement runs in its own process (its peak RSS is that process's alone: its VmHWM, which
it records) with 2 threads (torch.set_num_threads(2), OMP_NUM_THREADS=MKL_NUM_THREADS=2). What is
measured and what is matched between toolkits: benchmarks/README.md. Results:
benchmarks/results/<date>-<machine>.json and .md, or <date>-<machine>-2, -3, … where a result of
that name is there already (never written over).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from common import DECODE_BATCH, at_least_one  # noqa: E402  (the peers' decoding batch; nmt is given the same)
from report import render_markdown  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402

from nmt.atomic import atomic_write_text  # noqa: E402
from nmt.hardware import busy_cores, native_bf16  # noqa: E402

THREADS = 2
PEERS = ("fairseq", "opennmt", "joeynmt")
PEER_DIR = HERE / ".peers"
MAX_LOAD = 0.3  # cores busy with other work above which a measurement would be disturbed

log = logging.getLogger("bench")


def child_env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",  # OpenNMT-py / fairseq checkpoints are pickles
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def measured(cmd: list[str], out: Path, log_path: Path, timeout: float) -> dict:
    """Run one measurement process; its JSON result (with its own peak RSS, which it records:
    ``common.own_peak_rss``) plus its wall time."""
    out.unlink(missing_ok=True)
    log.info("$ %s", " ".join(str(c) for c in cmd))
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=sink, stderr=subprocess.STDOUT, env=child_env(),
                                cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not out.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        log.error("failed (exit %s); last lines of %s:\n%s", code, log_path, "\n".join(tail))
        return {"error": f"exit {code}; see {log_path.relative_to(ROOT)}", "log_tail": tail[-5:]}
    result = json.loads(out.read_text(encoding="utf-8"))
    if "peak_rss_mib" not in result:  # no /proc/self/status there
        result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
        result["peak_rss_from"] = "ru_maxrss (no VmHWM): at least this harness's own peak, inherited across fork"
    result["process_wall_s"] = round(wall, 2)
    return result


# Environment variables that change which instructions the math libraries use: a run made under
# one of them measures a lesser CPU (the AVX2 stand-ins), so the results say so.
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE",
              "ATEN_CPU_CAPABILITY")


def isa_limits() -> dict[str, str]:
    return {name: os.environ[name] for name in ISA_LIMITS if name in os.environ}


def command_line(script: str, argv: list[str]) -> str:
    """The command as a user would retype it, ISA limits in force included."""
    return "".join(f"{name}={value} " for name, value in isa_limits().items()) + " ".join(
        [f"python benchmarks/{script}", *argv])


def code_version(root: Path = ROOT) -> str | None:
    """The commit measured ("+changes" where the tracked code differed from it; results and prose
    do not count), None outside git: what a result was measured on, recorded by the harness rather
    than remembered."""
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        changes = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "nmt", "pipelines",
                                  "configs", "benchmarks", ":!benchmarks/results", ":!*.md"],
                                 capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("+changes" if changes.stdout.strip() else "")


def machine() -> dict:
    import torch

    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                 platform.processor())
    flags = set(next((line for line in info if line.startswith("flags")), "").split())

    def field(name: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in info if ln.split(":")[0].strip() == name), "")

    return {
        "host": socket.gethostname(),
        "cpu": model,
        # The model name of a VM can hide the generation (AMD family 25 = Zen 3/4, 26 = Zen 5).
        "cpu_vendor_family_model": f"{field('vendor_id')} {field('cpu family')} {field('model')}",
        "cores_available": len(os.sched_getaffinity(0)),
        "avx512_bf16": "avx512_bf16" in flags,
        # AMX (Intel since Sapphire Rapids) runs bf16 and int8 products on tiles, several times
        # the AVX-512 rate, so a result without it is not comparable with one that has it.
        "amx": [f for f in ("amx_bf16", "amx_int8") if f in flags],
        "avx512_vnni": "avx512_vnni" in flags,
        "isa_limits": isa_limits(),
        "threads": THREADS,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def machine_slug(m: dict) -> str:
    """'AMD EPYC' with 2 cores → 'amd-epyc-2c': the <machine> part of the results file name."""
    words = "".join(ch if ch.isalnum() else " " for ch in m["cpu"].lower()).split()
    noise = {"processor", "cpu", "core", "with", "radeon", "graphics", "tm", "r"}
    return "-".join([w for w in words if w not in noise][:4] + [f"{m['cores_available']}c"])


def wait_for_quiet(max_wait: float) -> float:
    """Measurements on a busy machine are meaningless: wait until other processes keep less than
    ``MAX_LOAD`` cores busy (a 2-second sample; the load average lags by minutes), or give up."""
    t0 = time.monotonic()
    while (busy := busy_cores(2.0)) > MAX_LOAD and time.monotonic() - t0 < max_wait:
        log.warning("%.2f cores busy with other work: waiting for the machine to be quiet", busy)
        time.sleep(15)
    if busy > MAX_LOAD:
        log.warning("still %.2f cores busy: results will be disturbed", busy)
    return busy


def train_jobs(args) -> list[tuple[str, str, str]]:
    """Every training measurement of a run: ("nmt", variant, precision) and ("peer", name, "fp32").
    The default model in every precision asked for; its twins (nmt_runs.VARIANTS) in the first."""
    jobs = [("nmt", "bahdanau", precision) for precision in args.precisions]
    jobs += [("nmt", variant, args.precisions[0]) for variant in args.twins]
    return jobs + [("peer", peer, "fp32") for peer in peer_list(args.peers)]


def run_training(args, work: Path, tmp: Path) -> dict:
    """Every training measurement ``args.rounds`` times, interleaved (nmt, peers, nmt, peers, …), so a
    spell of a slower machine touches every toolkit alike; each keeps its fastest round (noise on a
    shared machine only ever slows a run down; decoding keeps its fastest pass the same way).
    Returns {job: {"result": fastest round, "peer_work": …}}."""
    rounds: dict = {job: [] for job in train_jobs(args)}
    for r in range(args.rounds):
        for job in rounds:
            kind, name, precision = job
            tag = f"r{r + 1}" if args.rounds > 1 else ""
            if kind == "nmt":
                rounds[job].append((nmt_train(args, work, tmp, name, precision, tag), None))
            else:
                rounds[job].append(peer_train(name, args, work, tmp, tag))
    chosen = {}
    for job, runs in rounds.items():
        ok = [(res, pw) for res, pw in runs if "tokens_per_s" in res]
        if not ok:
            chosen[job] = {"result": runs[-1][0], "peer_work": runs[-1][1]}
            continue
        result, peer_work = max(ok, key=lambda run: run[0]["tokens_per_s"])
        result = {**result, "rounds_tokens_per_s": [round(res.get("tokens_per_s", 0.0)) for res, _ in runs]}
        chosen[job] = {"result": result, "peer_work": peer_work}
    return chosen


def run_nmt(args, work: Path, tmp: Path, trained: dict) -> dict:
    """nmt's default model in every precision asked for, then each twin in the first — the Luong one
    matched to fairseq, the 2 x 128-encoder one to OpenNMT-py — under results["nmt"][<twin>]."""
    out = nmt_model(args, work, tmp, "bahdanau", args.precisions, trained)
    for variant in args.twins:
        out[variant] = nmt_model(args, work, tmp, variant, args.precisions[:1], trained)
    reference = Path(args.reference_checkpoint) if args.reference_checkpoint else None
    if reference is not None and reference.exists():
        out["decode_reference"] = {"checkpoint": str(reference),
                                   **nmt_decodes(args, work, tmp, reference, "nmt-decode-reference", "fp32")}
    return out


def nmt_train(args, work: Path, tmp: Path, variant: str, precision: str, tag: str) -> dict:
    name = f"nmt-{variant}-train-{precision}{'-' + tag if tag else ''}"
    run_dir = work.parent / "runs" / name
    return measured(
        [sys.executable, HERE / "nmt_runs.py", "train", "--out", tmp / f"{name}.json", "--precision", precision,
         "--work", work, "--run-dir", run_dir, "--warmup", args.warmup, "--steps", args.steps,
         "--max-tokens", args.max_tokens, "--variant", variant],
        tmp / f"{name}.json", tmp / f"{name}.log", args.timeout)


def nmt_model(args, work: Path, tmp: Path, variant: str, precisions: list[str], trained: dict) -> dict:
    """The training results, then decoding of the dev text with the first precision's checkpoint."""
    out: dict = {"train": {p: trained[("nmt", variant, p)]["result"] for p in precisions}, "decode": {}}
    first = out["train"][precisions[0]]
    if "checkpoint" in first:
        # fp32 decoding is the default ("decode"); bf16 autocast decoding is measured beside it
        # when bf16 is measured at all (on CPUs without native bf16 it is emulated, many times slower).
        decodes = [("fp32", "decode")] + ([("bf16", "decode_bf16")] if "bf16" in args.precisions else [])
        for precision, key in decodes:
            out[key] = nmt_decodes(args, work, tmp, first["checkpoint"], f"nmt-{variant}-decode-{precision}",
                                   precision, keep_hyps=True)
    return out


def nmt_decodes(args, work: Path, tmp: Path, checkpoint, prefix: str, precision: str, keep_hyps: bool = False) -> dict:
    """Decode the dev text with ``checkpoint`` at every beam size asked for: {"beam1": …, "beam5": …}."""
    py, script, dev = sys.executable, HERE / "nmt_runs.py", dev_source(work, args)
    out = {}
    for beam in args.beams:
        name = f"{prefix}-beam{beam}"
        hyps = ["--hyps", tmp / f"{name}.hyp"] if keep_hyps else []
        out[f"beam{beam}"] = measured(
            [py, script, "decode", "--out", tmp / f"{name}.json", "--checkpoint", checkpoint,
             "--src", dev, "--beam", beam, "--precision", precision, "--decode-batch", DECODE_BATCH, *hyps],
            tmp / f"{name}.json", tmp / f"{name}.log", args.timeout)
    return out


def dev_source(work: Path, args) -> Path:
    """The dev source text (optionally its first N lines), raw for nmt and as pieces for peers."""
    src = work / "data" / "dev.es"
    if not args.decode_sentences:
        return src
    cut = work / f"dev.first{args.decode_sentences}.es"
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)[: args.decode_sentences]
    cut.write_text("".join(lines), encoding="utf-8")
    return cut


def add_peer_flops(train: dict) -> None:
    """The peer's own model through the same analytic count (its encoder width, its attention:
    Luong for fairseq, additive for the others), then drop the lengths."""
    import numpy as np

    from flops import Dims, training_flops

    src, tgt = train.pop("src_lens", None), train.pop("tgt_lens", None)
    if src is None:
        return
    model = train.get("model", {})
    vocab = len((WORK / "pieces" / "vocab.tsv").read_text(encoding="utf-8").splitlines()) + 4
    attention = "luong" if model.get("attention", "").startswith("luong") else "bahdanau"
    dims = Dims(256, model.get("enc_hidden_per_direction", 256), 2, 256, 1, 256, True, vocab, attention)
    flops = training_flops(dims, np.array(src), np.array(tgt))
    train["train_flops"] = flops
    train["gflops_per_s"] = flops / train["seconds"] / 1e9
    train["flops_per_target_token"] = flops / train["target_tokens"]


def peer_args(peer: str, args, work: Path, peer_work: Path) -> tuple[Path, Path, list]:
    python = PEER_DIR / peer / "venv" / "bin" / "python"
    common = ["--work", work, "--peer-work", peer_work, "--max-tokens", args.max_tokens, "--threads", THREADS,
              "--sentences", args.decode_sentences]
    return python, HERE / "peers" / f"run_{peer}.py", common


def peer_train(peer: str, args, work: Path, tmp: Path, tag: str) -> tuple[dict, Path | None]:
    """Prepare a fresh work folder (fairseq would resume from an old checkpoint_last.pt) and train."""
    if not (PEER_DIR / peer / ".installed").is_file():
        return {"error": f"not installed (bash benchmarks/peers/setup.sh {peer}; see {PEER_DIR / peer}/install.log)"}, None
    peer_work = PEER_DIR / peer / (f"work-{tag}" if tag else "work")
    shutil.rmtree(peer_work, ignore_errors=True)
    python, script, common = peer_args(peer, args, work, peer_work)
    name = f"{peer}{'-' + tag if tag else ''}"
    prep = measured([python, script, "prepare", "--out", tmp / f"{name}-prepare.json", *common],
                    tmp / f"{name}-prepare.json", tmp / f"{name}-prepare.log", args.timeout)
    if "error" in prep:
        return {"error": "prepare: " + prep["error"]}, None
    train = measured([python, script, "train", "--out", tmp / f"{name}-train.json", "--warmup", args.warmup,
                      "--steps", args.steps, *common], tmp / f"{name}-train.json", tmp / f"{name}-train.log",
                     args.timeout)
    if "error" not in train:
        add_peer_flops(train)
    return train, peer_work


def run_peer(peer: str, args, work: Path, tmp: Path, trained: dict) -> dict:
    """The peer's training result, then decoding with the model that run trained."""
    job = trained[("peer", peer, "fp32")]
    train, peer_work = job["result"], job["peer_work"]
    if peer_work is None:
        return {"error": train.get("error", "not trained")}
    out: dict = {"train": {"fp32": train}, "decode": {}}
    if "error" in train:
        return out
    python, script, common = peer_args(peer, args, work, peer_work)
    for beam in args.beams:
        name = f"{peer}-decode-beam{beam}"
        out["decode"][f"beam{beam}"] = measured(
            [python, script, "decode", "--out", tmp / f"{name}.json", "--beam", beam, *common],
            tmp / f"{name}.json", tmp / f"{name}.log", args.timeout)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="", help="comma-separated peers, or 'all' (default: none)")
    parser.add_argument("--warmup", type=at_least_one, default=10, help="training steps before the clock starts")
    parser.add_argument("--steps", type=at_least_one, default=100, help="timed training steps")
    parser.add_argument("--max-tokens", type=int, default=3000, help="batch size (see README)")
    parser.add_argument("--precisions", default="auto",
                        help="nmt training precisions to measure, the first also for the twins; "
                             "auto: bf16,fp32 where bf16 is native (nmt.hardware.native_bf16), else fp32")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--twins", default="luong,enc128",
                        help="nmt twins of the default model, trained in the first precision: luong (fairseq's attention), "
                             "enc128 (OpenNMT-py's encoder width); '' for none")
    parser.add_argument("--decode-sentences", type=int, default=0, help="first N dev sentences (0 = all)")
    parser.add_argument("--reference-checkpoint", default=str(ROOT / "runs" / "bible-es-en" / "best"),
                        help="a fully trained nmt checkpoint, decoded too if it exists (read only)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="training measurements per toolkit, interleaved; the fastest round is kept")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement process")
    parser.add_argument("--wait-quiet", type=float, default=600,
                        help=f"seconds to wait, at most, until other processes keep fewer than {MAX_LOAD} cores busy")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="",
                        help="results file stem (default <date>-<machine>; -2, -3, … added where it is taken)")
    args = parser.parse_args(argv)
    args.precisions = bench_precisions(args.precisions)
    args.beams = [int(b) for b in args.beams.split(",")]
    args.twins = [t for t in args.twins.split(",") if t]
    work, tmp, results = begin("bench.py", "runs", args, argv)
    results["settings"] = {"warmup_steps": args.warmup, "timed_steps": args.steps, "max_tokens": args.max_tokens,
                           "beams": args.beams, "decode_sentences": args.decode_sentences or "all dev",
                           "threads": THREADS, "rounds": args.rounds, "precisions": args.precisions}
    results["matmul_peak"] = measured([sys.executable, HERE / "nmt_runs.py", "peak", "--out", tmp / "peak.json"],
                                      tmp / "peak.json", tmp / "peak.log", args.timeout)
    trained = run_training(args, work, tmp)
    results["nmt"] = run_nmt(args, work, tmp, trained)
    results["peers"] = {peer: run_peer(peer, args, work, tmp, trained) for peer in peer_list(args.peers)}
    finish(results, render_markdown, args)


def precision_list(spec: str, auto: list[str], known: list[str]) -> list[str]:
    """--precisions: 'auto' (the list ``auto``), or a comma list of ``known`` precisions."""
    if spec == "auto":
        return auto
    precisions = [p for p in spec.split(",") if p]
    if not precisions or set(precisions) - set(known):
        raise SystemExit(f"--precisions: expected 'auto' or a comma list of {', '.join(known)}; got {spec!r}")
    return precisions


def bench_precisions(spec: str) -> list[str]:
    """--precisions of training: 'auto' (bf16 then fp32 where bf16 is native, else fp32 alone), or a
    comma list."""
    return precision_list(spec, ["bf16", "fp32"] if native_bf16("cpu") else ["fp32"], ["bf16", "fp32"])


def peer_list(spec: str) -> list[str]:
    """--peers: 'all', or comma-separated names ('' = none)."""
    return list(PEERS) if spec == "all" else [p for p in spec.split(",") if p]


def begin(script: str, scratch: str, args, argv: list[str] | None) -> tuple[Path, Path, dict]:
    """What every benchmark run starts with: logging, the prepared work folder, a scratch folder
    (benchmarks/.work/<scratch>), a quiet machine, and the results' date, command and machine."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = ensure_work(WORK)
    tmp = HERE / ".work" / scratch
    tmp.mkdir(parents=True, exist_ok=True)
    busy = wait_for_quiet(args.wait_quiet)
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(script, sys.argv[1:] if argv is None else argv),
        "code": code_version(),
        "machine": {**machine(), "busy_cores_at_start": round(busy, 2)},
    }
    return work, tmp, results


def finish(results: dict, render, args, suffix: str = "") -> None:
    """Load at the end and minutes taken, then <results>/<name or date-machine><suffix>.json
    (everything) and .md (``render(results)``) under a name no result has yet (``save_results``),
    and the tables on stdout."""
    started = dt.datetime.fromisoformat(results["date"])
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["machine"]["busy_cores_at_end"] = round(busy_cores(2.0), 2)
    results["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
    stem = args.name or f"{started:%Y-%m-%d}-{machine_slug(results['machine'])}{suffix}"
    print(save_results(Path(args.results), stem, results, render))


def free_stem(out_dir: Path, stem: str) -> str:
    """``stem``, or the first of ``stem``-2, -3, … that names neither a .json nor a .md in
    ``out_dir``: a result is never written over. make bench and make bench-peers on one day both
    make <date>-<machine>, and a file of that name may be a committed result."""
    name, n = stem, 1
    while (out_dir / f"{name}.json").exists() or (out_dir / f"{name}.md").exists():
        n += 1
        name = f"{stem}-{n}"
    if name != stem:
        log.warning("%s already holds results named %s: these are %s", out_dir, stem, name)
    return name


def save_results(out_dir: Path, stem: str, results: dict, render) -> str:
    """<out_dir>/<free_stem>.json, then .md (``render(results)``), each written atomically; the
    JSON first, so an error in the rendering loses no measurement. Returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = free_stem(out_dir, stem)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    log.info("results: %s", out_dir / f"{stem}.json")
    markdown = render(results)
    atomic_write_text(out_dir / f"{stem}.md", markdown)
    log.info("tables: %s", out_dir / f"{stem}.md")
    return markdown


if __name__ == "__main__":
    main()
