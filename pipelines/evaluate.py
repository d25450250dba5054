"""Stage 4: decode the test split (greedy and beam), score it → runs/<name>/report.json (+ .md).

    python pipelines/evaluate.py configs/NAME.yaml [section.key=value …]

Evaluates runs/<name>/best with the config's decode settings (beam, alpha, precision, batch size,
length limit), not the ones the checkpoint was trained with: editing decode.* re-evaluates
without retraining. ``nmt evaluate --checkpoint`` evaluates any checkpoint with its own.
"""

from nmt import pipeline
from nmt.cli import score_lines
from nmt.config import load_config, run_paths
from nmt.terminal import guarded, script_args


@guarded
def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    print(score_lines(pipeline.evaluate(run_paths(config).root / "best", decode=config.decode)))


if __name__ == "__main__":
    main(script_args(__doc__))
