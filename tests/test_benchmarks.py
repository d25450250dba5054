"""The benchmark harness still times nmt's search (it wraps the search functions Translator calls)."""

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, saved_tiny_model
from nmt.translate import Translator

LINES = ["Y dijo Dios: Sea la luz.", "Y vió Dios que la luz era buena.", "En el principio", "", "Y fue la tarde"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _benchmarks_module(name: str, monkeypatch):
    """A benchmarks/ module imported by name (a dataclass's module must be in sys.modules)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module(name)


@pytest.mark.parametrize("beam", [1, 3])
def test_decode_measurement_times_the_search_and_keeps_the_translations(tmp_path, beam):
    """... and counts the target tokens decoded: a hypothesis's pieces, and its </s> only where it
    ended before its length limit (one cut there has none; every one was counted with one)."""
    config, tokenizer, model, folder = saved_tiny_model(tmp_path)
    src, hyps, out = tmp_path / "src.txt", tmp_path / "hyps.txt", tmp_path / "result.json"
    src.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    _script("nmt_runs").main(["decode", "--out", str(out), "--checkpoint", str(folder), "--src", str(src), "--beam", str(beam),
                      "--repeats", "2", "--hyps", str(hyps), "--decode-batch", "2", "--precision", "fp32"])
    result = json.loads(out.read_text())
    assert result["sentences"] == len(LINES) and result["batch_size"] == 2 and result["seconds"] > 0
    expected = Translator.from_checkpoint(folder).translate(LINES, beam=beam, precision="fp32")
    assert hyps.read_text(encoding="utf-8").splitlines() == expected
    found = Translator.from_checkpoint(folder).hypotheses(LINES, beam=beam, precision="fp32")
    pieces = [len(h[0].tokens) for h in found if h]
    # the limit in target tokens, </s> included: ratio x source pieces (</s> included) + offset
    limits = [int(config.decode.max_len_ratio * len(ids)) + config.decode.max_len_offset
              for ids in tokenizer.encode_src([line for line in LINES if line])]
    assert any(n == limit for n, limit in zip(pieces, limits))  # the untrained model runs to its limit
    assert result["target_tokens"] == sum(n + (n < limit) for n, limit in zip(pieces, limits))
    assert result["mean_output_len"] == result["target_tokens"] / len(LINES)


def test_a_hypothesis_counts_its_end_only_where_it_ended_before_its_limit():
    """Greedy and beam search stop a hypothesis at its sentence's limit without </s>: the decoded
    tokens are its pieces alone; one that ended sooner decoded its </s> too."""
    import torch

    from nmt.search import Hypothesis

    nmt_runs = _script("nmt_runs")
    batches = [(None, None, torch.tensor([4, 6])), (None, None, torch.tensor([5]))]  # limits, </s> included

    def hyp(pieces: int) -> Hypothesis:
        return Hypothesis([7] * pieces, -1.0, -1.0)

    greedy = [(2, hyp(5)), (0, hyp(3)), (1, hyp(6))]  # in the order sentences finish
    assert nmt_runs.decoded_tokens(greedy, batches) == 5 + (3 + 1) + 6
    beam = [(0, [hyp(4), hyp(2)]), (1, [hyp(0)]), (2, [hyp(1)])]  # n-best lists, the best first
    assert nmt_runs.decoded_tokens(beam, batches) == 4 + 1 + (1 + 1)


def test_results_name_the_instruction_set_limits_a_run_was_held_to(monkeypatch):
    bench = _script("bench")
    for name in bench.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    assert bench.command_line("decode_trained.py", ["--rounds", "3"]) == "python benchmarks/decode_trained.py --rounds 3"
    assert bench.machine()["isa_limits"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    assert bench.command_line("decode_trained.py", ["--rounds", "3"]) == (
        "ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/decode_trained.py --rounds 3")
    assert bench.machine()["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_results_name_what_a_vm_model_name_hides_amx_included():
    """A VM reports "Intel(R) Xeon(R) Processor" whether or not it has AMX, which runs bf16 and int8
    products several times faster: the results heading says which."""
    report = _script("report")
    amx = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_vendor_family_model": "GenuineIntel 6 143",
           "avx512_bf16": True, "avx512_vnni": True, "amx": ["amx_bf16", "amx_int8"]}
    assert report.isa_text(amx) == " (GenuineIntel 6 143; avx512_bf16, avx512_vnni, AMX)"
    assert report.isa_text({**amx, "amx": [], "avx512_vnni": False}) == " (GenuineIntel 6 143; avx512_bf16)"
    assert report.isa_text({"cpu": "Intel(R) Xeon(R) Processor"}) == ""  # a file from before these were recorded
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    assert _script("bench").machine()["amx"] == [f for f in ("amx_bf16", "amx_int8") if f in flags]


def test_side_by_side_decoding_gives_nmt_the_peers_batch_whatever_its_config_says(tmp_path, monkeypatch):
    """nmt's decode.batch_size default (128) is not the peers' batch (64): both harnesses say which."""
    from types import SimpleNamespace

    from nmt.config import Config

    bench, decode_trained = _script("bench"), _script("decode_trained")
    assert bench.DECODE_BATCH == 64 != Config().decode.batch_size
    (tmp_path / "nmt-luong-run" / "last").mkdir(parents=True)
    (tmp_path / "nmt-luong-run" / "last" / "model.safetensors").write_bytes(b"")
    args = SimpleNamespace(work=str(tmp_path), precisions=["fp32"], stopping=["bound"], beams=[1, 5], peers="",
                           decode_sentences=0, timeout=1, decode_batch=decode_trained.DECODE_BATCH, unscored=True)
    jobs = decode_trained.jobs(args, tmp_path)  # the trained models: greedy, beam 5, greedy without scores
    assert [(name, "--unscored" in command) for name, command, _ in jobs] == [
        ("nmt luong (fp32)", False), ("nmt luong (fp32)", False), ("nmt luong (fp32, unscored)", True)]
    commands = [command for _, command, _ in jobs]
    monkeypatch.setattr(bench, "measured", lambda command, *_: commands.append(command))
    bench.nmt_decodes(args, tmp_path, tmp_path, tmp_path / "nmt-luong-run" / "last", "nmt", "fp32")  # make bench
    assert len(commands) == 5
    for command in commands:
        assert command[command.index("--decode-batch") + 1] == 64


def test_results_record_the_commit_and_whether_the_code_had_changed(tmp_path):
    bench, repo, plain = _script("bench"), tmp_path / "repo", tmp_path / "unpacked-tarball"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for path in ("nmt/model.py", "benchmarks/results/run.json", "README.md"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "benchmarks/results/run.json").write_text("2\n")  # a result written by the run itself
    (repo / "README.md").write_text("2\n")
    assert bench.code_version(repo) == commit
    (repo / "nmt/model.py").write_text("2\n")
    assert bench.code_version(repo) == commit + "+changes"
    plain.mkdir()
    assert bench.code_version(plain) is None


def test_contention_speed_counts_each_window_by_its_part_in_the_span():
    """contention.py's speeds: a 20-step window half inside the measured span counts half."""
    contention = _script("contention")

    lines = [(10.0, {"kind": "train", "elapsed_s": 10.0, "tokens_per_s": 100.0, "threads": 2}),
             (20.0, {"kind": "train", "elapsed_s": 20.0, "tokens_per_s": 200.0, "threads": 1})]
    assert contention.speed(lines, 15.0, 20.0) == {"tokens_per_s": 200.0, "seconds": 5.0, "threads": [1]}
    assert contention.speed(lines, 5.0, 15.0) == {"tokens_per_s": 150.0, "seconds": 10.0, "threads": [2, 1]}
    assert contention.speed(lines, 30.0, 40.0)["tokens_per_s"] is None


def test_long_lines_ways_differ_only_on_lines_longer_than_the_model_saw(tmp_path):
    """benchmarks/long_lines.py: joined verses keep source and reference aligned, and a line
    within train.max_train_len is decoded whole by every way, so every way scores it the same."""
    import dataclasses

    long_lines = _script("long_lines")
    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_train_len=12))
    translator = Translator(model, tokenizer, config)
    assert long_lines.joined(["a", "b", "c", "d", "e"], 2) == ["a b", "c d"]
    short, refs = ["En el principio", "Y fue la tarde", "Y dijo Dios"], ["In the beginning", "And it was evening", "And God said"]
    assert max(tokenizer.src_lengths(short)) <= 12
    rows = long_lines.measure(translator, short * 4, refs * 4, [1, 6])
    assert [row["lines"] for row in rows] == [12, 2] and rows[1]["longest_pieces"] > 12
    assert len({(way["bleu"], way["words_ratio"]) for way in rows[0]["ways"].values()}) == 1
    assert len({way["words_ratio"] for way in rows[1]["ways"].values()}) > 1  # cut lines: translated otherwise


