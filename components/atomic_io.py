"""Writing files atomically: to a temporary name in the same folder, renamed over the target when complete.

A reader (or a run that is killed half-way) sees either the old file or the new one, never a partial file,
and a failed or interrupted write leaves the old file as it was and no temporary file behind. Standard
library only (no TensorFlow), so that light scripts stay light.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING

from components.errors import os_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

STAGING_PREFIX = ".staging-"   # staging folders: .staging-<pid>-<random>
_OWNER = re.compile(r"(?:\.tmp-|^\.staging-)(\d+)")


def temporary_path(path: str, suffix: str = "") -> str:
    """The temporary name used for ``path``: ``<path>.tmp-<pid><suffix>``, in the same folder, so that the
    final rename stays on one file system."""
    return f"{path}.tmp-{os.getpid()}{suffix}"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path to write instead of ``path``; it replaces ``path`` only when the block succeeds.

    On an exception (KeyboardInterrupt included) ``path`` is left as it was and the temporary file is
    removed; an OSError becomes a ProjectError naming ``path`` and the cause (disk full, permission denied).
    ``suffix`` ends the temporary name, for writers that pick the format by extension.
    """
    temporary = temporary_path(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:   # disk full, permission denied...: name the file meant, not the temporary
        raise os_error(error, path) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def process_runs(pid: int) -> bool:
    """Whether a process with id ``pid`` runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporary files (``<name>.tmp-<pid>...``) and staging folders (``.staging-<pid>-...``) in
    ``folder`` that a process killed half-way left behind (their process no longer runs). Returns their names."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp-*")) + \
            glob.glob(os.path.join(glob.escape(folder), STAGING_PREFIX + "*")):
        match = _OWNER.search(os.path.basename(path))
        if not match or process_runs(int(match.group(1))):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
        removed.append(os.path.basename(path))
    return removed


@contextlib.contextmanager
def staging_folder(parent: str) -> Iterator[str]:
    """Yield a new empty folder inside ``parent`` (created if needed) to stage outputs in; it is removed with
    whatever is left in it when the block ends. Stale staging folders of killed runs are removed first."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent)
    staging = tempfile.mkdtemp(dir=parent, prefix=f"{STAGING_PREFIX}{os.getpid()}-")
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomically(path: str, text: str, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``newline`` is passed to :func:`open`."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline=newline) as handle:
            handle.write(text)


def save_figure_atomically(figure: Any, path: str, **savefig_kwargs: Any) -> None:
    """``figure.savefig(path, **savefig_kwargs)``, atomically. The temporary name keeps ``path``'s extension,
    so the format is picked as savefig would pick it for ``path`` unless ``format`` is given."""
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as temporary:
        figure.savefig(temporary, **savefig_kwargs)
