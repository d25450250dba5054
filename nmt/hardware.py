"""Which device to run on, how many CPU threads to use, whether bf16 pays here, and the C heap kept
from growing and from handing back memory it is about to reuse."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nmt.config import Precision, choice_error
from nmt.errors import NmtError

log = logging.getLogger(__name__)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where unavailable.

    Why: a training step allocates many buffers whose shapes change with every batch; glibc serves
    them from its heap once its (self-raising) mmap threshold has grown, and the heap fragments
    without bound. Measured on the default model: resident memory grew ~10 MiB a step (5.4 GiB after
    a 20-minute run); trimming every 10 steps: peak 2,426-2,438 MiB against 3,569-3,689 over 200
    steps. A trim costs 0.11-0.18 s on the Zen 4 VM: the call, and the next step's buffers faulting
    their pages in again (``benchmarks/heap_trim.py --cost``): 1.6 % of the default model's time at
    every 10 steps, 2.5-3.1 % of the Luong model's. Every 100 (``train.trim_heap_every``, the
    default) gets that back for a higher peak: the default model 2,831 MiB against 2,225 over 1,000
    steps; memory still comes back to the same level at each trim
    (``benchmarks/results/2026-12-07-amd-epyc-zen4-2c-trim-interval-ab.md``). A fixed mmap threshold
    below the buffers' sizes instead (``mallopt``) kept memory level too but halved the speed: a
    page fault per buffer.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
HELD_MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
HELD_TRIM_THRESHOLD = 512 * 2**20  # free memory above the heap's top kept up to this much
HOLD_ENV = "NMT_HOLD_HEAP"  # 0: leave glibc's allocator as it is (a host process tuning its own)


@functools.cache
def hold_heap() -> bool:
    """Let the C heap keep freed memory for the next buffers (glibc ``mallopt``): buffers up to
    32 MiB come from the heap, and up to 512 MiB free at its top is kept. False where unavailable.

    Why: by default glibc maps buffers above a self-raising threshold (from 128 KiB) afresh and
    hands free memory at the heap's top back to the OS once it exceeds twice that threshold. A
    beam search step allocates and frees a few buffers of the logits' size (320 x 6,000 floats:
    7.7 MB), so step after step gave its pages back and faulted them in again: 0.6-2.1 million
    page faults decoding the 2,001 test sentences with beam 5, 55-65 thousand with the heap held
    (~1.4 us a fault on the Zen 4 VM). Beam 5 in fp32 and bf16 ran 1.05-1.20x as fast, int8
    (fewer faults to begin with) within noise (``benchmarks/heap_hold.py``). Peak memory is
    unchanged, and ``trim_heap`` still hands everything free back when training calls it. Once
    per process. The setting is process-wide: ``NMT_HOLD_HEAP=0`` leaves it alone (for a process
    that embeds nmt and tunes its allocator itself).
    """
    choice = os.environ.get(HOLD_ENV, "1").strip() or "1"
    if choice not in ("0", "1"):
        raise NmtError(f"{HOLD_ENV} must be 0 or 1, not {choice!r}")
    libc = _glibc()
    if libc is None or choice == "0":
        return False
    held = libc.mallopt(M_MMAP_THRESHOLD, HELD_MMAP_THRESHOLD) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, HELD_TRIM_THRESHOLD) == 1 and held


# set, OpenMP pins its threads, the main thread to one CPU (its affinity mask then says 1), and
# what another process takes is no longer a thread of ours made to wait: the user placed them
OMP_BINDING = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")


def _omp_bound() -> bool:
    setting = {name: os.environ.get(name, "").strip().lower() for name in OMP_BINDING}
    if setting["OMP_PROC_BIND"] == "false":  # overrides OMP_PLACES (the OpenMP specification)
        return False
    if setting["OMP_PROC_BIND"] or setting["OMP_PLACES"] or setting["GOMP_CPU_AFFINITY"]:
        return True
    kmp = setting["KMP_AFFINITY"]  # Intel's OpenMP: "disabled", "none" (its default) bind nothing
    return bool(kmp) and not any(word in kmp for word in ("disabled", "none"))


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs' worth of time a cgroup limit allows this process (``docker --cpus``, a Kubernetes
    CPU limit), None without one: v2's ``cpu.max``, else v1's CFS quota and period."""
    try:
        quota, period = (root / "cpu.max").read_text(encoding="ascii").split()[:2]  # "max 100000": none
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int((root / "cpu" / name).read_text(encoding="ascii")) for name in ("cpu.cfs_quota_us",
                                                                                              "cpu.cfs_period_us"))
        return quota / period if quota > 0 and period > 0 else None  # quota -1: none
    except (OSError, ValueError):
        return None


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask), no more than a cgroup CPU limit
    allows (rounded up): on a 64-core host under ``--cpus=2``, 64 threads took turns at 2 CPUs'
    time, and every parallel region waited for the descheduled ones. With OpenMP's threads bound
    (``OMP_BINDING``), torch's count."""
    if _omp_bound():
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if quota := cpu_quota():
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def load_visible() -> bool:
    """Whether other processes' load on our cores can be read from /proc/stat: not with OpenMP's
    threads bound (the user placed them), nor under a cgroup CPU limit smaller than the cores we
    may run on (their load is other containers', and not what limits us); a limit with as many
    cores pinned (``--cpuset-cpus 0-1 --cpus 2``, a Kubernetes pod given whole cores) reads true."""
    if _omp_bound():
        return False
    quota = cpu_quota()
    if quota is None:
        return True
    try:
        return len(os.sched_getaffinity(0)) <= math.ceil(quota)
    except AttributeError:
        return False


