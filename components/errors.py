"""The project's one error contract, shared by every layer.

A :class:`ProjectError` is a problem with the user's input or environment whose message names the path or
flag and the problem (``<path>: <problem>``); scripts print it as one line ``error: <message>`` and exit with
``exit_code`` (2). :class:`Interrupted` is a Ctrl-C caught where something was saved; its ``line()`` says
what was kept. Standard library only.
"""
from __future__ import annotations

import errno
import os

# what an OSError's errno means for the user, where the system's own words do not say it
OS_ERROR_CAUSES: dict[int | None, str] = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
}


class ProjectError(ValueError):
    """Bad input or environment; the message names the path or flag and the problem.

    A ValueError, so that callers which catch ValueError for bad values keep working.
    """

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, caught where something could be kept; the message says what (may be empty)."""

    exit_code = 130

    def line(self) -> str:
        """The one line a script prints for it."""
        return f"error: interrupted; {self}" if str(self) else "error: interrupted"


def describe_os_error(error: OSError, path: str | None = None) -> str:
    """``<path>: <cause>`` for an OSError: the file it concerns and a cause a user can act on (disk full,
    permission denied, ...), also when the error itself carries no file name."""
    path = path or error.filename or ""
    cause = OS_ERROR_CAUSES.get(error.errno) or error.strerror or str(error) or type(error).__name__
    if error.filename2:
        path = f"{path} -> {error.filename2}"
    return f"{path}: {cause}" if path else cause


def os_error(error: OSError, path: str | None = None) -> ProjectError:
    """A ProjectError for ``error`` (an OSError) naming ``path`` (default: the error's file)."""
    return ProjectError(describe_os_error(error, path))


def check_writable_folder(folder: str) -> None:
    """Raise ProjectError naming ``folder`` when it cannot be created or written to."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise os_error(error, folder) from None
    if not os.access(folder, os.W_OK):
        raise ProjectError(f"{folder}: permission denied (cannot write in this folder)")
