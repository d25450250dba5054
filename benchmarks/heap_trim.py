"""Peak memory and time of the real training loop with and without heap trimming, and with the
heap held (``nmt.hardware.hold_heap``, the default) or left to glibc's defaults.

    python benchmarks/heap_trim.py 100   # train.trim_heap_every=100 (the default)
    python benchmarks/heap_trim.py 0     # never trim
    python benchmarks/heap_trim.py 10 --heap default --steps 600 --valid-every 200
    python benchmarks/heap_trim.py 10 --step-times a.json --set train.precision=bf16 --set model.attention=luong
    python benchmarks/heap_trim.py 0 --step-times b.json --set train.precision=bf16 --set model.attention=luong
    python benchmarks/heap_trim.py --cost a.json b.json    # what one trim costs: a trimmed, b not

``--steps`` steps (200 unless told) of ``Trainer.train`` on the benchmark's prepared Bible data
(default config; no validation unless ``--valid-every``), in a process of its own so
``ru_maxrss`` is this run's. Alternate the settings a few times: this VM's speed drifts. The
source of the lever-table rows on heap trimming and on holding the heap in training.

A trim's cost is small beside the drift of whole runs, so ``--step-times`` keeps each step's
seconds (trimming included) and ``--cost`` compares two runs step by step, on the same batches
(same seed): the extra seconds of a trimmed run's steps that trim and of the steps after them,
each less the median difference of the other steps (the machine's drift between the runs).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_step import trainer_for  # noqa: E402
from peers.common import at_least_one  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("every", type=int, nargs="?", default=100, help="train.trim_heap_every")
    parser.add_argument("--heap", choices=("held", "default"), default="held",
                        help="held: nmt.hardware.hold_heap (as nmt trains); default: glibc's own thresholds")
    parser.add_argument("--steps", type=at_least_one, default=200)
    parser.add_argument("--valid-every", type=int, default=100000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override (repeat for more), as for nmt train")
    parser.add_argument("--step-times", type=Path, help="write each step's seconds here (JSON)")
    parser.add_argument("--cost", type=Path, nargs=2, metavar=("TRIMMED", "UNTRIMMED"),
                        help="two --step-times files: print what one trim costs, and stop")
    args = parser.parse_args()
    if args.cost:
        print(trim_cost(*(json.loads(path.read_text()) for path in args.cost)))
        return
    if args.heap == "default":
        import nmt.train
        import nmt.translate

        nmt.train.hold_heap = nmt.translate.hold_heap = lambda: False
    ensure_work(WORK)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_for([f"train.max_steps={args.steps}", f"train.valid_every={args.valid_every}",
                               f"train.trim_heap_every={args.every}", *args.set], Path(run_dir))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        ends = [t0]
        trainer.train(lambda progress: ends.append(time.perf_counter()))  # after the step's upkeep, trim included
        seconds = time.perf_counter() - t0
    if args.step_times:
        steps = [end - start for start, end in zip(ends, ends[1:])]
        args.step_times.write_text(json.dumps({"every": args.every, "seconds": steps}))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"trim every {args.every}, heap {args.heap}: peak RSS {usage.ru_maxrss / 1024:,.0f} MiB, "
          f"{seconds:.0f} s for {args.steps} steps, {(usage.ru_minflt - faults) / args.steps:,.0f} page faults a step")


def trim_cost(trimmed: dict, untrimmed: dict) -> str:
    """One trim's cost from two runs' step times (``--step-times``): the trimmed run's extra time in
    the steps that trim and in the steps after them (whose buffers fault their pages in again),
    each less the median extra time of the other steps. The first trim's steps are left out with
    the warm-up (steps 1 to ``every`` + 1)."""
    import numpy as np

    every, n = trimmed["every"], len(trimmed["seconds"])
    if every < 3:  # (every step or every other: no step but a trim's or the next's to take the drift from)
        raise SystemExit(f"the first file needs a run that trims every 3 steps or more, not {every}")
    if untrimmed["every"] != 0 or len(untrimmed["seconds"]) != n:  # (else not the same batches, or trimmed too)
        raise SystemExit("the second file needs a run that never trims (0), of as many steps as the first")
    extra = np.array(trimmed["seconds"]) - np.array(untrimmed["seconds"])
    step = np.arange(1, n + 1)
    counted = step > every + 1
    at_trim, after = counted & (step % every == 0), counted & (step % every == 1)
    trims = at_trim & (step < n)  # (a last trim without a step after it: half its cost unseen)
    if not trims.any():
        raise SystemExit(f"no trim past the first with a step after it: run more than {2 * every} steps")
    drift = float(np.median(extra[counted & ~at_trim & ~after]))
    at, next_ = float(np.median(extra[trims])) - drift, float(np.median(extra[after])) - drift
    mean = float(np.mean(untrimmed["seconds"][every + 1:n]))
    return (f"a trim costs {at + next_:.3f} s: {at:.3f} in its step, {next_:.3f} in the next ({trims.sum()} trims; "
            f"drift {drift:+.3f} s a step); every {every} steps of {mean:.3f} s: {(at + next_) / every / mean:.1%}")


if __name__ == "__main__":
    main()
