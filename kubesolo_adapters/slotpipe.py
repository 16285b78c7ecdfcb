"""The slot writer's pipeline: stream an image onto an open slot, then prove it by reading it back.

:func:`kubesolo_adapters.slotwriter.write_slot` checks the slot and opens it
(only through :func:`kubesolo_adapters.slotguard.open_slot_for_write`);
:func:`write_verified` does the rest with that descriptor. Its stages run on
their own threads with a few fixed buffers between them (hashlib,
zstandard, zlib and the I/O calls all release the GIL on large buffers, so
the stages use both cores):

* **network** (the caller's thread): the served chunks, as the Fetcher
  yields them; uncompressed pieces are copied straight into the write
  buffers here;
* **decompress** (compressed images only): the served SHA-256 and the
  decompression, with the output bounded per step and, for zstd, written
  straight into the write buffers (``readinto``: no copy);
* **write** (:mod:`kubesolo_adapters.slotio`): page-aligned buffers written
  with ``O_DIRECT`` (no copy into the page cache, no write-back storm at
  fsync), batched with ``pwritev``; an unaligned tail goes through the page
  cache;
* **verify** (:mod:`kubesolo_adapters.slotverify`): the read-back runs
  *while* the image streams, stretch by stretch, each after an fsync.

The first MiB of the image (superblocks, labels) is held back and written
last, only after the read-back of everything else matched: the verifier
hashes the held-back head from memory, then the rest as read from the
medium, and :func:`kubesolo_core.release.verify_written` judges the digest.
Only then is the head written, fsynced, read back and compared byte for
byte with what was held. So every byte of the slot is read back from the
medium after an fsync covered it, the SHA-256 is over exactly ``raw_size``
bytes, and an image that does not verify never gets its head (nor its
label) on the slot.

Where ``O_DIRECT`` is refused (some file systems for image-file slots), or
``direct=False``, the writes go through the page cache and the verifier
waits for the whole image, then fsyncs and drops the cache (``BLKFLSBUF``
for a device, ``fadvise`` for a file) before it reads back.

Memory: the head (1 MiB), three write buffers and two read buffers of
512 KiB, and a short queue of served chunks (under 4 MiB in all; zstd adds
its window, at most ZSTD_MAX_WINDOW). The agent's whole process stays under
48 MiB.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Iterator
from typing import IO, cast

from kubesolo_adapters.slotio import (
    ALIGN,
    POLL,
    Aborted,
    Filler,
    Writer,
    aligned,
    block_size_ok,
    fsync,
    open_read,
    set_direct,
    write_at,
)
from kubesolo_adapters.slotverify import ReadBack, Verifier
from kubesolo_adapters.streams import raw_chunks, tapped
from kubesolo_core.errors import VerifyError
from kubesolo_core.ports import Progress, WriteResult
from kubesolo_core.release import ImageSpec, verify_written

__all__ = ["HEAD_BYTES", "PIECE", "write_verified"]

#: bytes at the start of the image written last (superblocks, boot sector, labels)
HEAD_BYTES = 1 << 20
#: write buffers of at most PIECE bytes: one filling, the writer threads' being written
POOL = 3
PIECE = 512 << 10
#: the read-back reads this many write buffers' worth at a time (512 KiB by default)
READ_PIECES = 1
#: served chunks waiting for the decompressor
SERVED_QUEUE = 4


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
    written: the slot keeps its old superblock and label. The result's
    ``raw_sha256`` is the slot's as read back (head included).
    """
    size = image.raw_size
    piece = max(ALIGN, min(piece, PIECE) // ALIGN * ALIGN)
    head_len = min(HEAD_BYTES, size)
    direct = direct and block_size_ok(fd) and set_direct(fd, True)
    rfd, read_direct = open_read(path, direct)
    writer = Writer(fd, path, start=head_len, direct=direct and read_direct)
    if not writer.direct and direct:
        set_direct(fd, False)  # the read side cannot bypass the cache: neither does the write
    for _ in range(POOL):
        writer.free.put(aligned(piece))
    head = aligned(head_len)
    filler = Filler(size, head, head_len, writer, piece)
    reader = ReadBack(
        rfd, path, size=size, read_size=READ_PIECES * piece, direct=writer.direct, block=block
    )
    verifier = Verifier(reader, writer, filler)
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
        except Aborted:
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
        # The judgement before the head: a slot that does not verify keeps its old one.
        verify_written(image, length=verifier.done, sha256=digest, where=what)
        _write_head(writer, reader, head, head_len, what)
    except BaseException:
        verifier.stop.set()
        writer.join()
        verifier.join()
        raise
    finally:
        os.close(rfd)
    # Uncompressed, the served bytes are the raw bytes just read back and matched.
    return WriteResult(written=size, raw_sha256=digest, served_sha256=served or digest)


def _write_head(writer: Writer, reader: ReadBack, head: mmap.mmap, length: int, what: str) -> None:
    """The head last, once the rest verified: write, fsync, read back, compare."""
    if not length:
        return
    with memoryview(head) as view:
        write_at(writer, 0, [view[:length]])
        fsync(writer.fd, writer.path)
        reader.drop(0, length)
        for offset in range(0, length, reader.read_size):
            want = min(reader.read_size, length - offset)
            got = reader.read_into(0, offset, want)
            with memoryview(reader.bufs[0]) as back:
                if got != want or back[:want] != view[offset : offset + want]:
                    raise VerifyError(
                        f"{what}: the first {length} bytes read back differ from the image's "
                        "(written last, after the rest verified)",
                        way_out="the slot is not staged; check the disk (dmesg)",
                    )


def _take_plain(chunks: Iterator[bytes], filler: Filler, progress: Progress | None) -> None:
    for chunk in chunks:
        filler.feed(chunk)
        if progress is not None:
            progress(filler.pos, filler.size)


_END = object()


def _take_compressed(
    chunks: Iterator[bytes],
    image: ImageSpec,
    filler: Filler,
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
                raise Aborted
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
            inbox.put(item, timeout=POLL)
        except queue.Full:
            continue
        return


def _unzstd_into(source: Iterator[bytes], filler: Filler) -> None:
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
