"""Stage 5: the evaluation report → runs/<name>/report/report.html (+ report.md, report.json).

    python pipelines/report.py runs/NAME/best [OUT_DIR]

Greedy and beam decoding of the test split, confidence intervals, paired significance, length
buckets, a beam sweep on 500 lines, search errors, training curves, attention and examples with
the default ReportOptions; ``nmt report --help`` lists the knobs and takes several checkpoints.
"""

import logging
from pathlib import Path

from nmt.cli import guarded, score_lines, script_args
from nmt.evaluation import build_report


@guarded
def main(argv: list[str]) -> None:
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)
    report = build_report([Path(argv[0])], out_dir=Path(argv[1]) if len(argv) > 1 else None)
    print(score_lines(report))
    print(Path(report["output"]) / "report.html")


if __name__ == "__main__":
    main(script_args(__doc__))