def test_the_quality_table_says_at_what_precision_and_batch_each_toolkit_decoded():
    """It said every toolkit decoded in fp32, 64 sentences a batch, while nmt decoded at its
    checkpoint's settings: bf16 where native, 128 a batch."""
    quality = _script("quality")
    results = json.loads((ROOT / "benchmarks/results/2026-12-07-amd-epyc-zen4-2c-quality-luong-20min.json").read_text())
    rows = {line.split(" | ")[0]: line for line in quality.render(results).splitlines() if line.startswith("| ")}
    assert "161.2 (33.2; bf16, 128 a batch)" in rows["| nmt"]
    assert "39.4 (33.0; fp32, 64 a batch)" in rows["| fairseq"]
    assert "fp32, batches of 64" not in quality.render(results)


def test_ab_decode_swaps_in_another_version_of_a_file_and_back(tmp_path):
    """An A/B setting puts another file's functions where decoding looks them up (the module that
    imported them), and the plain setting puts this checkout's back; a file it cannot swap is a
    one-line refusal."""
    import nmt.model
    import nmt.stretches

    ab = _script("ab_decode")
    folder = saved_tiny_model(tmp_path)[3]
    translator = Translator.from_checkpoint(folder)
    other = tmp_path / "other" / "stretches.py"
    other.parent.mkdir()
    other.write_text((ROOT / "nmt" / "stretches.py").read_text(encoding="utf-8"), encoding="utf-8")
    try:
        ab.setting(str(other), translator)()
        swapped = nmt.model.by_length
        assert swapped is not nmt.stretches.by_length and swapped.__code__.co_filename == str(other)
    finally:
        ab.setting(None, translator)()
    assert nmt.model.by_length is nmt.stretches.by_length
    with pytest.raises(SystemExit, match="expected a file named"):
        ab.setting(str(tmp_path / "other" / "unknown.py"), translator)


