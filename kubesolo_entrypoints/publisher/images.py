"""The images a channel serves: compressed as asked, hashed whole and chunk by chunk.

:func:`chunk_index` is the adaptive step of ``add``: the raw image cut into the
repository's content-addressed chunk store (kubesolo_adapters.chunkstore) and
its chunk index, which ``add`` then publishes as a TUF target.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kubesolo_entrypoints.publisher.workspace import PublishError, PublishUsage

__all__ = ["IMAGE_SUFFIX", "chunk_index", "prepare", "raw_sha256"]

IMAGE_SUFFIX = {"none": ".img", "gzip": ".img.gz", "zstd": ".img.zst"}


def _reader(image: Path) -> BinaryIO:
    return image.open("rb")


def _blocks(fh: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    return iter(lambda: fh.read(size), b"")


def prepare(
    image: Path, tmp: Path, compress: str, chunk_size: int
) -> tuple[Path, int, str, list[str]]:
    """Compress ``image`` as asked; return (served file, raw size, raw sha256, chunk hashes)."""
    raw_digest = hashlib.sha256()
    raw_size = 0
    if compress == "none":
        served = image
        with _reader(image) as fh:
            for block in _blocks(fh):
                raw_digest.update(block)
                raw_size += len(block)
    else:
        served = tmp / "image.out"
        with _reader(image) as fh, served.open("wb") as out:
            if compress == "gzip":
                sink: Any = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
            else:
                import zstandard

                sink = zstandard.ZstdCompressor(level=10, threads=-1).stream_writer(out)
            with sink:
                for block in _blocks(fh):
                    raw_digest.update(block)
                    raw_size += len(block)
                    sink.write(block)
    if raw_size == 0:
        raise PublishUsage(f"image {image} is empty")
    chunks = []
    with _reader(served) as fh:
        for block in _blocks(fh, chunk_size):
            chunks.append(hashlib.sha256(block).hexdigest())
    return served, raw_size, raw_digest.hexdigest(), chunks


def raw_sha256(served: Path, compression: str) -> str:
    """SHA-256 of the raw image inside a served image file (the agent's own decompression)."""
    from kubesolo_adapters.streams import raw_chunks

    digest = hashlib.sha256()
    with _reader(served) as fh:
        for block in raw_chunks(_blocks(fh), compression):
            digest.update(block)
    return digest.hexdigest()


def chunk_index(image: Path, tmp: Path, store: Path, *, raw_size: int, raw_sha256: str) -> Path:
    """Add the raw ``image``'s new chunks to ``store``; return its chunk index (a file in ``tmp``).

    Chunks already in the store (from earlier releases) are neither
    compressed nor written again: consecutive releases share them. The index
    must describe the image :func:`prepare` read (``raw_size``, ``raw_sha256``).
    """
    from kubesolo_adapters.chunkstore import publish_chunks

    done = publish_chunks(image, tmp, index_name="image.chunks", store=store)
    if (done.image_size, done.raw_sha256) != (raw_size, raw_sha256):
        raise PublishError(
            f"image {image} changed while it was being published; nothing was signed"
        )
    return done.index
