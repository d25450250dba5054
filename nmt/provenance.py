"""What made a number: the versions and the source commit that train_summary.json and the
reports record, so a result can be traced to the code that made it."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nmt import __version__

CHANGED = "+changes"  # after a commit: tracked files differed from it when the number was made


def versions() -> dict[str, str]:
    """nmt's, torch's, SentencePiece's and Python's versions, and nmt's source commit where it runs
    from a git checkout (``source_commit``: ``make``'s editable install). nmt's own version number
    stays 0.1.0 from commit to commit, so without the commit a number named no code."""
    import torch

    found = {"nmt": __version__, "torch": torch.__version__, "sentencepiece": installed("sentencepiece"),
             "python": platform.python_version()}
    commit = source_commit()
    return found | ({"commit": commit} if commit else {})


def installed(package: str) -> str:
    """An installed package's version, from its metadata (nothing imported), or "not installed"."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@functools.cache
def source_commit() -> str | None:
    """The git commit nmt's source is at, with ``CHANGED`` appended where tracked files differ from
    it; None where nmt does not run from a git checkout of its own (an installed wheel) or git
    cannot say. Asked once a process."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or not (root / "nmt" / "__init__.py").is_file():
        return None
    try:
        ask = functools.partial(subprocess.run, capture_output=True, text=True, timeout=30, check=True)
        git = ["git", "--no-optional-locks", "-C", str(root)]  # status would refresh (write) the index
        head = ask([*git, "rev-parse", "HEAD"]).stdout.strip()
        changed = ask([*git, "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (CHANGED if changed else "") if head else None


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes (what ``sha256sum`` prints): a report's test source and
    references, so a score can be checked to be of the same text. None for what is not a regular
    file (``<(…)``, a pipe: read once already, opening it again would wait for a writer)."""
    if not Path(path).is_file():
        return None
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
