"""The slot writer's pipeline: stream an image onto an open slot, then prove it by reading it back.

:class:`~kubesolo_adapters.blockdev.BlockSlotStore` resolves the slot,
checks its size and opens it (``O_EXCL`` on a device); this module does the
rest with that descriptor. Its stages run on their own threads with a few
fixed buffers between them (hashlib, zstandard, zlib and the I/O calls all
release the GIL on large buffers, so the stages use both cores):

* **network** (the caller's thread): the served chunks, as the Fetcher
  yields them; uncompressed pieces are copied straight into the write
  buffers here;
* **decompress** (compressed images only): the served SHA-256 and the
  decompression, with the output bounded per step and, for zstd, written
  straight into the write buffers (``readinto``: no copy);
* **write**: page-aligned buffers written with ``O_DIRECT`` (no copy into
  the page cache, no write-back storm at fsync), batched with ``pwritev``;
  an unaligned tail goes through the page cache;
* **verify**: the read-back runs *while* the image streams: whenever a
  stretch of the slot has been written, the verifier fsyncs (everything
  written so far is then on the medium), drops what the page cache may hold
  of it, reads it back with ``O_DIRECT`` and hashes it.

The first MiB of the image (superblocks, labels) is held back and written
last, as before; but now only after the read-back of everything else
matched: the verifier hashes the held-back head from memory, then the rest
as read from the medium, and compares with the release's ``raw_sha256``.
Only then is the head written, fsynced, read back and compared byte for
byte with what was held. So every byte of the slot is read back from the
medium after an fsync covered it, the SHA-256 is over exactly ``raw_size``
bytes, and an image that does not verify never gets its head (nor its
label) on the slot.

Where ``O_DIRECT`` is refused (some file systems for image-file slots), or
``direct=False``, the writes go through the page cache and the verifier
waits for the whole image, then fsyncs and drops the cache (``BLKFLSBUF``
for a device, ``fadvise`` for a file) before it reads back, as the writer
always did.

Memory: the head (1 MiB), three write buffers and two read buffers of
512 KiB, and a short queue of served chunks (under 4 MiB in all; zstd adds
its window, at most ZSTD_MAX_WINDOW). The agent's whole process stays under
48 MiB.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, cast

from kubesolo_adapters.streams import raw_chunks, tapped
from kubesolo_core.errors import SlotError, VerifyError
from kubesolo_core.ports import Progress, WriteResult
from kubesolo_core.release import ImageSpec

__all__ = ["HEAD_BYTES", "write_verified"]

#: bytes at the start of the image written last (superblocks, boot sector, labels)
HEAD_BYTES = 1 << 20
#: O_DIRECT offsets, lengths and buffer addresses are multiples of this (mmap gives pages)
ALIGN = 4096
#: ioctls from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKFLSBUF = 0x1261
BLKSSZGET = 0x1268
#: write buffers of at most PIECE bytes: one filling, WRITERS being written
POOL = 3
PIECE = 512 << 10
#: O_DIRECT writes in flight at once (each thread waits for its own)
WRITERS = 2
#: the read-back reads this many write buffers' worth at a time (512 KiB by default)
READ_PIECES = 1
#: the verifier reads back a stretch once this many more write buffers were written
#: (16 MiB with the default buffers: a few dozen fsyncs for a slot image, each a
#: cache flush of the medium)
REGION_PIECES = 64
#: served chunks waiting for the decompressor
SERVED_QUEUE = 4
#: a batch of buffers is written with one pwritev
MAX_BATCH = 8
#: how often a waiting stage looks up from its queue for a failure elsewhere
_POLL = 0.2


class _Aborted(Exception):
    """Another stage failed; this one stops (the other stage's error is raised)."""


def _aligned(length: int) -> mmap.mmap:
    """An anonymous mapping: page aligned, as O_DIRECT wants its buffers."""
    return mmap.mmap(-1, max(length, ALIGN))


def _round_up(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _set_direct(fd: int, on: bool) -> bool:
    """Switch O_DIRECT on the descriptor; False when the file system refuses it."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_DIRECT) if on else (flags & ~os.O_DIRECT))
    except OSError:
        return False
    return True


def _block_size_ok(fd: int) -> bool:
    """A device whose logical blocks are larger than ALIGN cannot take our O_DIRECT sizes."""
    try:
        raw = fcntl.ioctl(fd, BLKSSZGET, b"\0\0\0\0")
    except OSError:
        return True  # not a block device: the file system decides (EINVAL falls back)
    return 0 < int.from_bytes(raw, "little") <= ALIGN


def _fsync(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SlotError(f"{path}: fsync failed: {exc.strerror}") from None


class _Writer:
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
            end = _write_at(self, offset, views)
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


def _write_at(writer: _Writer, offset: int, views: list[memoryview]) -> int:
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
                aligned = total - total % ALIGN
                batch, rest = _split(pending, aligned)
                try:
                    done = os.pwritev(fd, batch, pos)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    writer.direct = False
                    _set_direct(fd, False)
                    continue
                pending = _advance(batch, done) + rest
            else:
                if writer.direct:
                    _set_direct(fd, False)
                try:
                    done = os.pwritev(fd, pending, pos)
                finally:
                    if writer.direct:
                        _set_direct(fd, True)
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


class _Filler:
    """Puts raw bytes in stream order into the held-back head, then into write buffers."""

    def __init__(self, size: int, head: mmap.mmap, head_len: int, writer: _Writer, piece: int):
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
                raise _Aborted
            try:
                return self.writer.free.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _ship(self) -> None:
        assert self._buf is not None  # noqa: S101
        self.writer.queue.put((self._offset, self._buf, self._fill))
        self._offset += self._fill
        self._buf = None
        self._fill = 0


class _Verifier(threading.Thread):
    """Reads back what the writer finished (after an fsync) and hashes it, head first."""

    def __init__(
        self,
        rfd: int,
        path: str,
        writer: _Writer,
        filler: _Filler,
        *,
        direct: bool,
        block: bool,
        read_size: int,
    ) -> None:
        super().__init__(name="kubesolo-slot-verify", daemon=True)
        self.rfd = rfd
        self.path = path
        self.writer = writer
        self.filler = filler
        self.direct = direct
        self.block = block
        self.read_size = read_size
        self.region = REGION_PIECES * filler.piece
        self.digest = hashlib.sha256()
        self.done = filler.head_len
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.bufs = (_aligned(read_size), _aligned(read_size))

    def run(self) -> None:
        try:
            # One read ahead: the medium fills one buffer while the other is hashed.
            with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-readback") as pool:
                self._loop(pool)
        except _Aborted:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        while not self.filler.head_done.wait(_POLL):
            if self.stop.is_set() or self.writer.finished:
                raise _Aborted
        self.digest.update(memoryview(self.filler.head)[: self.filler.head_len])
        size = self.filler.size
        while self.done < size:
            with self.writer.cond:
                while True:
                    if self.stop.is_set():
                        raise _Aborted
                    upto = self.writer.completed
                    if self.writer.finished:
                        break
                    # Page-cache writes are only read back once all is written (the cache drop).
                    if self.direct and upto - self.done >= self.region:
                        break
                    self.writer.cond.wait(_POLL)
            if self.writer.error is not None or upto <= self.done:
                raise _Aborted  # the writer failed or the stream ended short: the caller says why
            # Everything the writer finished is now on the medium, and nothing of it in the cache.
            _fsync(self.rfd, self.path)
            self.drop(self.done, upto - self.done)
            self._read(pool, self.done, upto)
            self.done = upto

    def drop(self, offset: int, length: int) -> None:
        """Drop the page cache over a stretch (O_DIRECT reads do not look at it)."""
        if self.direct:
            return
        if self.block:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.rfd, BLKFLSBUF, 0)  # needs CAP_SYS_ADMIN; fadvise is the rest
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.rfd, offset, length, os.POSIX_FADV_DONTNEED)

    def read_into(self, index: int, offset: int, want: int) -> int:
        """Read ``want`` bytes at ``offset`` (O_DIRECT: an aligned length, maybe more)."""
        length = _round_up(want) if self.direct else want
        got = 0
        view = memoryview(self.bufs[index])
        try:
            while got < want:
                try:
                    n = os.preadv(self.rfd, [view[got:length]], offset + got)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    # The file system takes no O_DIRECT reads: the page cache, dropped per stretch.
                    self.direct = False
                    _set_direct(self.rfd, False)
                    self.drop(offset, self.filler.size - offset)
                    length = want
                    continue
                if n == 0:
                    break
                got += n
        finally:
            view.release()
        return min(got, want)

    def _read(self, pool: ThreadPoolExecutor, start: int, end: int) -> None:
        offsets = list(range(start, end, self.read_size))

        def submit(i: int) -> Future[int]:
            want = min(self.read_size, end - offsets[i])
            return pool.submit(self.read_into, i % 2, offsets[i], want)

        pending = submit(0)
        for i, offset in enumerate(offsets):
            want = min(self.read_size, end - offset)
            try:
                got = pending.result()
            except OSError as exc:
                raise SlotError(f"{self.path}: read-back failed: {exc.strerror}") from None
            if i + 1 < len(offsets):
                pending = submit(i + 1)
            if got < want:
                raise VerifyError(
                    f"{self.path} read back only {offset + got} of {self.filler.size} bytes"
                )
            with memoryview(self.bufs[i % 2]) as view:
                self.digest.update(view[:got])
            if self.stop.is_set():
                raise _Aborted


def _open_read(path: str, direct: bool) -> tuple[int, bool]:
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


def write_verified(
    fd: int,
    *,
    path: str,
    what: str,
    block: bool,
    chunks: Iterator[bytes],
    image: ImageSpec,
    progress: Progress | None = None,
    piece: int = 1 << 20,
    direct: bool = True,
) -> WriteResult:
    """Stream ``chunks`` (served bytes) onto the open slot ``fd``, verified; see the module.

    ``what`` names the slot in errors ("slot B (/dev/sda3)"). Raises
    VerifyError when the stream is corrupt, too long or too short or the
    read-back differs, SlotError when the medium fails; errors of ``chunks``
    (FetchError) pass through unchanged. On any error the head is not
    written: the slot keeps its old superblock and label.
    """
    size = image.raw_size
    piece = max(ALIGN, min(piece, PIECE) // ALIGN * ALIGN)
    head_len = min(HEAD_BYTES, size)
    direct = direct and _block_size_ok(fd) and _set_direct(fd, True)
    rfd, read_direct = _open_read(path, direct)
    writer = _Writer(fd, path, start=head_len, direct=direct and read_direct)
    if not writer.direct and direct:
        _set_direct(fd, False)  # the read side cannot bypass the cache: neither does the write
    for _ in range(POOL):
        writer.free.put(_aligned(piece))
    head = _aligned(head_len)
    filler = _Filler(size, head, head_len, writer, piece)
    verifier = _Verifier(
        rfd,
        path,
        writer,
        filler,
        direct=writer.direct,
        block=block,
        read_size=READ_PIECES * piece,
    )
    writer.start()
    verifier.start()
    served: str | None = None
    try:
        try:
            if image.compression == "none":
                _take_plain(chunks, filler, progress)
            else:
                served = _take_compressed(chunks, image, filler, progress, piece)
            if filler.pos != size:
                raise VerifyError(
                    f"image ended after {filler.pos} raw bytes, the release says raw_size "
                    f"{size} (truncated or corrupt {image.compression} stream)",
                    way_out="the slot is not staged; retry the apply",
                )
            filler.finish()
        except _Aborted:
            pass  # the writer's error is raised below
        finally:
            writer.finish()  # write what is queued, then stop
            writer.join()
        if writer.error is not None:
            raise writer.error
        verifier.join()
        if verifier.error is not None:
            raise verifier.error
        digest = verifier.digest.hexdigest()
        if verifier.done != size:
            raise VerifyError(f"{path} read back only {verifier.done} of {size} bytes")
        if digest != image.raw_sha256:
            raise VerifyError(
                f"{what} reads back SHA-256 {digest} over {size} bytes, "
                f"the release says {image.raw_sha256}",
                way_out="the slot is not staged (its old head is kept); check the disk "
                "(dmesg) and the release",
            )
        _write_head(writer, verifier, head, head_len, what)
    except BaseException:
        verifier.stop.set()
        writer.join()
        verifier.join()
        raise
    finally:
        os.close(rfd)
    # Uncompressed, the served bytes are the raw bytes just read back and matched.
    return WriteResult(written=size, raw_sha256=digest, served_sha256=served or digest)


def _write_head(
    writer: _Writer, verifier: _Verifier, head: mmap.mmap, length: int, what: str
) -> None:
    """The head last, once the rest verified: write, fsync, read back, compare."""
    if not length:
        return
    with memoryview(head) as view:
        _write_at(writer, 0, [view[:length]])
        _fsync(writer.fd, writer.path)
        verifier.drop(0, length)
        for offset in range(0, length, verifier.read_size):
            want = min(verifier.read_size, length - offset)
            got = verifier.read_into(0, offset, want)
            with memoryview(verifier.bufs[0]) as back:
                if got != want or back[:want] != view[offset : offset + want]:
                    raise VerifyError(
                        f"{what}: the first {length} bytes read back differ from the image's "
                        "(written last, after the rest verified)",
                        way_out="the slot is not staged; check the disk (dmesg)",
                    )


def _take_plain(chunks: Iterator[bytes], filler: _Filler, progress: Progress | None) -> None:
    for chunk in chunks:
        filler.feed(chunk)
        if progress is not None:
            progress(filler.pos, filler.size)


_END = object()


def _take_compressed(
    chunks: Iterator[bytes],
    image: ImageSpec,
    filler: _Filler,
    progress: Progress | None,
    piece: int,
) -> str:
    """Network on this thread, served hash and decompression on another; the served SHA-256."""
    inbox: queue.Queue[object] = queue.Queue(maxsize=SERVED_QUEUE)
    served = hashlib.sha256()
    failure: list[BaseException] = []
    cancelled = threading.Event()

    ended = threading.Event()

    def incoming() -> Iterator[bytes]:
        while True:
            item = inbox.get()
            if item is _END:
                ended.set()
                return
            if cancelled.is_set():
                raise _Aborted
            assert isinstance(item, bytes | bytearray | memoryview)  # noqa: S101
            yield bytes(item)

    def decompress() -> None:
        try:
            source = tapped(incoming(), served)
            if image.compression == "zstd":
                _unzstd_into(source, filler)
            else:
                for raw in raw_chunks(source, image.compression, piece):
                    filler.feed(raw)
        except BaseException as exc:  # handed to the network thread
            failure.append(exc)
        finally:
            # Drain so the network thread never blocks on a full inbox.
            while not ended.is_set():
                if inbox.get() is _END:
                    ended.set()

    worker = threading.Thread(target=decompress, name="kubesolo-decompress", daemon=True)
    worker.start()
    reported = -1
    try:
        for chunk in chunks:
            _put(inbox, chunk, failure)
            if progress is not None and filler.pos != reported:
                reported = filler.pos
                progress(reported, filler.size)
    except BaseException:
        cancelled.set()
        raise
    finally:
        _put(inbox, _END, None)
        worker.join()
    if failure:
        raise failure[0]
    if progress is not None and filler.pos != reported:
        progress(filler.pos, filler.size)
    return served.hexdigest()


def _put(inbox: queue.Queue[object], item: object, failure: list[BaseException] | None) -> None:
    while True:
        if failure:
            raise failure[0]
        try:
            inbox.put(item, timeout=_POLL)
        except queue.Full:
            continue
        return


def _unzstd_into(source: Iterator[bytes], filler: _Filler) -> None:
    """Decompress zstd straight into the filler's buffers (``readinto``: no copy)."""
    import zstandard

    from kubesolo_adapters.streams import ZSTD_MAX_WINDOW, IterReader, zstd_error

    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
        cast("IO[bytes]", IterReader(source)), read_size=1 << 17, read_across_frames=True
    )
    probe = bytearray(1)
    try:
        while True:
            with filler.space() as room:
                if not len(room):
                    # raw_size reached: one more byte means the image is longer than announced.
                    if reader.readinto(probe):
                        raise VerifyError(
                            f"image decompresses to more than its raw_size {filler.size} "
                            f"bytes; nothing past byte {filler.size} was written",
                            way_out="the release document does not match its image",
                        )
                    return
                got = reader.readinto(room)
            if not got:
                return  # ended early: the caller's raw_size check says so
            filler.advance(got)
    except zstandard.ZstdError as exc:
        raise zstd_error(exc) from None
