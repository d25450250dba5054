"""Peak memory and time of the real training loop with and without heap trimming, and with the
heap held (``nmt.hardware.hold_heap``, the default) or left to glibc's defaults.

    python benchmarks/heap_trim.py 10    # train.trim_heap_every=10 (the default)
    python benchmarks/heap_trim.py 0     # never trim
    python benchmarks/heap_trim.py 10 --heap default --steps 600 --valid-every 200

``--steps`` steps (200 unless told) of ``Trainer.train`` on the benchmark's prepared Bible data
(default config; no validation unless ``--valid-every``), in a process of its own so
``ru_maxrss`` is this run's. Alternate the settings a few times: this VM's speed drifts. The
source of the lever-table rows on heap trimming and on holding the heap in training.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("every", type=int, nargs="?", default=10, help="train.trim_heap_every")
    parser.add_argument("--heap", choices=("held", "default"), default="held",
                        help="held: nmt.hardware.hold_heap (as nmt trains); default: glibc's own thresholds")
    parser.add_argument("--steps", type=at_least_one, default=200)
    parser.add_argument("--valid-every", type=int, default=100000)
    args = parser.parse_args()
    if args.heap == "default":
        import nmt.train
        import nmt.translate

        nmt.train.hold_heap = nmt.translate.hold_heap = lambda: False
    ensure_work(WORK)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_for([f"train.max_steps={args.steps}", f"train.valid_every={args.valid_every}",
                               f"train.trim_heap_every={args.every}"], Path(run_dir))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"trim every {args.every}, heap {args.heap}: peak RSS {usage.ru_maxrss / 1024:,.0f} MiB, "
          f"{seconds:.0f} s for {args.steps} steps, {(usage.ru_minflt - faults) / args.steps:,.0f} page faults a step")


if __name__ == "__main__":
    main()