def test_minutes_to_a_dev_bleu_count_up_to_each_validation_s_end(tmp_path):
    """The minute of a validation off the 20-step log grid (the last, at a budget's end) was the
    time at the last training line before it plus its own seconds: early by the steps between."""
    import shutil

    from conftest import SPM200, tiny_config
    from nmt import pipeline
    from nmt.config import run_paths

    config = tiny_config(tmp_path, "train.max_steps=30", "train.valid_every=8")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    shutil.copytree(SPM200, paths.tokenizer)
    summary = pipeline.train(config, paths)
    curve = _script("curve").validations(paths.root / "metrics.jsonl")
    assert [step for step, _, _ in curve] == [8, 16, 24, 30]
    assert curve[-1][1] == pytest.approx(summary["train_minutes"], abs=1e-9)
    assert all(a[1] < b[1] for a, b in zip(curve, curve[1:]))


def test_a_second_run_the_same_day_keeps_the_first_runs_results(tmp_path, monkeypatch):
    """make bench and make bench-peers on one day both wrote <date>-<machine>.json and .md: the
    second replaced the first's. And the tables were rendered before the JSON was written, so an
    error in them lost every measurement."""
    from types import SimpleNamespace

    bench = _script("bench")
    monkeypatch.setattr(bench, "busy_cores", lambda seconds: 0.0)
    args = SimpleNamespace(results=str(tmp_path), name="")

    def results(run: int) -> dict:
        return {"date": "2026-12-08T09:00:00+00:00", "machine": {"cpu": "AMD EPYC 9R14", "cores_available": 2},
                "run": run}

    def render(res: dict) -> str:
        return f"run {res['run']}\n"

    def broken(res: dict) -> str:
        raise KeyError("sentences_per_s")

    bench.finish(results(1), render, args)
    bench.finish(results(2), render, args)
    with pytest.raises(KeyError):
        bench.finish(results(3), broken, args)
    stem = tmp_path / "2026-12-08-amd-epyc-9r14-2c"
    assert [json.loads(Path(f"{stem}{n}.json").read_text())["run"] for n in ("", "-2", "-3")] == [1, 2, 3]
    assert [Path(f"{stem}{n}.md").read_text() for n in ("", "-2")] == ["run 1\n", "run 2\n"]
    assert not Path(f"{stem}-3.md").exists()


