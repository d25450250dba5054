"""Quality per unit of time: every toolkit trains the matched model for the same wall-clock
budget on the Bible data, then translates the test split with beam 5; sacreBLEU scores the
detokenised output against the raw references. Same data, SentencePiece model, batch size,
optimiser, starting learning rate, dropout and label smoothing for all; one scorer for all (the
peers keep their rate constant; nmt's default loop halves it after two validations without a
better dev BLEU: in every committed quality run nmt's last validation was its best).

    python benchmarks/quality.py --minutes 20 --peers all        (make bench-quality)

The budget rule is the same for every toolkit (peers/common.py Budget, nmt's train.max_minutes):
the clock starts with the first training step, and the step during which the budget runs out is
the last one. nmt runs its default training loop, so its dev validations (greedy BLEU every 300
steps) are inside its budget; the peers do not validate. Every toolkit is scored on its last
weights. Results: benchmarks/results/<date>-<machine>-quality.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench import PEER_DIR, THREADS, begin, finish, measured, peer_list  # noqa: E402
from nmt_runs import VARIANTS  # noqa: E402
from report import at_code, isa_text  # noqa: E402

log = logging.getLogger("bench")
MODELS = {
    "nmt": "bi-LSTM 2 × 256, decoder 256, Bahdanau attention, the default config (train.precision auto: bf16 autocast where native)",
    "fairseq": "bi-LSTM 2 × 256, decoder 256, Luong attention (its lstm arch has no other), fp32",
    "opennmt": "bi-LSTM 2 × 128 (its brnn needs encoder = decoder size), decoder 256, Bahdanau (mlp), fp32",
    "joeynmt": "bi-LSTM 2 × 256, decoder 256, Bahdanau attention, fp32",
}


def model_text(toolkit: str, nmt_variant: str) -> str:
    if toolkit != "nmt" or nmt_variant == "bahdanau":
        return MODELS[toolkit]
    # Not MODELS['nmt'] plus the overrides: "bi-LSTM 2 × 256 …, variant enc128" read as a 2 × 256 encoder.
    return f"variant {nmt_variant}: the default config with {' '.join(VARIANTS[nmt_variant])}"


def train_and_decode(toolkit: str, args, work: Path, tmp: Path) -> dict:
    """One toolkit's budgeted training and its beam search over the test split: (result, hyp file)."""
    slack = args.minutes * 60 + args.timeout
    if toolkit == "nmt":
        py, script = sys.executable, HERE / "nmt_runs.py"
        tag = "nmt" if args.nmt_variant == "bahdanau" else f"nmt-{args.nmt_variant}"
        train = measured([py, script, "budget", "--out", tmp / f"{tag}-train.json", "--work", work,
                          "--run-dir", tmp / f"{tag}-run", "--minutes", args.minutes, "--max-tokens", args.max_tokens,
                          "--variant", args.nmt_variant], tmp / f"{tag}-train.json", tmp / f"{tag}-train.log", slack)
        if "error" in train:
            return {"train": train}
        hyps = tmp / f"{tag}-test.hyp"
        hyps.unlink(missing_ok=True)  # an earlier run's output, which a failed decoding would leave to be scored
        decode = measured([py, script, "decode", "--out", tmp / f"{tag}-decode.json", "--checkpoint",
                           train["checkpoint"], "--src", test_text(work, tmp, "es", args.sentences), "--beam",
                           args.beam, "--repeats", 1, "--hyps", hyps],
                          tmp / f"{tag}-decode.json", tmp / f"{tag}-decode.log", args.timeout)
        # a decoding that finished names its hyps file in its result; a failed one has none to score
        return {"train": train, "decode": decode, "hyps_are": "text", "variant": args.nmt_variant}
    python = PEER_DIR / toolkit / "venv" / "bin" / "python"
    if not (PEER_DIR / toolkit / ".installed").is_file():
        return {"error": f"not installed (bash benchmarks/peers/setup.sh {toolkit})"}
    script, peer_work = HERE / "peers" / f"run_{toolkit}.py", tmp / toolkit
    shutil.rmtree(peer_work, ignore_errors=True)  # fairseq would resume from an old checkpoint_last.pt
    common = ["--work", work, "--peer-work", peer_work, "--max-tokens", args.max_tokens, "--threads", THREADS,
              "--split", "test", "--sentences", args.sentences]
    runs = {}
    for what, extra, limit in (("prepare", [], args.timeout), ("train", ["--minutes", args.minutes], slack),
                               ("decode", ["--beam", args.beam, "--repeats", 1], args.timeout)):
        name = f"{toolkit}-{what}"
        runs[what] = measured([python, script, what, "--out", tmp / f"{name}.json", *common, *extra],
                              tmp / f"{name}.json", tmp / f"{name}.log", limit)
        if "error" in runs[what]:
            break
    return {**runs, "hyps_are": "pieces"}


def test_text(work: Path, tmp: Path, lang: str, sentences: int) -> Path:
    """The raw test text, or its first ``sentences`` lines (a quick smoke run)."""
    path = work / "data" / f"test.{lang}"
    if not sentences:
        return path
    cut = tmp / f"test.first{sentences}.{lang}"
    cut.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:sentences]), encoding="utf-8")
    return cut


