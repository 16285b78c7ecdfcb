"""The read side of a slot write: what was written, read back from the medium and hashed.

* :class:`ReadBack`: large aligned reads of a slot, ``O_DIRECT`` where the
  device or file system allows (they neither pollute nor wait on the page
  cache), else through the page cache after dropping it over the stretch;
  two buffers, the medium filling one while the other is hashed (hashlib
  and the reads both release the GIL);
* :class:`Verifier`: the full writer's read-back, on its own thread *while*
  the image streams. Whenever a stretch of the slot has been written
  (:attr:`~kubesolo_adapters.slotio.Writer.completed`), it fsyncs
  (everything written so far is then on the medium), drops what the cache
  may hold of it and reads it back. It hashes the held-back head from memory
  first, so its digest is over the image as it will be once the head is
  written last (:mod:`kubesolo_adapters.slotpipe`);
* :func:`read_back`: the whole slot in one pass, after a writer that went
  through the page cache and fsynced (the chunked writer,
  :mod:`kubesolo_adapters.chunkwriter`).

Either way the bytes are judged by :func:`kubesolo_core.release.verify_written`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from kubesolo_adapters.slotio import (
    ALIGN,
    POLL,
    Aborted,
    Filler,
    Writer,
    aligned,
    drop_cache,
    fsync,
    open_read,
    round_up,
    set_direct,
)
from kubesolo_core.errors import SlotError, VerifyError

__all__ = ["REGION_PIECES", "ReadBack", "Verifier", "read_back"]

#: the verifier reads back a stretch once this many more write buffers were written
#: (16 MiB with the default buffers: a few dozen fsyncs for a slot image, each a
#: cache flush of the medium)
REGION_PIECES = 64


class ReadBack:
    """Reads a slot of ``size`` bytes in ``read_size`` pieces into two aligned buffers."""

    def __init__(
        self, rfd: int, path: str, *, size: int, read_size: int, direct: bool, block: bool
    ):
        self.rfd = rfd
        self.path = path
        self.size = size
        self.read_size = read_size
        self.direct = direct
        self.block = block
        self.bufs = (aligned(read_size), aligned(read_size))

    def drop(self, offset: int, length: int) -> None:
        """Drop the page cache over a stretch (O_DIRECT reads do not look at it)."""
        if not self.direct:
            drop_cache(self.rfd, offset, length, block=self.block)

    def read_into(self, index: int, offset: int, want: int) -> int:
        """Read ``want`` bytes at ``offset`` into buffer ``index`` (O_DIRECT: an aligned length)."""
        length = round_up(want) if self.direct else want
        got = 0
        view = memoryview(self.bufs[index])
        try:
            while got < want:
                try:
                    n = os.preadv(self.rfd, [view[got:length]], offset + got)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    # The file system takes no O_DIRECT reads: the page cache, dropped first.
                    self.direct = False
                    set_direct(self.rfd, False)
                    self.drop(offset, self.size - offset)
                    length = want
                    continue
                if n == 0:
                    break
                got += n
        finally:
            view.release()
        return min(got, want)

    def hash_range(
        self,
        pool: ThreadPoolExecutor,
        digest: hashlib._Hash,
        start: int,
        end: int,
        stop: threading.Event | None = None,
    ) -> None:
        """Hash ``[start, end)`` of the slot into ``digest``, one read ahead on ``pool``."""
        offsets = list(range(start, end, self.read_size))

        def submit(i: int) -> Future[int]:
            want = min(self.read_size, end - offsets[i])
            return pool.submit(self.read_into, i % 2, offsets[i], want)

        if not offsets:
            return
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
                raise VerifyError(f"{self.path} read back only {offset + got} of {self.size} bytes")
            with memoryview(self.bufs[i % 2]) as view:
                digest.update(view[:got])
            if stop is not None and stop.is_set():
                raise Aborted


def read_back(path: str, size: int, *, block: bool, read_size: int, direct: bool = True) -> str:
    """The SHA-256 of the slot's first ``size`` bytes as read from the medium.

    For a writer that wrote through the page cache and fsynced: the reads
    are O_DIRECT where allowed, else the cache is dropped first. Reads
    exactly ``size`` bytes or raises (VerifyError when the slot ends sooner,
    SlotError when the medium fails).
    """
    read_size = max(ALIGN, round_up(min(read_size, max(size, 1))))
    rfd, direct = open_read(path, direct)
    try:
        reader = ReadBack(rfd, path, size=size, read_size=read_size, direct=direct, block=block)
        reader.drop(0, size)
        digest = hashlib.sha256()
        with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-readback") as pool:
            reader.hash_range(pool, digest, 0, size)
    finally:
        os.close(rfd)
    return digest.hexdigest()


class Verifier(threading.Thread):
    """Reads back what the writer finished (after an fsync) and hashes it, head first."""

    def __init__(self, reader: ReadBack, writer: Writer, filler: Filler) -> None:
        super().__init__(name="kubesolo-slot-verify", daemon=True)
        self.reader = reader
        self.writer = writer
        self.filler = filler
        self.region = REGION_PIECES * filler.piece
        self.digest = hashlib.sha256()
        #: bytes of the image hashed so far (the head counts once it is hashed)
        self.done = filler.head_len
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            # One read ahead: the medium fills one buffer while the other is hashed.
            with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-readback") as pool:
                self._loop(pool)
        except Aborted:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        while not self.filler.head_done.wait(POLL):
            if self.stop.is_set() or self.writer.finished:
                raise Aborted
        self.digest.update(memoryview(self.filler.head)[: self.filler.head_len])
        size = self.filler.size
        while self.done < size:
            with self.writer.cond:
                while True:
                    if self.stop.is_set():
                        raise Aborted
                    upto = self.writer.completed
                    if self.writer.finished:
                        break
                    # Page-cache writes are only read back once all is written (the cache drop).
                    if self.reader.direct and upto - self.done >= self.region:
                        break
                    self.writer.cond.wait(POLL)
            if self.writer.error is not None or upto <= self.done:
                raise Aborted  # the writer failed or the stream ended short: the caller says why
            # Everything the writer finished is now on the medium, and nothing of it in the cache.
            fsync(self.reader.rfd, self.reader.path)
            self.reader.drop(self.done, upto - self.done)
            self.reader.hash_range(pool, self.digest, self.done, upto, self.stop)
            self.done = upto
