"""Streaming helpers shared by the slot writers: on-the-fly decompression and hashing."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

from kubesolo_core.errors import FetchError, VerifyError


class Decompressor(Protocol):
    """Feed compressed bytes, get raw bytes; ``finish`` checks the stream ended cleanly."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Gzip:
    def __init__(self) -> None:
        # 16 + MAX_WBITS: expect a gzip header and trailer (CRC32 + size are checked).
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        try:
            return self._z.decompress(data)
        except zlib.error as exc:
            raise VerifyError(f"gzip stream is corrupt: {exc}") from None

    def finish(self) -> bytes:
        try:
            tail = self._z.flush()
        except zlib.error as exc:
            raise VerifyError(f"gzip stream is corrupt: {exc}") from None
        if not self._z.eof:
            raise VerifyError("gzip stream ended early (truncated image)")
        return tail


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._error = zstandard.ZstdError

    def feed(self, data: bytes) -> bytes:
        try:
            out: bytes = self._d.decompress(data)
        except self._error as exc:
            raise VerifyError(f"zstd stream is corrupt: {exc}") from None
        return out

    def finish(self) -> bytes:
        if not getattr(self._d, "eof", True):
            raise VerifyError("zstd stream ended early (truncated image)")
        return b""


def decompressor(compression: str) -> Decompressor:
    """A decompressor for ``none``, ``gzip`` or ``zstd``."""
    if compression == "none":
        return _Identity()
    if compression == "gzip":
        return _Gzip()
    if compression == "zstd":
        return _Zstd()
    raise VerifyError(f"unknown compression {compression!r} (none, gzip, zstd)")


def decompressed(chunks: Iterable[bytes], compression: str) -> Iterator[bytes]:
    """Yield the raw bytes of a stream of served bytes."""
    dec = decompressor(compression)
    for chunk in chunks:
        out = dec.feed(chunk)
        if out:
            yield out
    tail = dec.finish()
    if tail:
        yield tail


def hashed(chunks: Iterable[bytes], *, size: int, sha256: str, what: str) -> Iterator[bytes]:
    """Pass ``chunks`` through; refuse more than ``size`` bytes; check size and hash at the end."""
    digest = hashlib.sha256()
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise FetchError(f"{what}: server sent more than the {size} bytes announced")
        digest.update(chunk)
        yield chunk
    if seen != size:
        raise FetchError(f"{what}: got {seen} bytes, the release announces {size}")
    if digest.hexdigest() != sha256:
        raise FetchError(f"{what}: SHA-256 {digest.hexdigest()} != announced {sha256}")
