"""Stage 4: decode the test split (greedy and beam), score it → runs/<name>/report.json (+ .md).

    python pipelines/evaluate.py runs/NAME/best
"""


from nmt import pipeline
from nmt.cli import guarded, score_lines, script_args


@guarded
def main(argv: list[str]) -> None:
    print(score_lines(pipeline.evaluate(argv[0])))


if __name__ == "__main__":
    main(script_args(__doc__))
