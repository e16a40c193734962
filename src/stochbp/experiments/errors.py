"""The error the command line reports as one line, without a traceback."""
from __future__ import annotations


class UsageError(Exception):
    """A user error (bad option, setting, directory or data) reported by the CLI."""
