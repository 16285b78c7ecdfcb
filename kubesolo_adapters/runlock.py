"""One kubesolo-update at a time: an exclusive ``flock`` next to state.json.

The CronJob's ``apply``, an operator's ``apply`` by hand and the boot
helper's ``healthcheck`` could otherwise run together: two writers of one
passive slot, and read-modify-write races on state.json. Every command that
may change the state, the boot env or a slot takes :class:`RunLock` first
(the CLI does; embedders take it themselves); ``status`` and ``metrics``
only read and never wait.

``flock`` belongs to the open file: a process that dies (power cut, SIGKILL,
OOM) drops it with its descriptors, so no stale lock can outlive its holder
and nothing needs cleaning after a crash. The file's text (pid, command,
since when) is only for the message a waiting run prints.

The lock file is opened without following a symlink and without blocking on
a FIFO, and must be a regular file: a planted link must not make the agent
truncate another file. The wait is bounded (``wait`` seconds, polled every
0.2 s); then :class:`~kubesolo_core.errors.Busy` says who holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import math
import os
import stat
import time
from pathlib import Path
from types import TracebackType

from kubesolo_core.errors import Busy, OperationFailed

__all__ = ["LOCK_NAME", "RunLock"]

#: the lock's file name, in the folder of state.json
LOCK_NAME = "kubesolo-update.lock"
POLL = 0.2
#: the longest wait a caller can ask for (a day): the poll loop stays bounded
MAX_WAIT = 86400.0


class RunLock:
    """An acquired run lock; release it with :meth:`release` or a ``with`` block."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, command: str, wait: float) -> RunLock:
        """Take the lock at ``path`` for ``command``, waiting at most ``wait`` seconds."""
        wait = _bounded(wait)
        fd = _open(path)
        try:
            deadline = time.monotonic() + wait
            for _ in range(int(wait / POLL) + 2):  # bounded, whatever the clock does
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _busy(path, fd, wait) from None
                    time.sleep(min(POLL, left))
            else:
                raise _busy(path, fd, wait)
            holder = f"{os.getpid()} {command} {_now()}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder, 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (closing the descriptor does; the file stays, empty of meaning)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _bounded(wait: float) -> float:
    # A library caller's wait: NaN or below 0 is no wait, inf or more than a day is a day.
    if math.isnan(wait) or wait <= 0:
        return 0.0
    return min(wait, MAX_WAIT)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "is a symbolic link (never followed: it could point at any file)"
        raise OperationFailed(
            f"run lock {path}: cannot open it: {reason}",
            way_out="remove it if it is not a regular file; the folder of state.json must be "
            "writable",
        ) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        from kubesolo_adapters.inputs import describe_mode

        raise OperationFailed(
            f"run lock {path}: is {describe_mode(mode)}, not a regular file",
            way_out="remove it; kubesolo-update makes its own",
        )
    return fd


def _busy(path: Path, fd: int, wait: float) -> Busy:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    who = (
        f"pid {text[0]}, {text[1]} since {text[2]}"
        if len(text) >= 3 and text[0].isdigit()
        else "holder unknown"
    )
    return Busy(
        f"another kubesolo-update is running ({who}; lock {path}); waited {wait:g} s, "
        "nothing was done",
        way_out="let it finish and run again (lock_wait= waits longer)",
    )
