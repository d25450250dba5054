"""Device and thread choice."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nmt import hardware
from nmt.errors import NmtError


def test_thread_choice_leaves_busy_cores_alone(two_threads):
    assert hardware.choose_threads(0, busy=0.05) == 2
    assert hardware.choose_threads(0, busy=1.0) == 1
    assert hardware.choose_threads(0, busy=2.0) == 1  # never fewer than one
    assert hardware.choose_threads(3, busy=2.0) == 3  # the user's choice wins


def test_more_threads_than_cores_are_taken_as_asked_with_a_warning(monkeypatch, caplog):
    """train.threads=99 on 2 cores ran about 10x slower than with 2, without a word."""
    import logging

    monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="nmt.hardware"):
        assert hardware.choose_threads(2, busy=0.0) == 2
        assert not caplog.records
        assert hardware.choose_threads(99, busy=0.0) == 99
    assert "train.threads=99 is more than the 2 cores this process may use" in caplog.text


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = hardware.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


class Machine:
    """A stand-in for /proc/stat on 2 cores: each look one second later, with ``others`` cores kept
    busy by other processes and ``ours`` by this one."""

    def __init__(self):
        self.now = self.busy = self.own = 0.0

    def look(self, others: float, ours: float = 1.0) -> tuple[float, float, float]:
        self.now, self.busy, self.own = self.now + 1, self.busy + others + ours, self.own + ours
        return self.now, self.busy, self.own


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_follow_other_processes_load_as_it_changes(two_threads, caplog):
    """A process that starts later gets its core at the first look; the core comes back only after
    two looks in a row without it, so a burst of someone else's work does not flip the count."""
    machine, load = Machine(), iter([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0])
    governor = hardware.ThreadGovernor(every=0, sample=lambda: machine.look(next(load)))
    with caplog.at_level("WARNING", logger="nmt.hardware"):
        counts = [governor.check() for _ in range(8)]
    assert counts == [1, 1, 1, 1, 1, 2, 2, 1]
    assert torch.get_num_threads() == 1
    assert "1.0 of 2 cores busy with other work: 1 thread(s) now, 2 before" in caplog.text
    assert "0.0 of 2 cores busy with other work: 2 thread(s) now, 1 before" in caplog.text


def test_load_hovering_near_half_a_core_does_not_flip_the_thread_count(two_threads):
    """A thread goes at more than half a core of other load and comes back below a quarter: load
    between the two (a browser, a desktop) leaves the count where it is, either way."""
    machine, load = Machine(), iter([0.0, 0.4, 0.45, 0.6, 0.3, 0.4, 0.3, 0.2, 0.1, 0.4])
    governor = hardware.ThreadGovernor(every=0, sample=lambda: machine.look(next(load)))
    assert [governor.check() for _ in range(9)] == [2, 2, 1, 1, 1, 1, 1, 2, 2]


def test_threads_are_looked_at_again_only_every_few_seconds(two_threads):
    machine = Machine()
    governor = hardware.ThreadGovernor(every=3600, sample=lambda: machine.look(2.0))
    assert [governor.check() for _ in range(3)] == [2, 2, 2]  # not a second has passed, let alone an hour
    assert machine.now == 1  # looked at once, when it was made
    governor = hardware.ThreadGovernor(every=3600, first=0, sample=lambda: machine.look(2.0))
    assert [governor.check() for _ in range(3)] == [1, 1, 1]  # the first look at once, the next in an hour
    assert machine.now == 3


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux's /proc/stat")
def test_only_other_processes_count_as_busy():
    """Another process spinning is seen; this process's own work is not."""
    before = hardware._sample()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass"])
    spinner.wait()
    others = hardware._others(before, hardware._sample())
    assert 0.6 < others < 1.4
    before, end = hardware._sample(), time.perf_counter() + 1.0
    while time.perf_counter() < end:  # this process busy on one core
        pass
    assert hardware._others(before, hardware._sample()) < 0.4


def test_training_gives_a_thread_back_when_another_process_takes_its_core(monkeypatch, tiny_run, tmp_path):
    """train.threads: 0 looks at the load again while training (metrics.jsonl records the count);
    a number stays as set."""
    import functools
    import json

    from conftest import tiny_config
    from nmt import train, translate

    machine = Machine()
    governed = functools.partial(hardware.ThreadGovernor, every=0, sample=lambda: machine.look(1.0))
    monkeypatch.setattr(train, "ThreadGovernor", governed)
    decoding = []  # validation's decoding follows the load only when training does (torch's count then)
    monkeypatch.setattr(translate, "ThreadGovernor", lambda: decoding.append(torch.get_num_threads()) or governed())
    before = torch.get_num_threads()
    try:
        for threads in ("0", "2"):
            decoding.clear()
            torch.set_num_threads(2)
            monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
            monkeypatch.setattr(hardware, "busy_cores", lambda: 0.0)  # a quiet machine at the start
            run = tmp_path / threads
            train.Trainer(tiny_config(tmp_path, f"train.threads={threads}", "train.max_steps=20",
                                      "train.valid_every=20"), tiny_run.data, tiny_run.tokenizer, run).train()
            logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert [line["threads"] for line in logged if line["kind"] == "train"] == [1 if threads == "0" else 2]
            assert decoding == ([1] if threads == "0" else [])
            assert torch.get_num_threads() == 2  # a library caller's next work gets the count back
    finally:
        torch.set_num_threads(before)


