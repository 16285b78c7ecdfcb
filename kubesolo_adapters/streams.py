"""Streaming helpers shared by the slot writers: on-the-fly decompression and hashing."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, cast

from kubesolo_core.errors import FetchError, VerifyError


class IterReader:
    """A ``read(n)`` face on an iterator of byte chunks (for zstandard's stream_reader)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._rest:
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._rest = memoryview(nxt)
        if size < 0:
            size = len(self._rest)
        out = bytes(self._rest[:size])
        self._rest = self._rest[size:]
        return out


def _gunzip(chunks: Iterator[bytes], piece: int) -> Iterator[bytes]:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    try:
        for chunk in chunks:
            data = chunk
            full = False
            while True:
                if d.eof:
                    # gzip allows concatenated members (pigz, cat a.gz b.gz).
                    data = d.unused_data + data
                    if not data:
                        break
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                if not data and not full:
                    break
                started = True
                out = d.decompress(data, piece)
                data = d.unconsumed_tail
                # A full output buffer may leave output pending inside zlib: ask again.
                full = len(out) == piece
                if out:
                    yield out
        if started and not d.eof:
            raise VerifyError("gzip stream ended early (truncated image)")
    except zlib.error as exc:
        raise VerifyError(f"gzip stream is corrupt: {exc}") from None


#: the largest zstd window the agent accepts: every level up to 19 fits (level 19
#: uses 8 MiB); --ultra levels and --long windows (up to 2 GiB) would need as
#: much memory on a box that has 48 MiB for the whole agent
ZSTD_MAX_WINDOW = 8 << 20


def zstd_error(exc: Exception) -> VerifyError:
    """A zstd failure as the VerifyError the writer raises."""
    if "too much memory" in str(exc):
        return VerifyError(
            f"the zstd image needs a window larger than {ZSTD_MAX_WINDOW >> 20} MiB to "
            f"decompress ({exc})",
            way_out="publish the image compressed with zstd level 19 or lower, without --long "
            "or --ultra",
        )
    return VerifyError(f"zstd stream is corrupt: {exc}")


def _unzstd(chunks: Iterator[bytes], piece: int) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
        cast("IO[bytes]", IterReader(chunks)), read_size=1 << 17, read_across_frames=True
    )
    try:
        while True:
            out = reader.read(piece)
            if not out:
                break
            yield out
    except zstandard.ZstdError as exc:
        raise zstd_error(exc) from None
    # zstandard does not report a frame cut short; the raw_size check of the
    # writer does ("ended after N raw bytes").


def raw_chunks(served: Iterator[bytes], compression: str, piece: int = 4 << 20) -> Iterator[bytes]:
    """The raw bytes of a served stream, never more than ``piece`` bytes per chunk when compressed.

    The output per step is bounded, so memory stays flat whatever the
    compression ratio (one 16 KiB zstd chunk of zeros can expand to hundreds
    of MiB in one go with an unbounded decompressor).
    """
    if compression == "none":
        return served
    if compression == "gzip":
        return _gunzip(served, piece)
    if compression == "zstd":
        return _unzstd(served, piece)
    raise VerifyError(f"unknown compression {compression!r} (none, gzip, zstd)")


def tapped(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    """Pass ``chunks`` through, feeding each to ``digest`` (a hashlib object) on the way."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def hashed(chunks: Iterable[bytes], *, size: int, sha256: str | None, what: str) -> Iterator[bytes]:
    """Pass ``chunks`` through; refuse more than ``size`` bytes; check size and hash at the end.

    ``sha256=None`` checks the length only (for a caller that verifies every
    piece against signed chunk hashes itself).
    """
    digest = hashlib.sha256() if sha256 is not None else None
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise FetchError(f"{what}: server sent more than the {size} bytes announced")
        if digest is not None:
            digest.update(chunk)
        yield chunk
    if seen != size:
        raise FetchError(f"{what}: got {seen} bytes, the release announces {size}")
    if digest is not None and digest.hexdigest() != sha256:
        raise FetchError(f"{what}: SHA-256 {digest.hexdigest()} != announced {sha256}")
