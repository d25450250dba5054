"""Stage 5: the evaluation report → runs/<name>/report/report.html (+ report.md, report.json).

    python pipelines/report.py configs/NAME.yaml [section.key=value …]

Greedy and beam decoding of the test split by runs/<name>/best, with the config's decode settings,
confidence intervals, paired significance, length buckets, a beam sweep on 500 lines, search
errors, training curves, attention and examples with the default ReportOptions; ``nmt report
--help`` lists the knobs and takes several checkpoints.
"""

import logging
from pathlib import Path

from nmt.cli import score_lines
from nmt.config import load_config, run_paths
from nmt.evaluation import build_report
from nmt.terminal import guarded, script_args


@guarded
def main(argv: list[str]) -> None:
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)
    config = load_config(argv[0], argv[1:])
    root = run_paths(config).root
    report = build_report([root / "best"], out_dir=root / "report", decode=config.decode)
    print(score_lines(report))
    print(Path(report["output"]) / "report.html")


if __name__ == "__main__":
    main(script_args(__doc__))
