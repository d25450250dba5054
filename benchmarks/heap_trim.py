"""Peak memory and time of the real training loop with and without heap trimming.

    python benchmarks/heap_trim.py 10    # train.trim_heap_every=10 (the default)
    python benchmarks/heap_trim.py 0     # never trim

200 steps of ``Trainer.train`` on the benchmark's prepared Bible data (default config, no
validation), in a process of its own so ``ru_maxrss`` is this run's. Alternate the two settings
a few times: this VM's speed drifts. The source of the lever-table row on heap trimming.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_step import trainer_for  # noqa: E402
from workdir import WORK, ensure_work  # noqa: E402


def main() -> None:
    every = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    ensure_work(WORK)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = trainer_for(["train.max_steps=200", "train.valid_every=100000", f"train.trim_heap_every={every}"],
                              Path(run_dir))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"trim every {every}: peak RSS {peak:,.0f} MiB, {seconds:.0f} s for 200 steps")


if __name__ == "__main__":
    main()