def test_a_failed_quality_decoding_is_reported_failed_not_scored_from_an_earlier_run(tmp_path, monkeypatch):
    """nmt's test output was named in the results whether or not its decoding finished: a failed
    one had an earlier run's file scored as its own, and the table then raised a KeyError."""
    from types import SimpleNamespace

    quality = _script("quality")
    earlier = tmp_path / "nmt-test.hyp"
    earlier.write_text("In the beginning God created the heaven and the earth.\n", encoding="utf-8")
    refs = tmp_path / "test.en"
    refs.write_text("In the beginning God created the heaven and the earth.\n", encoding="utf-8")

    def measured(command, out, log_path, timeout):
        if "budget" in map(str, command):
            return {"steps": 900, "target_tokens": 2_500_000, "train_minutes": 20.0, "checkpoint": "ckpt",
                    "peak_rss_mib": 900.0}
        return {"error": "exit 1; see benchmarks/.work/quality/nmt-decode.log", "log_tail": []}

    monkeypatch.setattr(quality, "measured", measured)
    args = SimpleNamespace(minutes=20.0, timeout=60, max_tokens=3000, nmt_variant="bahdanau", sentences=0, beam=5)
    run = quality.train_and_decode("nmt", args, tmp_path, tmp_path)
    run["scores"], run["model"] = quality.score(run, tmp_path, refs), quality.model_text("nmt", "bahdanau")
    assert not earlier.exists() and run["scores"] is None
    results = {"date": "2026-12-08T09:00:00+00:00", "command": "python benchmarks/quality.py",
               "machine": {"cpu": "AMD EPYC 9R14", "cores_available": 2, "torch": "2.13.0"},
               "settings": {"budget_minutes": 20.0, "threads": 2, "max_tokens": 3000, "test_sentences": 1, "beam": 5},
               "toolkits": {"nmt": run}}
    row = next(line for line in quality.render(results).splitlines() if line.startswith("| nmt"))
    assert "failed: exit 1; see benchmarks/.work/quality/nmt-decode.log" in row


