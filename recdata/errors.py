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


# errno -> what to do, for the OSErrors a command meets through no fault of its code (the CLI boundary maps them)
_OS_FIXES = {
    "EACCES": "permission denied; make it readable/writable for this user or choose another path",
    "EPERM": "operation not permitted; make it writable for this user or choose another path",
    "EROFS": "the file system is read-only; choose an output on a writable disk",
    "ENOSPC": "no space left on the device; free space or choose an output on another disk",
    "EDQUOT": "disk quota exceeded; free space or choose an output on another disk",
    "EISDIR": "it is a folder where a file is expected; pass a file path",
    "ENOTDIR": "a file stands where a folder is expected; pass a folder path or move the file",
    "ENAMETOOLONG": "the path is too long; choose a shorter one",
    "ENOENT": "no such file or folder; check the path",
}


def os_error_message(exc: BaseException) -> str | None:
    """One line naming the path, the cause and the fix for an environmental ``OSError`` (permissions, read-only or
    full disk, a folder where a file belongs); None for any other exception (a bug: it keeps its traceback)."""
    import errno

    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    name = errno.errorcode.get(exc.errno, "")
    fix = _OS_FIXES.get(name)
    if fix is None or (name == "ENOENT" and not exc.filename):
        return None
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{where}: {fix} ({name})" if where is not None else f"{exc.strerror or exc}: {fix} ({name})"


def cli_error_line(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` the CLI prints for ``exc`` as one line, or None when ``exc`` is a bug."""
    if isinstance(exc, UserError):
        return " ".join(str(exc).split("\n")), exc.exit_code
    message = os_error_message(exc)
    return (message, 1) if message is not None else None