def test_a_trainer_runs_with_train_threads_and_gives_the_caller_its_count_back(tiny_run, tmp_path):
    import json

    from conftest import tiny_config
    from nmt import train

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        trainer = train.Trainer(tiny_config(tmp_path, "train.threads=2", "train.max_steps=20", "train.valid_every=20"),
                                tiny_run.data, tiny_run.tokenizer, tmp_path / "run")
        assert torch.get_num_threads() == 1  # building a trainer leaves torch's count alone
        trainer.train()
        assert torch.get_num_threads() == 1
        logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [line["threads"] for line in logged if line["kind"] == "train"] == [2]
    finally:
        torch.set_num_threads(before)


def test_train_threads_0_never_takes_more_threads_than_torch_has(monkeypatch, tiny_run, tmp_path):
    """torch's count is one per physical core, or OMP_NUM_THREADS: training chose one per logical
    CPU whatever it was (OMP_NUM_THREADS=1 trained with 2; a 4-core, 8-thread laptop with 8), and
    an idle machine let the governor climb to that too. Decoding already kept to torch's count."""
    import functools
    import json

    from conftest import tiny_config
    from nmt import train

    machine = Machine()
    monkeypatch.setattr(train, "ThreadGovernor",
                        functools.partial(hardware.ThreadGovernor, every=0, sample=lambda: machine.look(0.0)))
    monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
    monkeypatch.setattr(hardware, "busy_cores", lambda: 0.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train.Trainer(tiny_config(tmp_path, "train.threads=0", "train.max_steps=20", "train.valid_every=20"),
                      tiny_run.data, tiny_run.tokenizer, tmp_path / "run").train()
        logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [line["threads"] for line in logged if line["kind"] == "train"] == [1]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000\n"}, 2.0), ({"cpu.max": "150000 100000\n"}, 1.5), ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None), ({}, None),
    ({"cpu.max": "garbage"}, None)])
def test_a_cgroup_cpu_limit_is_read_from_v2_or_v1_files(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert hardware.cpu_quota(tmp_path) == quota


def test_a_cgroup_cpu_limit_caps_the_threads_and_turns_load_sensing_off(monkeypatch, two_threads):
    """docker --cpus=1.5 on a 64-CPU host: the affinity mask lists all 64, so 0 chose up to 64
    threads taking turns at 1.5 CPUs' time, and /proc/stat's load was the host's, not ours."""
    monkeypatch.undo()  # two_threads' stand-in for the cores: the real function is under test
    torch.set_num_threads(64)
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(hardware, "cpu_quota", lambda: 1.5)
    monkeypatch.setattr(hardware, "busy_cores", lambda: pytest.fail("the host's load read as ours"))
    assert hardware._usable_cores() == 2 and not hardware.load_visible()
    assert hardware.choose_threads(0) == 2
    assert hardware.ThreadGovernor()._last is None  # no looks
    # as many cores pinned as the limit allows (--cpuset-cpus 0-1 --cpus 2): /proc/stat's lines are ours
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert hardware.load_visible()


@pytest.mark.parametrize("env, bound", [
    ({"OMP_PROC_BIND": "true"}, True), ({"OMP_PLACES": "cores"}, True), ({"GOMP_CPU_AFFINITY": "0-1"}, True),
    ({"KMP_AFFINITY": "granularity=fine,compact,1,0"}, True), ({"OMP_PROC_BIND": "false", "OMP_PLACES": "cores"}, False),
    ({"KMP_AFFINITY": "disabled"}, False), ({"KMP_AFFINITY": "none"}, False), ({}, False)])
def test_openmp_binding_is_told_from_settings_that_bind_nothing(monkeypatch, env, bound):
    """OMP_PROC_BIND=false overrides OMP_PLACES; KMP_AFFINITY=disabled or none binds nothing: the
    thread count was pinned and the governor turned off for them."""
    for name in hardware.OMP_BINDING:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hardware._omp_bound() is bound


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to tell one from all")
def test_openmp_bound_threads_are_not_cut_to_the_main_threads_one_cpu():
    """OMP_PROC_BIND pins the main thread to one CPU as torch starts: its affinity mask said 1,
    so training ran on one thread and decoding was held to one, with no word."""
    probe = ("import torch; from nmt import hardware; torch.set_num_threads(2); torch.ones(4096).sum(); "
             "g = hardware.ThreadGovernor()\n"
             "with g: inside = torch.get_num_threads()\n"
             "print(hardware.choose_threads(0), inside, hardware.load_visible())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_PROC_BIND": "true", "OMP_NUM_THREADS": "2"})
    assert out.stdout.split() == ["2", "2", "False"]


