"""nmt: readable, fast LSTM translation (see README.md; the command line is ``nmt.cli``).

Kept free of imports, so ``nmt --help`` and ``nmt --version`` stay instant. The version is
stated here once; the package metadata reads it (``pyproject.toml``)."""

__version__ = "0.1.0"