@pytest.mark.parametrize("option", ["--warmup", "--steps"])
def test_no_warm_up_or_no_timed_steps_is_refused_with_the_option_named(tmp_path, capsys, monkeypatch, option):
    """--warmup 0 timed from the end of the last step (ends[-1]) and --steps 0 divided by zero,
    each after the minutes of setting up: now argparse refuses them, nmt's runner and the peers' alike."""
    import importlib

    nmt_runs, bench = _script("nmt_runs"), _script("bench")
    common = importlib.import_module("peers.common")

    def begin(*args):  # bench.py's run (the machine's quiet, the Bible data) must not start
        raise AssertionError(f"{option} 0 was accepted")

    monkeypatch.setattr(bench, "begin", begin)
    runs = [lambda: nmt_runs.main(["train", "--out", str(tmp_path / "r.json"), "--work", str(tmp_path), option, "0"]),
            lambda: common.parse(["train", "--out", "r.json", "--work", str(tmp_path), "--peer-work", str(tmp_path),
                                  option, "0"]),
            lambda: bench.main([option, "0"])]
    for run in runs:
        with pytest.raises(SystemExit) as exit_:
            run()
        assert exit_.value.code == 2
        assert f"argument {option}: must be at least 1, not 0" in capsys.readouterr().err


def test_nmt_s_timed_training_steps_include_its_training_loop_s_upkeep(tmp_path, monkeypatch):
    """nmt's steps were timed by calling Trainer._train_step alone: what its loop does after each
    update (the metrics line every 20 steps, trim_heap every train.trim_heap_every) was left out,
    while the peers' timed loops kept their logging. Now its own loop runs inside the clock."""
    import shutil

    import nmt.train
    from conftest import SPM200, TINY_CONFIG, TINY_TSV, tiny_config
    from nmt import pipeline
    from nmt.config import run_paths

    nmt_runs = _script("nmt_runs")
    paths = run_paths(tiny_config(tmp_path), tmp_path)
    pipeline.prepare(tiny_config(tmp_path), paths)
    shutil.copytree(SPM200, paths.tokenizer)
    trims = []
    monkeypatch.setattr(nmt.train, "trim_heap", lambda: trims.append(1))
    monkeypatch.setattr(nmt.train, "LOG_EVERY", 4)  # a metrics line every 4 steps, not 20: fewer steps
    monkeypatch.setattr(nmt_runs, "CONFIG", TINY_CONFIG)
    monkeypatch.setattr(nmt_runs, "THREADS", 1)  # a tiny model: a second thread only waits on a busy machine
    run_dir, out = tmp_path / "timed", tmp_path / "result.json"
    nmt_runs.main(["train", "--out", str(out), "--work", str(paths.root), "--run-dir", str(run_dir), "--precision",
                   "fp32", "--warmup", "1", "--steps", "7", "--max-tokens", "64", "--set", "train.max_train_len=64",
                   "--set", "train.trim_heap_every=3", "--set", f"data.source={TINY_TSV}"])
    result = json.loads(out.read_text())
    assert (result["warmup_steps"], result["timed_steps"]) == (1, 7) and len(trims) == 8 // 3
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["kind"], line["step"]) for line in logged] == [("train", 4), ("train", 8)]  # and no validation
    assert result["target_tokens"] > 0 and result["seconds"] > 0 and Path(result["checkpoint"]).is_dir()


def test_a_measured_process_s_peak_memory_is_its_own_not_the_harness_s(tmp_path):
    """ru_maxrss from wait4 was reported: on Linux a child starts with its parent's high-water mark,
    so every measurement showed at least the harness's own peak. Each process now records its VmHWM."""
    import resource

    bench = _script("bench")
    held = b"\1" * (400 * 2**20)  # the harness at 400 MiB and more
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 400
    child = ("import sys, types; sys.path.insert(0, 'benchmarks/peers'); import common; "
             "common.write(types.SimpleNamespace(out=sys.argv[1]), {'sentences': 1})")
    out = tmp_path / "child.json"
    result = bench.measured([sys.executable, "-c", child, out], out, tmp_path / "child.log", timeout=60)
    del held
    assert result["sentences"] == 1 and 5 < result["peak_rss_mib"] < 200  # python and numpy
    assert result["peak_rss_from"] == "VmHWM"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention, input_feeding", [("bahdanau", True), ("luong", True), ("bahdanau", False),
                                                      ("none", True)])
