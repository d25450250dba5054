"""Stage 0: resolve the experiment config and write one stamp file per section.

    python pipelines/stamp_config.py [--run runs/NAME] [--check] configs/NAME.yaml [section.key=value …]

Writes runs/<name>/config/<section>.json, but only when its content changed, so the Makefile
reruns exactly the stages whose settings changed (editing decode.beam does not retrain). The data
stamp also holds the size and modification time of the local files the data section reads
(``data.source``, ``data.target``), so an edited corpus is prepared again.
``--run`` is the run folder the caller expects (the Makefile's runs/$(NAME)): a config whose
``name`` puts its run elsewhere is an error here, not after training, when make looks for
runs/$(NAME)/best. ``--check`` writes nothing and prints the stamp files that would change, so
the Makefile can tell make which stages an edit reruns, a dry run (make -n) included.
"""

import json
from pathlib import Path

from nmt.atomic import atomic_write_text
from nmt.config import load_config, run_paths
from nmt.corpus import dataset_files
from nmt.errors import NmtError
from nmt.terminal import guarded, script_args


@guarded
def main(argv: list[str]) -> None:
    expected, check = None, False
    while argv[:1] in (["--run"], ["--check"]):
        if argv[0] == "--check":
            check, argv = True, argv[1:]
        elif len(argv) < 3:
            raise NmtError("--run needs a run folder and then the config: --run runs/NAME configs/NAME.yaml")
        else:
            expected, argv = Path(argv[1]), argv[2:]
    config = load_config(argv[0], argv[1:])
    root = run_paths(config).root
    if expected is not None and root != expected:
        raise NmtError(f"{argv[0]}: name is {config.name!r}, so the run would go to {root}, not {expected}; "
                       f"make NAME=X needs configs/X.yaml with name: X")
    changed = {path: text for path, text in _stamps(config, root / "config").items()
               if not path.is_file() or path.read_text(encoding="utf-8") != text}
    if check:
        print(" ".join(str(path) for path in changed))
        return
    for path, text in changed.items():
        atomic_write_text(path, text)


def _stamps(config, folder: Path) -> dict[Path, str]:
    """Each stamp file's content: a section's settings (data's with its files' sizes and times)
    and the whole resolved config."""
    stamps = {}
    for section, values in config.to_dict().items():
        if section == "name":
            continue
        if section == "data":
            values = {**values, "files": _data_files(config.data.source, config.data.target)}
        stamps[folder / f"{section}.json"] = json.dumps(values, indent=2, sort_keys=True) + "\n"
    stamps[folder / "resolved.json"] = config.to_json() + "\n"
    return stamps


def _data_files(*given: str | None) -> dict[str, list[int]]:
    """Size and modification time of each local data file (a hub name is none; a folder: each file
    in it, hidden ones aside): what make's own file prerequisites would compare, for paths a
    Makefile cannot parse out of YAML (quoted, with spaces) and for data.target."""
    files = {}
    for name in filter(None, given):
        path = Path(name).expanduser()
        found = {name: path}
        if path.is_dir():
            found = {f"{name.rstrip('/')}/{file.relative_to(path)}": file for file in dataset_files(path)}
        for key, file in found.items():
            if file.is_file():
                status = file.stat()
                files[key] = [status.st_size, status.st_mtime_ns]
    return files


if __name__ == "__main__":
    main(script_args(__doc__))
