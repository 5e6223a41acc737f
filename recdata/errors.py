"""The error types every command shares: what the CLI prints as one line instead of a traceback.

``UserError`` is a problem the user can fix (bad input file, wrong value, foreign output folder): the CLI prints
``alignrec <command>: error: <message>`` and exits 1. ``ConfigError`` is a bad flag or config value: exit 2, like
argparse. Both subclass ``ValueError`` so library callers that already catch ``ValueError`` keep working.
The message must name the file / item / key and say what to do.
"""

from __future__ import annotations


class UserError(ValueError):
    """A runtime error caused by the user's input; printed as one line, exit status 1."""

    exit_code = 1


class ConfigError(UserError):
    """A bad flag, config key or config value; printed as one line, exit status 2."""

    exit_code = 2


class InputFileError(UserError, FileNotFoundError):
    """A named input file or folder is missing or unreadable."""


class OutputFolderError(UserError):
    """An output folder that a command may not write into (foreign, or overlapping an input)."""
