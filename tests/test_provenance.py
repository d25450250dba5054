"""What a summary or report says made it: versions, and the commit of nmt's source."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nmt

GIT = ["git", "-c", "user.name=nmt tests", "-c", "user.email=tests@nmt.invalid", "-c", "commit.gpgsign=false"]


def _versions(root: Path) -> dict:
    """versions() as nmt's copy in ``root`` says them, in a process of its own."""
    code = "import json; from nmt.provenance import versions; print(json.dumps(versions()))"
    shown = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(root)})
    return json.loads(shown.stdout)


def test_the_commit_the_source_is_at_is_recorded_and_changes_to_it_are_said(tmp_path):
    """nmt's version stays 0.1.0 from commit to commit: a summary or report named no code."""
    root = tmp_path / "checkout"
    shutil.copytree(Path(nmt.__file__).parent, root / "nmt", ignore=shutil.ignore_patterns("__pycache__"))
    plain = _versions(root)  # not a git checkout (an installed copy): no commit, nothing made up
    assert "commit" not in plain and set(plain) == {"nmt", "torch", "sentencepiece", "python"}
    for command in (["init", "-q"], ["add", "nmt"], ["commit", "-q", "-m", "nmt"]):
        subprocess.run([*GIT, "-C", str(root), *command], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert _versions(root)["commit"] == head
    (root / "scratch.txt").write_text("not tracked\n")  # an untracked file is no change to the code
    assert _versions(root)["commit"] == head
    with (root / "nmt" / "__init__.py").open("a") as edited:
        edited.write("# edited\n")
    assert _versions(root)["commit"] == head + "+changes"
