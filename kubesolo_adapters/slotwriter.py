"""The careful writer: the one place that destroys data, so it is careful.

* it opens the slot only through
  :func:`kubesolo_adapters.slotguard.open_slot_for_write`, which proves on
  the open descriptor that it is not the other slot, a mounted filesystem or
  a disk holding them (identity, not spelling), with ``O_EXCL`` on a block
  device so a mounted (or otherwise claimed) slot is refused with EBUSY;
* it refuses before the first byte when the image does not fit;
* it decompresses on the fly with a bounded output per step (a zero-filled
  filesystem image compresses ~1000:1 with gzip and far more with zstd, so an
  unbounded decompress of one 1 MiB network chunk could need gigabytes);
* it holds the first MiB of the image back and writes it last, after the rest
  is on the disk: the superblocks and labels live there, so a write cut short
  leaves the slot's old head (and label) in place instead of a new label on a
  torn filesystem;
* the device write runs on its own thread (network and disk at once), with a
  short queue bounding the memory;
* it fsyncs, drops the page cache (BLKFLSBUF for a device, fadvise for a
  file), reads back exactly ``raw_size`` bytes from the medium and has the
  core judge them (:func:`kubesolo_core.release.verify_written`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from kubesolo_adapters import slotguard
from kubesolo_adapters.slotfind import Target, size_of
from kubesolo_adapters.streams import raw_chunks, tapped
from kubesolo_core.errors import SlotError, VerifyError
from kubesolo_core.ports import Progress, WriteResult
from kubesolo_core.release import ImageSpec, verify_written

__all__ = ["HEAD_BYTES", "write_slot"]

#: ioctl number from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKFLSBUF = 0x1261

#: bytes at the start of the image written last (superblocks, boot sector, labels)
HEAD_BYTES = 1 << 20


def write_slot(
    target: Target,
    *,
    name: str,
    survivors: slotguard.Survivors,
    chunks: Iterator[bytes],
    image: ImageSpec,
    progress: Progress | None = None,
    chunk_size: int = 4 << 20,
) -> WriteResult:
    """Stream ``chunks`` onto ``target``, decompressed, then read back and verify.

    ``name`` names the slot in messages ("slot B"); ``survivors`` are the
    (name, path) of what must not be touched. Raises SlotConflict or SlotError
    before any byte is written when the slot is missing, too small, in use or
    one of the survivors; VerifyError when the stream is corrupt, too long or
    too short, or the read-back differs; errors of ``chunks`` (FetchError)
    pass through unchanged.
    """
    if target.kind is None or target.path is None:
        raise SlotError(
            f"{name} ({target.spec or 'no spec'}) not found: {target.problem}",
            way_out="check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
        )
    path = target.path
    capacity = size_of(target)
    if capacity is None:
        raise SlotError(f"{name} ({path}): its size could not be read")
    if image.raw_size > capacity:
        raise SlotError(
            f"{name} ({path}) holds {capacity} bytes, the image needs "
            f"{image.raw_size}; nothing was written",
            way_out="publish an image that fits the slot or repartition",
        )
    fd = slotguard.open_slot_for_write(
        path, target_name=name, survivors=survivors, exclusive=target.kind == "block"
    )
    try:
        served, written = _stream(fd, path, chunks, image, progress, chunk_size)
        _drop_cache(fd, target)
        digest = _read_back(path, target, image.raw_size, chunk_size)
    finally:
        os.close(fd)  # after the read-back: the O_EXCL claim keeps mounts away meanwhile
    # _read_back reads exactly raw_size bytes or raises: the length is the image's.
    verify_written(image, length=image.raw_size, sha256=digest, where=f"{name} ({path})")
    return WriteResult(written=written, raw_sha256=digest, served_sha256=served)


def _stream(  # noqa: PLR0917  (one private step of write_slot)
    fd: int,
    path: str,
    chunks: Iterator[bytes],
    image: ImageSpec,
    progress: Progress | None,
    chunk_size: int,
) -> tuple[str, int]:
    served = hashlib.sha256()
    plain = image.compression == "none"
    sink = _Sink(
        fd,
        path,
        head_len=min(HEAD_BYTES, image.raw_size),
        chunk_size=chunk_size,
        # Uncompressed, the raw pieces are the served bytes: hash them on the
        # writer thread, off the thread that reads the network.
        hasher=served if plain else None,
    )
    written = 0
    try:
        # 1 MiB pieces through the queue; the sink batches them into chunk_size writes.
        piece = min(chunk_size, 1 << 20)
        served_stream = chunks if plain else tapped(chunks, served)
        for raw in raw_chunks(served_stream, image.compression, piece):
            if written + len(raw) > image.raw_size:
                raise VerifyError(
                    f"image decompresses to more than its raw_size {image.raw_size} bytes; "
                    f"nothing past byte {image.raw_size} was written",
                    way_out="the release document does not match its image",
                )
            sink.put(raw)
            written += len(raw)
            if progress is not None:
                progress(written, image.raw_size)
        if written != image.raw_size:
            raise VerifyError(
                f"image ended after {written} raw bytes, the release says raw_size "
                f"{image.raw_size} (truncated or corrupt {image.compression} stream)",
                way_out="the slot is not staged; retry the apply",
            )
    except BaseException:
        sink.abort()  # no head: the slot keeps its old superblock and label
        raise
    sink.finish()
    return served.hexdigest(), written


def _drop_cache(fd: int, target: Target) -> None:
    # The read-back must come from the medium, not from the pages just written.
    if target.kind == "block":
        try:
            fcntl.ioctl(fd, BLKFLSBUF, 0)
            return
        except OSError:
            pass  # BLKFLSBUF needs CAP_SYS_ADMIN; fadvise is the best effort left
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read_back(path: str, target: Target, size: int, chunk_size: int) -> str:
    try:
        rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SlotError(f"{path} could not be reopened for read-back: {exc.strerror}") from None
    digest = hashlib.sha256()
    length = min(chunk_size, max(size, 1))
    # Two buffers: the medium fills one while the other is hashed (both drop the GIL).
    bufs = (bytearray(length), bytearray(length))

    def read(index: int, offset: int) -> int:
        want = min(length, size - offset)
        return os.preadv(rfd, [memoryview(bufs[index])[:want]], offset)

    try:
        if target.kind == "file":
            with contextlib.suppress(OSError):
                os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
        with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-readback") as pool:
            done = 0
            index = 0
            pending = pool.submit(read, 0, 0)
            while done < size:
                got = pending.result()
                if got == 0:
                    raise VerifyError(f"{path} read back only {done} of {size} bytes")
                if done + got < size:
                    pending = pool.submit(read, 1 - index, done + got)
                digest.update(memoryview(bufs[index])[:got])
                done += got
                index = 1 - index
    except OSError as exc:
        raise SlotError(f"{path}: read-back failed: {exc.strerror}") from None
    finally:
        os.close(rfd)
    return digest.hexdigest()


_FINISH = object()
_ABORT = object()
#: a batch of pieces is written with one pwritev; IOV_MAX is 1024 on Linux
_MAX_IOV = 512


class _Sink:
    """The disk side of a slot write, on its own thread, so network and disk work at once.

    Takes raw pieces in stream order through a short queue (its depth bounds
    the memory), holds the first ``head_len`` bytes back, writes the rest in
    batches of about ``chunk_size`` with pwritev (no copy into one buffer),
    and on :meth:`finish` flushes, fsyncs, writes the head and fsyncs again.
    :meth:`abort` stops without writing the head.
    """

    def __init__(
        self,
        fd: int,
        path: str,
        *,
        head_len: int,
        chunk_size: int,
        hasher: hashlib._Hash | None,
        depth: int = 3,
    ) -> None:
        self._fd = fd
        self._path = path
        self._head_len = head_len
        self._chunk_size = chunk_size
        self._hasher = hasher
        self._head = bytearray()
        self._batch: list[memoryview] = []
        self._batch_len = 0
        self._offset = head_len
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubesolo-slot-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        """Queue a piece (waits while the queue is full); raise the writer's error, if any."""
        if self.error is not None:
            raise self.error
        self._queue.put(data)

    def finish(self) -> None:
        """Write everything and the head, durably; raise the writer's error, if any."""
        self._queue.put(_FINISH)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop after the pieces already queued, leaving the old head in place."""
        self._queue.put(_ABORT)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _FINISH or item is _ABORT:
                if item is _FINISH and self.error is None:
                    try:
                        self._flush()
                        _fsync(self._fd, self._path)
                        # The head last: until now the slot kept its old superblock and label.
                        _pwrite_all(self._fd, self._path, self._head, 0)
                        _fsync(self._fd, self._path)
                    except BaseException as exc:  # handed to the main thread
                        self.error = exc
                return
            if self.error is not None or not isinstance(item, bytes | bytearray):
                continue  # keep draining so the main thread never blocks on a dead writer
            try:
                self._take(item)
            except BaseException as exc:  # handed to the main thread
                self.error = exc

    def _take(self, data: bytes | bytearray) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        view = memoryview(data)
        if len(self._head) < self._head_len:
            take = self._head_len - len(self._head)
            self._head += view[:take]
            view = view[take:]
        if view:
            self._batch.append(view)
            self._batch_len += len(view)
        if self._batch_len >= self._chunk_size or len(self._batch) >= _MAX_IOV:
            self._flush()

    def _flush(self) -> None:
        bufs = self._batch
        total = self._batch_len
        done = 0
        try:
            while done < total:
                n = os.pwritev(self._fd, bufs, self._offset + done)
                done += n
                # A short write: drop what went out, keep the rest of a half-written buffer.
                while bufs and n >= len(bufs[0]):
                    n -= len(bufs[0])
                    bufs = bufs[1:]
                if bufs and n:
                    bufs = [bufs[0][n:], *bufs[1:]]
        except OSError as exc:
            raise SlotError(
                f"{self._path}: write at byte {self._offset + done} failed: {exc.strerror}"
            ) from None
        self._offset += total
        self._batch = []
        self._batch_len = 0


def _pwrite_all(fd: int, path: str, data: bytearray, offset: int) -> int:
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as exc:
        raise SlotError(f"{path}: write at byte {offset + done} failed: {exc.strerror}") from None
    finally:
        view.release()
    return done


def _fsync(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SlotError(f"{path}: fsync failed: {exc.strerror}") from None