def test_flop_count_follows_the_cell_and_the_attention_the_model_has(monkeypatch, cell, attention, input_feeding):
    """flops.py counted an LSTM with attention whatever the config: a GRU's 3 gates and a plain RNN's
    one as an LSTM's 4, and under attention none the keys, query, combine layer, attention and input
    feeding, none of which nmt.model then has. A product's forward FLOPs are 2 per weight: here read
    off the model's own parameters (weights, not biases)."""
    from nmt.attention import AdditiveAttention
    from nmt.config import ModelConfig
    from nmt.model import build_model

    flops = _benchmarks_module("flops", monkeypatch)
    config = ModelConfig(cell=cell, emb_dim=16, enc_hidden=12, enc_layers=2, dec_hidden=16, dec_layers=2,
                         attention=attention, attn_dim=10, input_feeding=input_feeding)
    model, dims = build_model(config, 50, 60), flops.Dims.from_config(config, 60)
    decoder, attend = model.decoder, model.decoder.attention

    def weights(module) -> int:
        return 0 if module is None else sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))

    keys = 0 if attend is None else weights(attend.key_proj)
    query = weights(attend.query_proj) if isinstance(attend, AdditiveAttention) else 0
    assert flops.per_source_token(dims) == 2 * (weights(model.encoder.rnn) + keys)
    assert flops.per_target_token(dims) == 2 * (weights(decoder.rnn) + query + weights(decoder.combine)
                                                 + weights(model.generator))
    assert flops.per_sentence(dims) == 2 * (weights(decoder.bridge_h) + weights(decoder.bridge_c))
    # per (target, source) pair: the score (additive: q + k_j, then v · tanh: 3A; multiplicative:
    # s_t · W_k h_j, 2D) and the context Σ_j α_j h_j (2 · 2H)
    assert flops.per_pair(dims) == {"bahdanau": 3 * 10 + 2 * 24, "luong": 2 * 16 + 2 * 24, "none": 0}[attention]


def test_the_step_clock_times_from_the_end_of_the_warm_up_to_the_end_of_the_last_timed_step(monkeypatch):
    """The training clock of nmt and every peer: the steps after the warm-up, each from the end of
    the step before; steps recorded after the last timed one are not counted."""
    from types import SimpleNamespace

    common = _benchmarks_module("peers.common", monkeypatch)
    ends = iter([10.0, 11.0, 12.0, 14.0, 17.0, 30.0, 40.0])  # step 1 ends at 10 s, step 2 at 11 s, …
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: next(ends)))
    clock = common.StepClock(warmup=2, steps=3)
    steps = [(100, [9, 9]), (100, [9, 9]), (50, [4, 6]), (60, [5]), (70, [7, 8, 9]), (999, [99])]
    for done, (tokens, src) in enumerate(steps, 1):
        clock.record(tokens, src, [t + 1 for t in src])
        assert clock.done == (done >= 2 + 3)
    result = clock.result()
    assert (result["warmup_steps"], result["timed_steps"], result["seconds"]) == (2, 3, 17.0 - 11.0)
    assert (result["target_tokens"], result["tokens_per_s"]) == (50 + 60 + 70, 180 / 6.0)
    assert result["step_seconds_median"] == 2.0  # steps of 1, 2 and 3 s
    assert (result["sentences"], result["source_tokens"], result["tgt_lens"]) == (6, 39, [5, 7, 6, 8, 9, 10])
    short = common.StepClock(warmup=2, steps=3)
    short.record(100)
    with pytest.raises(RuntimeError, match="only 1 steps were recorded, 5 needed"):
        short.result()


