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
from collections.abc import Callable, Iterator
from typing import Any

from kubesolo_core.chunks import ChunkParams

__all__ = ["chunk_bytes", "chunk_fd", "read_exact"]

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

    def read(view: memoryview, offset: int) -> int:
        return read_exact(fd, view, offset)

    return _chunks(read, size, params, whole=whole, buffer=buffer)


def chunk_bytes(data: bytes, params: ChunkParams) -> Iterator[tuple[int, int, bytes]]:
    """Chunk ``data`` in memory (the in-memory slots of kubesolo_adapters.memory_chunks)."""

    def read(view: memoryview, offset: int) -> int:
        part = data[offset : offset + len(view)]
        view[: len(part)] = part
        return len(part)

    return _chunks(read, len(data), params, whole=None, buffer=_BUFFER)


def _chunks(
    read: Callable[[memoryview, int], int],
    size: int,
    params: ChunkParams,
    *,
    whole: Any,
    buffer: int,
) -> Iterator[tuple[int, int, bytes]]:
    bs = params.block_size
    buffer = max(bs, buffer - buffer % bs)
    zero = bytes(bs)
    crc32 = zlib.crc32
    zero_crc = crc32(zero)
    # The rule of ChunkParams.cuts_after, inlined: this loop runs once per block.
    lo, avg, hi = params.min_blocks, params.avg_blocks, params.max_blocks
    buf = bytearray(min(buffer, max(size, bs)))
    view = memoryview(buf)
    start = 0
    blocks = 0
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        got = read(view[: min(len(buf), size - offset)], offset)
        if got == 0:
            break
        data = view[:got]
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
        if got < len(buf) and offset < size:
            break  # the medium ended early
    if offset > start:
        yield start, offset - start, digest.digest()
