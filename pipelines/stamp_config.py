"""Stage 0: resolve the experiment config and write one stamp file per section.

    python pipelines/stamp_config.py configs/NAME.yaml [section.key=value …]

Writes runs/<name>/config/<section>.json, but only when its content changed, so the Makefile
reruns exactly the stages whose settings changed (editing decode.beam does not retrain).
"""

import json
import sys
from pathlib import Path

from nmt.atomic import atomic_write_text
from nmt.cli import guarded
from nmt.config import load_config, run_paths


@guarded
def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    folder = run_paths(config).root / "config"
    for section, values in config.to_dict().items():
        if section == "name":
            continue
        path = folder / f"{section}.json"
        text = json.dumps(values, indent=2, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    atomic_write_text(folder / "resolved.json", config.to_json() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