def test_the_search_clock_keeps_the_fastest_pass_of_each_search_call(monkeypatch):
    """Decoding's clock, nmt's and every peer's: each call runs ``repeats`` times, returns its
    output, and adds its fastest pass (the clock used to be checked only against a bound that any
    count of the passes met)."""
    from types import SimpleNamespace

    common = _benchmarks_module("peers.common", monkeypatch)
    now, passes = [0.0], iter([5.0, 2.0, 4.0, 1.5, 1.0, 3.0])

    def search(sentences: list[str]) -> list[str]:
        now[0] += next(passes)
        return [s.upper() for s in sentences]

    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    clock = common.SearchClock(repeats=3)
    timed = clock.wrap(search)
    assert timed(["a", "b"]) == ["A", "B"] and timed(["c"]) == ["C"]
    assert (clock.seconds, clock.calls) == (2.0 + 1.0, 2)


def test_the_flop_model_of_the_default_config_is_the_hand_count(monkeypatch):
    """configs/bible-es-en.yaml: E = 256, encoder 2 layers x 2 directions x H = 256 (LSTM), D = 256,
    A = 256, input feeding, V = 6000; 2 FLOPs a multiply-add. Per source token: layer 1
    2 x 2·4·256·(256 + 256) = 2,097,152, layer 2 2 x 2·4·256·(512 + 256) = 3,145,728, the key
    projection 2·512·256 = 262,144: 5,505,024. Per target token: the decoder LSTM
    2·4·256·(512 + 256) = 1,572,864, the query 2·256·256 = 131,072, the combine layer 2·768·256 =
    393,216, the output layer 2·256·6000 = 3,072,000: 5,169,152. Per pair: the score 256 + 2·256,
    the context 2·512: 1,792. Per sentence: the bridges for h and c, 2 x 2·512·256 = 524,288."""
    from nmt.config import load_config

    flops = _benchmarks_module("flops", monkeypatch)
    model = load_config(ROOT / "configs" / "bible-es-en.yaml").model
    assert flops.describe(flops.Dims.from_config(model, 6000)) == {
        "forward_flops_per_source_token": 5_505_024,
        "forward_flops_per_target_token": 5_169_152,
        "forward_flops_per_src_tgt_pair": 1_792,
        "forward_flops_per_sentence": 524_288,
        "train_factor": 3,
    }


def _side_by_side(nmt: dict) -> dict:
    """A bench.py results dict: nmt as given, JoeyNMT measured, OpenNMT-py not installed."""
    return {"date": "2026-12-08T09:00:00+00:00", "command": "python benchmarks/bench.py --peers all",
            "machine": {"cpu": "AMD EPYC 9R14", "cores_available": 2, "torch": "2.13.0", "threads": 2,
                        "python": "3.11.2"},
            "settings": {"timed_steps": 50, "warmup_steps": 10, "max_tokens": 3000, "decode_sentences": 100},
            "matmul_peak": {"fp32": {"gflops": 400.0}, "bf16_not_measured": "bf16 is not native on this CPU"},
            "nmt": nmt,
            "peers": {"joeynmt": {"train": {"fp32": {"tokens_per_s": 2000.0}},
                                  "decode": {"beam1": {"sentences_per_s": 100.0, "tokens_per_s": 10000.0,
                                                       "mean_output_len": 100.0},
                                             "beam5": {"sentences_per_s": 30.0, "tokens_per_s": 2000.0,
                                                       "mean_output_len": 66.7}}},
                      "opennmt": {"error": "not installed (bash benchmarks/peers/setup.sh opennmt)"}}}