def score(run: dict, work: Path, refs: Path) -> dict | None:
    """sacreBLEU (BLEU, chrF, TER) of the run's test output against the raw references."""
    from nmt.lines import read_lines
    from nmt.metrics import corpus_scores
    from nmt.tokenizer import Tokenizer

    if "hyps" not in run.get("decode", {}):
        return None
    lines = read_lines(Path(run["decode"]["hyps"]))
    if run["hyps_are"] == "pieces":  # the shared SentencePiece model turns pieces back into text
        sp = Tokenizer.from_folder(work / "tokenizer").tgt
        lines = [sp.decode_pieces(line.split()) for line in lines]
    return corpus_scores(lines, read_lines(refs))


def decoded_as(decode: dict) -> str:
    """A decoding run's out len, precision and batch, as the quality table shows them: nmt records
    its precision (auto: bf16 where native), a peer decodes in fp32; a run that recorded no batch
    size says so."""
    batch = f"{decode['batch_size']} a batch" if decode.get("batch_size") else "batch not recorded"
    return f"{decode['mean_output_len']:.1f}; {decode.get('precision', 'fp32')}, {batch}"


def render(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    out = [
        f"# Quality per unit of time — {results['date'][:10]}, {m['cpu']}{isa_text(m)}, {m['cores_available']} cores",
        "",
        f"Each toolkit trained for **{s['budget_minutes']:g} minutes** of wall clock ({s['threads']} threads, "
        f"batches of {s['max_tokens']} padded tokens, the longest of source and target), then translated "
        f"the {s['test_sentences']} test verses "
        f"with beam {s['beam']}; sacreBLEU on detokenised text. torch {m['torch']}. "
        f"Command: `{results['command']}`{at_code(results)}.",
        "",
        "| toolkit | model | steps | target tokens | tok/s over the budget | test BLEU | chrF | TER | "
        "beam-5 test sent/s (out len; precision, batch) | peak RSS (train) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in results["toolkits"].items():
        train, sc = run.get("train", {}), run.get("scores")
        failure = run.get("error") or train.get("error") or run.get("decode", {}).get("error")
        if failure or sc is None:
            out.append(f"| {name} | {run['model']} | — | — | — | failed: {failure or 'no test output'} | | | | |")
            continue
        rate, dec = train["target_tokens"] / (train["train_minutes"] * 60), run["decode"]
        out.append(f"| {name} | {run['model']} | {train['steps']:,} | {train['target_tokens'] / 1e6:.2f} M | "
                   f"{rate:,.0f} | {sc['bleu']['score']:.2f} | {sc['chrf']['score']:.2f} | {sc['ter']['score']:.2f} | "
                   f"{dec['sentences_per_s']:.1f} ({decoded_as(dec)}) | {train['peak_rss_mib']:,.0f} MiB |")
    verdict = results.get("verdict")
    if verdict:
        out += ["", verdict]
    out += ["", "tok/s over the budget: target tokens trained / budget seconds, everything inside the "
            "budget included (nmt's dev validations too). Decoding: search time only, one pass, each toolkit "
            "at its own precision and batch (nmt: precision auto, bf16 where native, and its config's batch "
            "size); out len = pieces, and </s> where decoded, per sentence. `decode_trained.py` compares decoding speed like "
            "for like."]
    signature = next((r["scores"]["bleu"]["signature"] for r in results["toolkits"].values() if r.get("scores")), "")
    out += ["", f"BLEU signature: `{signature}`", ""]
    return "\n".join(out)


def verdict(toolkits: dict) -> str:
    bleu = {name: run["scores"]["bleu"]["score"] for name, run in toolkits.items() if run.get("scores")}
    peers = {name: b for name, b in bleu.items() if name != "nmt"}
    if "nmt" not in bleu or not peers:
        return ""
    best = max(peers, key=peers.get)
    diff = bleu["nmt"] - peers[best]
    return (f"nmt {bleu['nmt']:.2f} BLEU vs the best peer ({best}) {peers[best]:.2f}: "
            f"{diff:+.2f} — target (nmt ≥ best peer) {'met' if diff >= 0 else 'NOT met'}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per toolkit")
    parser.add_argument("--peers", default="all", help="comma-separated peers, 'all', or '' for nmt alone")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=3000)
    parser.add_argument("--sentences", type=int, default=0, help="first N test sentences (0 = all; N: a smoke run)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed beyond the budget per process")
    parser.add_argument("--wait-quiet", type=float, default=600)
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="", help="results file stem (default <date>-<machine>-quality)")
    parser.add_argument("--nmt-variant", default="bahdanau", choices=list(VARIANTS),
                        help="nmt's model or training variant (nmt_runs.VARIANTS); plain_rnn: without the LSTM fast path")
    args = parser.parse_args(argv)
    work, tmp, results = begin("quality.py", "quality", args, argv)
    refs = test_text(work, tmp, "en", args.sentences)
    test_lines = len(refs.read_text(encoding="utf-8").splitlines())
    results["settings"] = {"budget_minutes": args.minutes, "beam": args.beam, "max_tokens": args.max_tokens,
                           "threads": THREADS, "test_sentences": test_lines,
                           "checkpoint": "last weights, every toolkit"}
    results["toolkits"] = {}
    for toolkit in ["nmt", *peer_list(args.peers)]:
        run = train_and_decode(toolkit, args, work, tmp)
        run["scores"] = score(run, work, refs)
        run["model"] = model_text(toolkit, args.nmt_variant)
        results["toolkits"][toolkit] = run
        if run["scores"]:
            log.info("%s: test BLEU %.2f", toolkit, run["scores"]["bleu"]["score"])
    results["verdict"] = verdict(results["toolkits"])
    finish(results, render, args, suffix="-quality")


if __name__ == "__main__":
    main()