def test_decoding_gives_a_thread_back_while_another_process_takes_its_core(monkeypatch, tiny_run, two_threads):
    """nmt translate, evaluate and report decode with a thread fewer while the machine is busy,
    the same translations, and torch's count as it was afterwards; the next call (nmt translate's
    next chunk) begins with the thread already given back. follow_load=False leaves the count."""
    import functools

    from nmt import translate

    machine, seen = Machine(), []
    monkeypatch.setattr(translate, "ThreadGovernor",
                        functools.partial(hardware.ThreadGovernor, every=0, sample=lambda: machine.look(1.0)))
    lines = ["hola mundo", "el perro come", "", "la casa es grande"] * 5

    def progress(n):  # a sentence done (the empty lines are counted at once, before decoding)
        if n == 1:
            seen.append(torch.get_num_threads())

    translator = translate.Translator.from_checkpoint(tiny_run.root / "best")
    followed = translator.translate(lines, progress=progress)
    assert seen[0] == 2 and 1 in seen and torch.get_num_threads() == 2
    seen.clear()
    assert translator.translate(lines, progress=progress) == followed
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen.clear()
    translator.follow_load = False
    assert translator.translate(lines, progress=progress) == followed
    assert set(seen) == {2}


def test_decoding_never_takes_more_threads_than_torch_has_at_the_call(monkeypatch, tiny_run, two_threads):
    """A caller who lowers torch's count between two calls keeps it, however idle the machine."""
    import functools

    from nmt import translate

    machine, seen = Machine(), []
    monkeypatch.setattr(translate, "ThreadGovernor",
                        functools.partial(hardware.ThreadGovernor, every=0, sample=lambda: machine.look(0.0)))
    translator = translate.Translator.from_checkpoint(tiny_run.root / "best")
    lines = ["hola mundo", "el perro come", "la casa es grande"] * 5
    translator.translate(lines)
    torch.set_num_threads(1)
    translator.translate(lines, progress=lambda n: seen.append(torch.get_num_threads()))
    assert set(seen) == {1} and torch.get_num_threads() == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(NmtError, match="CUDA is not available"):
        hardware.pick_device("cuda")
    assert hardware.pick_device(None).type == "cpu"
    assert hardware.pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("name", ["mps", "xpu", "meta"])
def test_a_device_nmt_does_not_run_on_is_a_clear_error(name):
    with pytest.raises(NmtError, match=f"device '{name}' is not supported: nmt runs on cpu, cuda or cuda:N"):
        hardware.pick_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x"])
def test_a_device_torch_does_not_know_is_a_clear_error(name):
    with pytest.raises(NmtError, match=f"unknown device '{name}': use cpu, cuda or cuda:N"):
        hardware.pick_device(name)