def test_the_report_divides_nmt_by_the_peer_and_judges_each_target():
    """Ratios are nmt / peer (higher is better for nmt), each target is met or not against the
    fastest peer, and a peer that is not installed is a failed row, not a crash."""
    report = _script("report")
    nmt = {"train": {"fp32": {"tokens_per_s": 6000.0, "gflops_per_s": 100.0}},
           "decode": {"beam1": {"sentences_per_s": 200.0, "tokens_per_s": 20000.0, "mean_output_len": 100.0},
                      "beam5": {"sentences_per_s": 90.0, "tokens_per_s": 9000.0, "mean_output_len": 100.0}}}
    lines = report.render_markdown(_side_by_side(nmt)).splitlines()
    assert "| nmt | joeynmt | yes | 3.00× | 2.00× | 2.00× | 3.00× | 4.50× |" in lines
    assert "| opennmt (bahdanau) | failed: not installed (bash benchmarks/peers/setup.sh opennmt) | | | | | | | |" in lines
    targets = [line for line in lines if line.startswith("- ")]
    assert [line.split(" → ")[1].split(" (")[0] for line in targets] == ["met", "met", "NOT met", "NOT met"]
    assert targets[0] == "- training ≥ 2× the fastest peer (joeynmt, 2,000 tok/s): nmt fp32 6,000 tok/s = 3.00× → met"
    assert "100.0 of 400 GFLOP/s = 25%" in targets[3]


def test_the_report_of_a_failed_nmt_run_says_so_and_judges_nothing():
    """nmt's training failed: its row says why, and no target reads "NOT met" for what was not measured."""
    report = _script("report")
    nmt = {"train": {"fp32": {"error": "exit 1; see benchmarks/.work/runs/nmt-bahdanau-train-fp32.log"}}, "decode": {}}
    lines = report.render_markdown(_side_by_side(nmt)).splitlines()
    assert "| nmt (fp32) | failed: exit 1; see benchmarks/.work/runs/nmt-bahdanau-train-fp32.log | | | | | | | |" in lines
    targets = [line for line in lines if line.startswith("- ")]
    assert targets == ["- training ≥ 2× the fastest peer (joeynmt, 2,000 tok/s): nmt fp32 — tok/s = — → not measured"]


def test_bench_help_gives_the_load_it_waits_for(capsys):
    """--wait-quiet's help said "load < 0.5" while the harness waits for fewer than 0.3 busy cores."""
    bench = _script("bench")
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    assert f"fewer than {bench.MAX_LOAD} cores busy" in " ".join(capsys.readouterr().out.split())


def test_a_trim_s_cost_is_its_step_s_and_the_next_s_extra_time_less_the_drift(monkeypatch):
    """heap_trim.py --cost: two runs on the same batches, one trimming every 5 steps; the medians of
    what the trimmed run's trimming steps and the steps after them take beyond the other's, less
    the median of the rest (the machine's drift). The warm-up's trim (step 5, and step 6 after it)
    and a last trim without a step after it are left out."""
    trim_cost = _benchmarks_module("heap_trim", monkeypatch).trim_cost
    untrimmed = [0.5 + 0.01 * (step % 3) for step in range(1, 31)]
    extra = {5: 1.0, 6: 1.0, 8: 1.0, 9: 1.0,  # the warm-up's trim, and two outliers among the rest
             10: 0.12, 15: 0.12, 20: 0.12, 25: 0.5, 30: 5.0,  # trims (the last, at step 30, has no next step)
             11: 0.32, 16: 0.32, 21: 0.52, 26: 0.52}  # the steps after them
    trimmed = [s + extra.get(step, 0.02) for step, s in enumerate(untrimmed, 1)]
    report = trim_cost({"every": 5, "seconds": trimmed}, {"every": 0, "seconds": untrimmed})
    assert report == ("a trim costs 0.500 s: 0.100 in its step, 0.400 in the next (4 trims; drift +0.020 s a step); "
                      "every 5 steps of 0.510 s: 19.6%")
    with pytest.raises(SystemExit, match="run more than 60 steps"):
        trim_cost({"every": 30, "seconds": trimmed}, {"every": 0, "seconds": untrimmed})
    with pytest.raises(SystemExit, match="never trims"):  # the files swapped
        trim_cost({"every": 5, "seconds": trimmed}, {"every": 5, "seconds": untrimmed})
    with pytest.raises(SystemExit, match="as many steps"):
        trim_cost({"every": 5, "seconds": trimmed}, {"every": 0, "seconds": untrimmed[:-1]})
