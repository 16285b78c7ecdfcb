"""The chunker of adaptive updates over a file or a block device (the rule: kubesolo_core.chunks).

One implementation for the publisher (who writes the index) and the agent
(who looks for chunks in its booted slot): both must cut at the same places.
Reads with pread in large buffers, decides cuts block by block (CRC-32 of
each block, zero blocks never cut), hashes each chunk with SHA-256 as it
goes; memory stays at one buffer whatever the size.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from typing import Any

from kubesolo_core.chunks import ChunkParams

__all__ = ["chunk_bytes", "chunk_fd", "read_ahead", "read_exact"]

_BUFFER = 4 << 20


def read_exact(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` (fewer bytes only at the end of the file or device)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def read_ahead(fd: int, size: int, buffer: int = _BUFFER) -> Iterator[memoryview]:
    """The first ``size`` bytes of ``fd`` in order, the next read running while one is used.

    Two buffers: the device fills one on a helper thread (pread drops the GIL)
    while the caller hashes the other. A view is valid until the next one is
    asked for. Ends early where the file or device ends.
    """
    from concurrent.futures import ThreadPoolExecutor

    bufs = (bytearray(min(buffer, max(size, 1))), bytearray(min(buffer, max(size, 1))))

    def read(index: int, offset: int) -> int:
        want = min(len(bufs[index]), size - offset)
        return read_exact(fd, memoryview(bufs[index])[:want], offset)

    with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-read-ahead") as pool:
        offset = 0
        index = 0
        pending = pool.submit(read, 0, 0) if size > 0 else None
        while pending is not None:
            got = pending.result()
            if got == 0:
                return
            nxt = offset + got
            full = got == min(len(bufs[index]), size - offset)
            pending = pool.submit(read, 1 - index, nxt) if full and nxt < size else None
            yield memoryview(bufs[index])[:got]
            offset = nxt
            index = 1 - index


def chunk_fd(
    fd: int,
    size: int,
    params: ChunkParams,
    *,
    whole: Any = None,
    buffer: int = _BUFFER,
) -> Iterator[tuple[int, int, bytes]]:
    """Chunk the first ``size`` bytes of ``fd``: yields (offset, length, sha256) in order.

    ``whole``, a hashlib object, is fed every byte (the publisher's image
    hash in the same pass). Stops early, with a last short chunk, where the
    file or device ends before ``size``.
    """

    return _chunks(read_ahead(fd, size, buffer), size, params, whole=whole)


def chunk_bytes(data: bytes, params: ChunkParams) -> Iterator[tuple[int, int, bytes]]:
    """Chunk ``data`` in memory (the in-memory slots of kubesolo_adapters.fakes.chunks)."""

    view = memoryview(data)
    pieces = (view[i : i + _BUFFER] for i in range(0, len(data), _BUFFER))
    return _chunks(pieces, len(data), params, whole=None)


def _chunks(
    pieces: Iterator[memoryview],
    size: int,
    params: ChunkParams,
    *,
    whole: Any,
) -> Iterator[tuple[int, int, bytes]]:
    """Cut the stream of ``pieces`` (each a whole number of blocks, but the last)."""
    bs = params.block_size
    zero = bytes(bs)
    crc32 = zlib.crc32
    zero_crc = crc32(zero)
    # The rule of ChunkParams.cuts_after, inlined: this loop runs once per block.
    lo, avg, hi = params.min_blocks, params.avg_blocks, params.max_blocks
    start = 0
    blocks = 0
    digest = hashlib.sha256()
    offset = 0
    for data in pieces:
        got = len(data)
        if whole is not None:
            whole.update(data)
        mark = 0
        for b in range(0, got, bs):
            blocks += 1
            if blocks < lo:
                continue
            if blocks < hi:
                block = data[b : b + bs]
                mix = crc32(block)
                if mix % avg or (mix == zero_crc and block == zero):
                    continue
            end = min(b + bs, got)
            digest.update(data[mark:end])
            yield start, offset + end - start, digest.digest()
            start = offset + end
            blocks = 0
            digest = hashlib.sha256()
            mark = end
        digest.update(data[mark:])
        offset += got
        if got % bs:
            break  # a short piece: the medium (or the image) ends here
    if offset > start:
        yield start, offset - start, digest.digest()
