"""Device and thread choice."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nmt import hardware
from nmt.errors import NmtError


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(hardware, "_usable_cores", lambda: 2)
    assert hardware.choose_threads(0, busy=0.05) == 2
    assert hardware.choose_threads(0, busy=1.0) == 1
    assert hardware.choose_threads(0, busy=2.0) == 1  # never fewer than one
    assert hardware.choose_threads(3, busy=2.0) == 3  # the user's choice wins


def test_busy_cores_is_a_fraction_of_the_machine():
    busy = hardware.busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


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


def test_a_process_held_to_avx2_has_no_native_bf16():
    """ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN, which runs CPU bf16 products, off avx512_bf16 and AMX:
    bf16 is emulated there whatever the CPU's flags say, so ``auto`` must choose fp32."""
    probe = ("import torch; from nmt.hardware import native_bf16, resolve_precision; "
             "print(native_bf16('cpu'), resolve_precision('auto', torch.device('cpu'), 'train.precision'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert out.stdout.split() == ["False", "fp32"]
