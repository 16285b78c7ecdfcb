"""Atomic file replacement shared by the adapters that write small files.

A power cut during :func:`atomic_write` leaves either the old file or the new
one, never a mix: the data goes to a temporary file in the same directory
(same file system, so the replace is a rename), the temporary file is
fsynced, renamed over the target, and the directory is fsynced so the rename
itself survives the cut.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk.

    Some file systems (vfat, the Raspberry Pi boot partition) cannot open a
    directory for fsync; there the rename is as durable as the driver makes
    it and the error is ignored on purpose.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, dir fsync).

    The temporary file lives next to ``path`` and starts with ``.`` and the
    target's name, so a leftover from a crash is easy to recognise; it is
    removed if anything fails before the rename. ``mode`` is applied to the
    new file explicitly (the umask does not narrow it). Raises ``OSError``
    unchanged: callers wrap it in the error class of their port.
    """
    import tempfile  # (and its random module) only for a write: reading commands skip it

    target = Path(path)
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)
