"""The one exception type the command line turns into a one-line error and a non-zero exit."""


class NmtError(Exception):
    """Bad input or state the user can fix; ``str(error)`` is one line that says what and where."""
