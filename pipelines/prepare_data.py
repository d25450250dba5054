"""Stage 1: load, normalise, filter and split the parallel text → runs/<name>/data/stats.json.

    python pipelines/prepare_data.py configs/NAME.yaml [section.key=value …]
"""


from nmt import pipeline
from nmt.config import load_config, run_paths
from nmt.terminal import guarded, script_args


@guarded
def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    print(pipeline.prepare(config, run_paths(config)))


if __name__ == "__main__":
    main(script_args(__doc__))
