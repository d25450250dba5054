"""Stage 3: train the model → runs/<name>/train_summary.json (best/ and last/ checkpoints beside it).

    python pipelines/train_model.py configs/NAME.yaml [section.key=value …]

Interrupted runs resume from runs/<name>/last at the exact step.
"""

import json

from nmt import pipeline
from nmt.config import load_config, run_paths
from nmt.terminal import ProgressBar, guarded, script_args


@guarded
def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    with ProgressBar() as bar:
        summary = pipeline.train(config, run_paths(config), on_progress=bar)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(script_args(__doc__))
