"""The publisher's side of adaptive updates: a chunk index and a content-addressed chunk store.

:func:`publish_chunks` chunks a raw image (kubesolo_adapters.chunker), writes
each chunk not yet in the store as ``<store>/<hex[:4]>/<hex>.zst`` (one zstd
frame; written to a temporary name, fsynced and renamed, so a reader never
sees half a file), and writes the index (format: kubesolo_core.chunks) next
to it. A store shared by consecutive releases gains only the chunks that are
new: the server keeps one copy of each, and a CDN caches each file forever
(its name is its content).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from kubesolo_adapters.atomic import atomic_write
from kubesolo_adapters.chunker import chunk_fd, read_exact
from kubesolo_core.chunks import DEFAULT_PARAMS, ChunkParams, chunk_path, encode_index
from kubesolo_core.errors import SlotError

__all__ = ["Published", "publish_chunks"]


@attrs.frozen(kw_only=True)
class Published:
    """What :func:`publish_chunks` wrote."""

    index: Path
    index_sha256: str
    index_size: int
    store: Path
    image_size: int
    raw_sha256: str
    chunks: int
    distinct: int
    #: chunk files this run added to the store, and their bytes
    new_chunks: int
    new_bytes: int
    #: bytes of all the distinct chunks of this image in the store
    stored_bytes: int

    def spec(self, relative_to: Path) -> dict[str, object]:
        """The ``image.chunks`` object of a release document published in ``relative_to``."""
        return {
            "index": os.path.relpath(self.index, relative_to),
            "sha256": self.index_sha256,
            "size": self.index_size,
            "store": os.path.relpath(self.store, relative_to).rstrip("/") + "/",
        }


def _store_chunk(path: Path, raw: bytes, level: int) -> tuple[int, bool]:
    """Write ``raw`` compressed at ``path`` unless it is there: (stored size, new?)."""
    import zstandard

    try:
        return path.stat().st_size, False
    except FileNotFoundError:
        pass
    data = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return len(data), True


def publish_chunks(
    image: Path,
    outdir: Path,
    *,
    index_name: str | None = None,
    store: Path | None = None,
    params: ChunkParams = DEFAULT_PARAMS,
    level: int = 10,
    threads: int = 2,
) -> Published:
    """Chunk ``image`` into ``store`` (default ``outdir/chunks``); write its index in ``outdir``."""
    params.check()
    store = store if store is not None else outdir / "chunks"
    index_path = outdir / (index_name or image.name + ".chunks")
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SlotError(f"{image}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        whole = hashlib.sha256()
        cut = list(chunk_fd(fd, size, params, whole=whole))
        stored: dict[bytes, tuple[int, bool]] = {}
        first: dict[bytes, tuple[int, int]] = {}
        for offset, length, sha in cut:
            first.setdefault(sha, (offset, length))

        def one(item: tuple[bytes, tuple[int, int]]) -> tuple[bytes, tuple[int, bool]]:
            sha, (offset, length) = item
            buf = bytearray(length)
            if read_exact(fd, memoryview(buf), offset) != length:
                raise SlotError(f"{image}: changed while it was being chunked")
            if hashlib.sha256(buf).digest() != sha:
                raise SlotError(f"{image}: changed while it was being chunked")
            return sha, _store_chunk(store / chunk_path(sha), bytes(buf), level)

        # zstd and SHA-256 release the GIL: a few threads use the cores.
        with ThreadPoolExecutor(max(threads, 1), thread_name_prefix="kubesolo-chunks") as pool:
            for sha, result in pool.map(one, first.items()):
                stored[sha] = result
    finally:
        os.close(fd)
    raw_sha = whole.hexdigest()
    index = encode_index(
        [(length, stored[sha][0], sha) for _, length, sha in cut],
        params=params,
        image_size=size,
        raw_sha256=raw_sha,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write(index_path, index)
    new = [s for s, (_, fresh) in stored.items() if fresh]
    return Published(
        index=index_path,
        index_sha256=hashlib.sha256(index).hexdigest(),
        index_size=len(index),
        store=store,
        image_size=size,
        raw_sha256=raw_sha,
        chunks=len(cut),
        distinct=len(stored),
        new_chunks=len(new),
        new_bytes=sum(stored[s][0] for s in new),
        stored_bytes=sum(n for n, _ in stored.values()),
    )
