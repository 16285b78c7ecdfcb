"""Reading an input file safely: never block on a FIFO, never swallow a device, never read 10 GB.

Every small file the agent reads (state.json, update.conf, the GRUB env
block, autoboot.txt, cloud-init user-data, the kernel command line, the boot
id, device-tree properties, a file:// release document) goes through
:func:`read_input`. A careless ``--state /some/fifo`` used to hang ``status``
for ever, since opening a FIFO for reading waits for a writer; a
``--config /dev/zero`` would read until memory ran out; ``--grubenv
/dev/watchdog`` would even arm a watchdog by opening it.

So the path is looked at (``stat``, following symlinks) before it is
opened, and only a regular file is opened, without blocking
(``O_NONBLOCK``); the descriptor is checked again with ``fstat`` (the path
may have been swapped in between) and read up to a limit. Anything else is
refused with :class:`NotRegularFile`, whose message says what the path is
(a named pipe, a directory, a character device...). ``/dev/null`` is
accepted where a caller allows it (``--config /dev/null`` means "no config
file", an old habit worth keeping) and reads as empty.

The errors are ``OSError`` subclasses on purpose: every caller already turns
an unreadable file into the error of its port (ConfigError, BootEnvError,
OperationFailed...) naming the path, and now says why in ``strerror``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["InputTooLarge", "NotRegularFile", "describe_mode", "open_input", "read_input"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a unix socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class NotRegularFile(OSError):
    """The path exists but is not a regular file (``strerror`` says what it is)."""


class InputTooLarge(OSError):
    """The file is larger than the caller's limit (no such file is what it claims to be)."""


def describe_mode(mode: int) -> str:
    """``a directory``, ``a named pipe (FIFO)``... for a ``st_mode``."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: Path, mode: int) -> NotRegularFile:
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    return NotRegularFile(code, f"is {describe_mode(mode)}, not a regular file", str(path))


def _is_null(st: os.stat_result) -> bool:
    if not stat.S_ISCHR(st.st_mode):
        return False
    try:
        null = Path(os.devnull).stat()
    except OSError:
        return False
    return stat.S_ISCHR(null.st_mode) and st.st_rdev == null.st_rdev


def open_input(path: Path | str) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (never blocks on a FIFO).

    Raises FileNotFoundError, :class:`NotRegularFile`, or the OSError of the open.
    """
    target = Path(path)
    st = target.stat()  # follows symlinks; never opens anything
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(target, st.st_mode)
    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
            raise _refuse(target, st.st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: Path | str, *, limit: int, allow_null: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` (at most ``limit``).

    Raises FileNotFoundError (callers decide what a missing file means),
    :class:`NotRegularFile`, :class:`InputTooLarge`, or the OSError of the
    open or read. ``allow_null``: ``/dev/null`` reads as empty.
    """
    target = Path(path)
    if allow_null and _is_null(target.stat()):
        return b""
    with open_input(target) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputTooLarge(
            errno.EFBIG,
            f"is larger than {limit} bytes, more than such a file ever holds",
            str(target),
        )
    return data