FRAGMENTED_HEAP = textwrap.dedent("""
    import ctypes, sys
    from nmt.hardware import trim_heap

    def rss_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(100_000) for _ in range(3000)]  # below the mmap threshold: heap
    for block in blocks:
        ctypes.memset(block, 1, 100_000)  # touched: resident
    for block in blocks[:-1]:
        libc.free(block)  # the last block pins the heap's top, so glibc cannot shrink it itself
    before = rss_mib()
    trimmed = trim_heap()
    print(trimmed, before - rss_mib())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_hands_freed_memory_back():
    out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    trimmed, released_mib = out.stdout.split()
    if trimmed != "True":
        pytest.skip("not glibc")
    assert float(released_mib) > 200  # of the ~286 MiB freed behind the last block


STEP_BUFFERS = textwrap.dedent("""
    import ctypes, resource, sys
    from nmt.hardware import hold_heap

    held = hold_heap() if sys.argv[1] == "on" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 8 * 2**20  # a beam step's logits: 320 x 6,000 floats

    def step():  # three buffers of that size written and freed, as a decoding step does
        blocks = [libc.malloc(size) for _ in range(3)]
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks:
            libc.free(block)

    step(), step()  # the first: the heap grows (glibc's own threshold rises)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(held, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_held_heap_reuses_a_steps_memory_instead_of_faulting_it_in_again():
    """With glibc's defaults every step hands its 24 MiB back and faults 6,144 pages in again;
    with the heap held the next step reuses them (nmt.hardware.hold_heap)."""
    def faults(arm: str, **env: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", STEP_BUFFERS, arm], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        held, count = out.stdout.split()
        return held, int(count)

    held, with_hold = faults("on")
    if held != "True":
        pytest.skip("not glibc")
    _, default = faults("off")
    assert default > 5 * 6144 // 2  # the pages of five steps, faulted in again
    assert with_hold < 200
    held, opted_out = faults("on", NMT_HOLD_HEAP="0")  # the user's opt-out: glibc's defaults
    assert held == "False" and opted_out > 5 * 6144 // 2


def test_a_bad_hold_heap_setting_is_refused(monkeypatch):
    from nmt.hardware import hold_heap

    hold_heap.cache_clear()
    monkeypatch.setenv("NMT_HOLD_HEAP", "yes")
    with pytest.raises(NmtError, match="NMT_HOLD_HEAP must be 0 or 1, not 'yes'"):
        hold_heap()
    hold_heap.cache_clear()


def test_decoding_and_training_hold_the_heap(monkeypatch, tiny_run, tmp_path):
    """Translator.hypotheses and Trainer hold the heap: what a search step or a training step
    frees, the next reuses."""
    from conftest import tiny_config
    from nmt import train, translate

    calls = []
    monkeypatch.setattr(translate, "hold_heap", lambda: calls.append("decode"))
    monkeypatch.setattr(train, "hold_heap", lambda: calls.append("train"))
    translate.Translator.from_checkpoint(tiny_run.root / "best").translate(["hola", ""], beam=2)
    assert calls == ["decode"]
    train.Trainer(tiny_config(tmp_path), tiny_run.data, tiny_run.tokenizer, tmp_path / "run")
    assert calls == ["decode", "train"]


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_bf16_is_native(monkeypatch, caplog, native):
    """auto picks bf16 only where it is fast; fp32 and bf16 are taken as asked, an emulated bf16
    with a warning (on an AVX2 CPU a bf16 training step was 34x slower than fp32)."""
    monkeypatch.setattr(hardware, "native_bf16", lambda device_type: native)
    cpu = torch.device("cpu")
    assert hardware.resolve_precision("auto", cpu, "train.precision") == ("bf16" if native else "fp32")
    assert hardware.resolve_precision("fp32", cpu, "train.precision") == "fp32"
    with caplog.at_level("WARNING", logger="nmt.hardware"):
        assert hardware.resolve_precision("bf16", cpu, "train.precision") == "bf16"
    assert ("no native bf16" in caplog.text) == (not native)
    with pytest.raises(NmtError, match="train.precision must be auto, fp32 or bf16"):
        hardware.resolve_precision("fp16", cpu, "train.precision")
    assert hardware.resolve_decode_precision("int8", cpu, "decode.precision") == "int8"  # decoding only
    assert hardware.resolve_decode_precision("auto", cpu, "decode.precision") == ("bf16" if native else "fp32")
    with pytest.raises(NmtError, match="train.precision must be auto, fp32 or bf16"):
        hardware.resolve_precision("int8", cpu, "train.precision")


def test_native_bf16_follows_the_cpu_flags():
    """The probe agrees with the CPU's own flags (Linux): avx512_bf16 or AMX tiles."""
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        pytest.skip("oneDNN held below the CPU's instructions (the next test)")
    try:
        flags = set(open("/proc/cpuinfo", encoding="ascii").read().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert hardware.native_bf16("cpu") == bool(flags & {"avx512_bf16", "amx_tile"})


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE_VNNI", "avx512_core"])
def test_a_process_held_below_avx512_bf16_has_no_native_bf16(isa):
    """ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN, which runs CPU bf16 products, off avx512_bf16 and AMX:
    bf16 is emulated there whatever the CPU's flags say, so ``auto`` must choose fp32. So do the
    AVX-512 caps below AVX512_CORE_BF16 (``auto`` chose bf16 there, 2.6x slower than fp32)."""
    probe = ("import torch; from nmt.hardware import native_bf16, resolve_precision; "
             "print(native_bf16('cpu'), resolve_precision('auto', torch.device('cpu'), 'train.precision'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "ONEDNN_MAX_CPU_ISA": isa})
    assert out.stdout.split() == ["False", "fp32"]


@pytest.mark.parametrize("major, native", [(7, False), (8, True)])
def test_auto_precision_on_a_gpu_without_bf16_units_is_fp32(monkeypatch, major, native):
    """torch.cuda.is_bf16_supported() counts emulated bf16 by default: on a T4 or V100 (compute
    capability 7.x) ``auto`` trained in slow, emulated bf16, without the warning."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # it emulates
    monkeypatch.setattr(torch.version, "hip", None)
    hardware.native_bf16.cache_clear()
    try:
        assert hardware.native_bf16("cuda") is native
        assert hardware.resolve_precision("auto", torch.device("cuda"), "train.precision") == ("bf16" if native else "fp32")
    finally:
        hardware.native_bf16.cache_clear()
