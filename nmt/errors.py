"""The exception type the command line turns into a one-line error and a non-zero exit (and its
kind for unusable data), and the message for a path that is not what it should be."""

from __future__ import annotations

from pathlib import Path


class NmtError(Exception):
    """Bad input or state the user can fix; ``str(error)`` is one line that says what and where."""


class ConfigError(NmtError, ValueError):
    """A configuration that cannot be used; the message is one line for the user."""


class DataError(NmtError, ValueError):
    """Input data that cannot be used; the message is one line for the user."""


def path_error(path: str | Path, what: str, folder: bool = False) -> str | None:
    """Why ``path`` is not the ``what`` it should name ("config file"; with ``folder``, a folder),
    as a one-line message: not found, or there but of the other kind. None when it is one; a
    file is anything there that is not a folder (a pipe such as /dev/stdin or a shell's
    ``<(command)``, read like a file)."""
    path = Path(path)
    if not path.exists():
        return f"{what} not found: {path}"
    if path.is_dir() != folder:
        return f"{path} is a {'file' if folder else 'folder'}, not a {what}"
    return None
