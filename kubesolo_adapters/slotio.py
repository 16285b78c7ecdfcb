"""The write side of the slot pipeline: aligned buffers, O_DIRECT writes on threads, the filler.

* :func:`aligned`, :func:`set_direct`, :func:`block_size_ok`,
  :func:`open_read`, :func:`drop_cache`, :func:`fsync`: the low-level
  pieces ``O_DIRECT`` needs (page-aligned buffers, offsets and lengths in
  multiples of :data:`ALIGN`) and the way back to the page cache where a
  file system refuses it;
* :class:`Writer`: full buffers written at increasing offsets on
  :data:`WRITERS` threads (an ``O_DIRECT`` write waits for the medium, so two
  in flight keep it busy), batched with ``pwritev``; it tracks the longest
  prefix of the slot whose writes have all returned, which the verifier
  (:mod:`kubesolo_adapters.slotverify`) reads back;
* :class:`Filler`: raw bytes in stream order into the held-back head, then
  into the writer's free buffers (a fixed pool: its size bounds the memory).

The pipeline that drives them is :mod:`kubesolo_adapters.slotpipe`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import threading

from kubesolo_core.errors import SlotError, VerifyError

__all__ = [
    "ALIGN",
    "Aborted",
    "Filler",
    "Writer",
    "aligned",
    "block_size_ok",
    "drop_cache",
    "fsync",
    "open_read",
    "round_up",
    "set_direct",
    "write_at",
]

#: O_DIRECT offsets, lengths and buffer addresses are multiples of this (mmap gives pages)
ALIGN = 4096
#: ioctls from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKFLSBUF = 0x1261
BLKSSZGET = 0x1268
#: O_DIRECT writes in flight at once (each thread waits for its own)
WRITERS = 2
#: a batch of buffers is written with one pwritev
MAX_BATCH = 8
#: how often a waiting stage looks up from its queue for a failure elsewhere
POLL = 0.2


class Aborted(Exception):
    """Another stage failed; this one stops (the other stage's error is raised)."""


def aligned(length: int) -> mmap.mmap:
    """An anonymous mapping: page aligned, as O_DIRECT wants its buffers."""
    return mmap.mmap(-1, max(length, ALIGN))


def round_up(value: int) -> int:
    """``value`` rounded up to a multiple of ALIGN."""
    return -(-value // ALIGN) * ALIGN


def set_direct(fd: int, on: bool) -> bool:
    """Switch O_DIRECT on the descriptor; False when the file system refuses it."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_DIRECT) if on else (flags & ~os.O_DIRECT))
    except OSError:
        return False
    return True


def block_size_ok(fd: int) -> bool:
    """A device whose logical blocks are larger than ALIGN cannot take our O_DIRECT sizes."""
    try:
        raw = fcntl.ioctl(fd, BLKSSZGET, b"\0\0\0\0")
    except OSError:
        return True  # not a block device: the file system decides (EINVAL falls back)
    return 0 < int.from_bytes(raw, "little") <= ALIGN


def fsync(fd: int, path: str) -> None:
    """fsync, failing as SlotError."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SlotError(f"{path}: fsync failed: {exc.strerror}") from None


def open_read(path: str, direct: bool) -> tuple[int, bool]:
    """A read-only descriptor of the slot (O_DIRECT when asked and allowed) and whether it is."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        if direct:
            try:
                return os.open(path, flags | os.O_DIRECT), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        return os.open(path, flags), False
    except OSError as exc:
        raise SlotError(f"{path} could not be reopened for read-back: {exc.strerror}") from None


def drop_cache(fd: int, offset: int, length: int, *, block: bool) -> None:
    """Drop what the page cache holds of a stretch, so a read comes from the medium.

    ``BLKFLSBUF`` for a device (it needs CAP_SYS_ADMIN), ``fadvise`` for the
    rest; best effort, as the kernel allows. O_DIRECT reads need none of it.
    """
    if block:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, BLKFLSBUF, 0)
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class Writer:
    """Writes full buffers at increasing offsets on WRITERS threads (O_DIRECT waits per write).

    ``completed`` is the end of the longest prefix of the slot whose writes
    have all returned; the verifier reads back up to it.
    """

    def __init__(self, fd: int, path: str, *, start: int, direct: bool) -> None:
        self.fd = fd
        self.path = path
        self.direct = direct
        self.queue: queue.Queue[tuple[int, mmap.mmap, int] | None] = queue.Queue()
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        self.cond = threading.Condition()
        #: bytes from the start of the slot up to which every write has completed
        self.completed = start
        self.finished = False
        self.error: BaseException | None = None
        self._ends: dict[int, int] = {}  # start -> end of writes done beyond ``completed``
        self._take = threading.Lock()  # one thread at a time gathers a contiguous batch
        self._running = WRITERS
        self._threads = [
            threading.Thread(target=self._run, name=f"kubesolo-slot-writer-{n}", daemon=True)
            for n in range(WRITERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        """Write what is queued, then stop (call once)."""
        for _ in self._threads:
            self.queue.put(None)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        try:
            while (batch := self._batch()) is not None:
                self._write(batch)
        except BaseException as exc:  # handed to the caller's thread
            if self.error is None:
                self.error = exc
            # Keep taking buffers back so the network side never waits on a dead writer.
            while self.queue.get() is not None:
                pass
        finally:
            with self.cond:
                self._running -= 1
                self.finished = self._running == 0
                self.cond.notify_all()

    def _batch(self) -> list[tuple[int, mmap.mmap, int]] | None:
        """The next buffers in stream order (contiguous), or None when told to stop."""
        with self._take:
            item = self.queue.get()
            if item is None:
                return None
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)  # for the next round of this or another thread
                    break
                batch.append(nxt)
            return batch

    def _write(self, batch: list[tuple[int, mmap.mmap, int]]) -> None:
        offset = batch[0][0]
        views = [memoryview(buf)[:length] for _, buf, length in batch]
        try:
            end = write_at(self, offset, views)
        finally:
            for view in views:
                view.release()
        for _, buf, _ in batch:
            self.free.put(buf)
        with self.cond:
            self._ends[offset] = end
            while self.completed in self._ends:
                self.completed = self._ends.pop(self.completed)
            self.cond.notify_all()


def write_at(writer: Writer, offset: int, views: list[memoryview]) -> int:
    """Write ``views`` back to back from ``offset``; O_DIRECT for the aligned part.

    Returns the end offset. Falls back to the page cache for good when the
    file system refuses an O_DIRECT write (EINVAL), and always for a tail
    that is not a multiple of ALIGN.
    """
    fd, path = writer.fd, writer.path
    pending = [v for v in views if len(v)]
    pos = offset
    try:
        while pending:
            total = sum(len(v) for v in pending)
            if writer.direct and total >= ALIGN and pos % ALIGN == 0:
                aligned_len = total - total % ALIGN
                batch, rest = _split(pending, aligned_len)
                try:
                    done = os.pwritev(fd, batch, pos)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    writer.direct = False
                    set_direct(fd, False)
                    continue
                pending = _advance(batch, done) + rest
            else:
                if writer.direct:
                    set_direct(fd, False)
                try:
                    done = os.pwritev(fd, pending, pos)
                finally:
                    if writer.direct:
                        set_direct(fd, True)
                pending = _advance(pending, done)
            pos += done
    except OSError as exc:
        raise SlotError(f"{path}: write at byte {pos} failed: {exc.strerror}") from None
    return pos


def _split(views: list[memoryview], length: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``length`` bytes of ``views`` and the rest."""
    head: list[memoryview] = []
    rest: list[memoryview] = []
    left = length
    for view in views:
        if left >= len(view):
            head.append(view)
            left -= len(view)
        elif left > 0:
            head.append(view[:left])
            rest.append(view[left:])
            left = 0
        else:
            rest.append(view)
    return head, rest


def _advance(views: list[memoryview], done: int) -> list[memoryview]:
    """What remains of ``views`` after a (possibly short) write of ``done`` bytes."""
    out = []
    for view in views:
        if done >= len(view):
            done -= len(view)
        else:
            out.append(view[done:])
            done = 0
    return out


class Filler:
    """Puts raw bytes in stream order into the held-back head, then into write buffers."""

    def __init__(self, size: int, head: mmap.mmap, head_len: int, writer: Writer, piece: int):
        self.size = size
        self.head = head
        self.head_len = head_len
        self.writer = writer
        self.piece = piece
        #: raw bytes taken so far (read by the network thread for progress)
        self.pos = 0
        self._buf: mmap.mmap | None = None
        self._fill = 0
        self._offset = head_len
        self.head_done = threading.Event()
        if head_len == 0:
            self.head_done.set()

    def space(self) -> memoryview:
        """Where the next raw bytes go (never past ``size``); empty when the image is complete."""
        if self.pos < self.head_len:
            return memoryview(self.head)[self.pos : self.head_len]
        if self.pos >= self.size:
            return memoryview(b"")
        if self._buf is None:
            self._buf = self._take()
            self._fill = 0
        room = min(self.piece - self._fill, self.size - self.pos)
        return memoryview(self._buf)[self._fill : self._fill + room]

    def advance(self, count: int) -> None:
        """``count`` bytes were put into the last :meth:`space`."""
        self.pos += count
        if self.pos <= self.head_len:
            if self.pos == self.head_len:
                self.head_done.set()
            return
        self._fill += count
        if self._fill == self.piece:
            self._ship()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in; VerifyError (before any of it is placed) past ``size``."""
        if self.pos + len(data) > self.size:
            raise VerifyError(
                f"image decompresses to more than its raw_size {self.size} bytes; "
                f"nothing past byte {self.size} was written",
                way_out="the release document does not match its image",
            )
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                with self.space() as room:
                    take = min(len(room), len(view) - done)
                    room[:take] = view[done : done + take]
                self.advance(take)
                done += take

    def finish(self) -> None:
        """Hand the last, partly filled buffer to the writer."""
        if self._buf is not None and self._fill:
            self._ship()

    def _take(self) -> mmap.mmap:
        while True:
            if self.writer.error is not None or self.writer.finished:
                raise Aborted
            try:
                return self.writer.free.get(timeout=POLL)
            except queue.Empty:
                continue

    def _ship(self) -> None:
        assert self._buf is not None  # noqa: S101
        self.writer.queue.put((self._offset, self._buf, self._fill))
        self._offset += self._fill
        self._buf = None
        self._fill = 0