def thread_ceiling() -> int:
    """The most threads nmt runs with unless told a number: one per usable core, never above
    torch's count (one per physical core, or ``OMP_NUM_THREADS``, or what the caller set)."""
    return max(1, min(_usable_cores(), torch.get_num_threads()))


def _sample() -> tuple[float, float, float] | None:
    """(now, seconds the cores this process may run on have been busy, seconds of CPU this process
    has used), each counted from some fixed point: two samples' differences say how busy other
    processes kept our cores. None where /proc/stat cannot be read (not Linux)."""
    try:
        mine = os.sched_getaffinity(0)
    except AttributeError:
        mine = None
    busy = 0
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or (mine is not None and int(name[3:]) not in mine):
                    continue  # the "cpu" line sums every core, ours or not
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
                busy += user + nice + system + irq + softirq + steal  # guest time is inside user and nice
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return time.monotonic(), busy / ticks, time.process_time()


def _others(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores kept busy by other processes between two samples: our cores' busy time less our own."""
    wall, busy, own = (b - a for a, b in zip(before, after))
    return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def busy_cores(seconds: float = 0.5) -> float:
    """Cores (of those this process may run on) kept busy by other processes right now, sampled
    ``seconds`` apart; 0 where unknown."""
    before = _sample()
    time.sleep(seconds)
    after = _sample()
    return 0.0 if before is None or after is None else _others(before, after)


def _threads_for(cores: int, busy: float) -> int:
    return max(1, min(cores, round(cores - busy)))


def choose_threads(requested: int, busy: float | None = None) -> int:
    """``requested`` threads if set; else one per core that no other process keeps busy, up to
    ``thread_ceiling()``.

    With OpenMP, a thread that shares its core with another busy process makes every parallel
    region wait for it: on 2 cores, a second busy process slowed training 4-10x with 2 threads.
    """
    cores = _usable_cores()
    if requested > cores:  # taken as asked, but each parallel region then waits on threads sharing cores
        log.warning("train.threads=%d is more than the %d cores this process may use: expect it several times "
                    "slower than with %d", requested, cores, cores)
    if requested > 0:
        return requested
    most = thread_ceiling()
    if busy is None and not load_visible():
        return most
    busy = busy_cores() if busy is None else busy
    threads = min(most, _threads_for(cores, busy))
    if threads < most:
        log.warning("%.1f of %d cores busy with other work: using %d thread(s) (set train.threads to override)",
                    busy, cores, threads)
    return threads


BACK_MARGIN = 0.25  # cores of other processes' load, beyond the half a thread is taken away at, to give it back


class ThreadGovernor:
    """Keeps torch's CPU threads at one per core that other processes leave free while the work
    goes on; ``choose_threads`` looks only once, at the start.

    A process started later (a second training, a test suite) takes a core one of our threads runs
    on, and every OpenMP parallel region then waits for that thread: on 2 cores, two trainings side
    by side went 1.8x as fast together once the first gave a thread back, and a training beside a
    2-thread program 27-36x (benchmarks/README.md, "Training beside another busy process").

    ``check()``, called between steps (training) or sentences (decoding), looks ``first`` seconds
    after the governor is made and then every ``every`` seconds: it takes a thread away at the
    first look that finds more than half a core taken (staying costs most), and gives it back, up
    to ``most`` (default: the usable cores), only after two looks in a row find less than a quarter
    (a burst of the other's, or load hovering near half a core, flips nothing). As a context
    manager it runs the work inside with the count it last chose, never above torch's count at the
    entry, and then restores torch's.
    """

    def __init__(self, every: float = 5.0, most: int | None = None, first: float = 1.0,
                 sample: Callable[[], tuple[float, float, float] | None] | None = None):
        self.every, self._sample = every, sample or _sample  # sample: /proc/stat, or a test's stand-in
        self.threads = torch.get_num_threads()
        self.cores = _usable_cores()  # what other processes' load is taken from
        self.most = self._ceiling = most or self.cores  # the most threads it gives (in a with block: fewer)
        # no looks where the load cannot be read as ours to yield to (load_visible), unless a test's stand-in
        self._last = self._sample() if sample is not None or load_visible() else None
        self._more_wanted = False
        # the first look sooner: a decoding call beside a busy process ran at the slow speed until it
        # (a second of load on 2 cores is 200 ticks of /proc/stat, plenty to tell a core taken)
        self._due = time.monotonic() + min(first, every)

    def check(self) -> int:
        """torch's thread count after this look: changed when other processes' load has."""
        if self._last is None or time.monotonic() < self._due:
            return self.threads  # (~0.1 µs; a look reads /proc/stat, ~25 µs)
        now, self._due = self._sample(), time.monotonic() + self.every
        if now is None:
            return self.threads
        others, self._last = _others(self._last, now), now
        wanted = min(self._ceiling, _threads_for(self.cores, others))
        if wanted > self.threads:  # a thread back only with a quarter core to spare: load near the line flips nothing
            wanted = max(self.threads, min(self._ceiling, _threads_for(self.cores, others + BACK_MARGIN)))
        if wanted < self.threads or (wanted > self.threads and self._more_wanted):
            log.warning("%.1f of %d cores busy with other work: %d thread(s) now, %d before",
                        others, self.cores, wanted, self.threads)
            torch.set_num_threads(wanted)
            self.threads = wanted
        self._more_wanted = wanted > self.threads
        return self.threads

    def __enter__(self) -> ThreadGovernor:
        """The count it last chose, for the work inside (a second decoding call begins where the
        first ended); torch's count now is restored at the exit."""
        self._start = torch.get_num_threads()
        self._ceiling = min(self.most, self._start)  # a caller who set fewer threads since gets no more
        self.threads = min(self.threads, self._ceiling)
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        """Back to the count torch had at the entry: decoding leaves torch as it found it."""
        torch.set_num_threads(self._start)
        self._ceiling = self.most


def pick_device(name: str | None) -> torch.device:
    """The device named (cpu, cuda, cuda:N), checked here; None: CUDA where present, else the CPU."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch lists two dozen device types, most of which nmt never ran on
        raise NmtError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu …: torch knows them; nmt's paths are untried there
        raise NmtError(f"device {name!r} is not supported: nmt runs on cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NmtError(f"device {name} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise NmtError(f"device {name} requested, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA) below
# AVX512_CORE_BF16: oneDNN then emulates bf16 whatever the CPU has (a linear layer 2.6x slower than
# fp32 under AVX512_CORE_VNNI on a Zen 4 with avx512_bf16, where bf16 is otherwise 0.54x)
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU with bf16 units (compute capability 8.0,
    Ampere, and up), or a CPU with avx512_bf16 or AMX tiles that oneDNN, which runs CPU bf16
    products, may use. Elsewhere (AVX2 CPUs: most laptops) oneDNN emulates them: a bf16 training
    step of the default model was 34x slower than fp32 on an AMD EPYC (Zen 3, AVX2;
    benchmarks/README.md). A process whose oneDNN is held below AVX512_CORE_BF16 by
    ``ONEDNN_MAX_CPU_ISA`` is such a CPU too, whatever the hardware has. On a T4 or V100,
    ``torch.cuda.is_bf16_supported()`` says True by default: it counts emulated bf16."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    capped = {os.environ.get(name, "").strip().upper() for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if capped & _ISA_WITHOUT_BF16:
        return False
    cpu = torch.cpu
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()) and onednn_bf16()
    except AttributeError:  # a torch without these probes: assume not
        return False


@functools.cache
def onednn_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU at all (AVX-512 and up), its LSTM among them;
    without them a bf16 nn.LSTM call fails ("could not create a primitive descriptor")."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device, setting: str) -> str:
    """fp32 or bf16 for ``requested`` (``setting``'s value): "auto" is bf16 where bf16 is native
    (``native_bf16``), else fp32; an explicit "bf16" without native bf16 runs, with a warning."""
    if error := choice_error(setting, requested, Precision):
        raise NmtError(error)
    native = native_bf16(device.type)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        log.warning("%s is bf16 but this %s has no native bf16 (avx512_bf16 or AMX): bf16 is emulated and "
                    "much slower than fp32; use %s: auto or fp32", setting, device.type, setting)
    return requested


def resolve_decode_precision(requested: str, device: torch.device, setting: str) -> str:
    """``resolve_precision`` for decoding, where "int8" (8-bit products on the CPU, ``nmt.quantize``)
    is a choice too and is kept as it is."""
    return requested if requested == "int8" else resolve_precision(requested, device, setting)
