"""The Fetcher contract: one suite, run against the fake and every real adapter.

A subclass provides the ``rig`` fixture: a fetcher, the URL of a release
document (relative image URLs resolve next to it), a way to publish bytes
under a name next to that URL, and the URL of something that is not there.
Servers that can misbehave on purpose also run :class:`FetcherFaultContract`,
whose rig can make every request fail, cut or stall.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from kubesolo_adapters.sandbox import build_release
from kubesolo_core.errors import FetchError
from kubesolo_core.ports import Fetcher
from kubesolo_core.release import ImageSpec, parse_release, release_document

#: bigger than one network chunk, so streams really are streams
IMAGE_SIZE = 3 * (1 << 20) + 12345


@dataclass
class FetchRig:
    """What a contract test needs from one adapter."""

    fetcher: Fetcher
    #: URL of the release document
    release_url: str
    #: store ``data`` under ``name`` (relative to the document's folder); returns its URL
    publish: Callable[[str, bytes], str]
    #: a URL next to the document where nothing is published
    missing_url: str
    #: make every following request misbehave: "fail", "truncate" (at half the file), "stall"
    inject: Callable[[str, int], None] | None = None


def payload(size: int = IMAGE_SIZE, seed: bytes = b"kubesolo") -> bytes:
    """Cheap incompressible-looking bytes."""
    block = hashlib.sha256(seed).digest() + os.urandom(4064)
    return (block * (size // len(block) + 1))[:size]


def spec_for(
    data: bytes, url: str, *, size: int | None = None, sha: str | None = None
) -> ImageSpec:
    """An uncompressed ImageSpec for ``data`` served at ``url`` (size and hash overridable)."""
    digest = sha or hashlib.sha256(data).hexdigest()
    length = len(data) if size is None else size
    return ImageSpec(url=url, sha256=digest, size=length, raw_size=length, raw_sha256=digest)


def drain(stream: object) -> tuple[bytes, int]:
    """Everything a stream yields (and how many chunks), for asserting on it."""
    out = bytearray()
    count = 0
    for chunk in stream:  # type: ignore[attr-defined]
        assert isinstance(chunk, bytes)
        out += chunk
        count += 1
    return bytes(out), count


def bytes_before_error(open_stream: Callable[[], Iterator[bytes]]) -> tuple[int, FetchError]:
    """Open and drain a stream that must fail; the bytes it yielded first and the error."""
    got = 0
    try:
        for chunk in open_stream():
            got += len(chunk)
    except FetchError as exc:
        return got, exc
    raise AssertionError(f"no FetchError after {got} bytes")


def document(version: str, image_url: str, data: bytes) -> bytes:
    release, _ = build_release(version, data, compression="none", url=image_url)
    return json.dumps(release_document(release)).encode()


class FetcherContract:
    """The behaviour every Fetcher must show. Not collected itself (no Test prefix)."""

    @pytest.fixture
    def rig(self) -> FetchRig:
        raise NotImplementedError("a subclass provides the rig")

    # ----------------------------------------------------------------- documents

    def test_fetch_release_returns_the_document(self, rig: FetchRig) -> None:
        data = payload(4096)
        doc = document("1.3.0", "kubesolo-os-1.3.0.img", data)
        url = rig.publish("release.json", doc)
        assert url == rig.release_url
        got = rig.fetcher.fetch_release(rig.release_url)
        assert got == doc
        assert str(parse_release(got).version) == "1.3.0"

    def test_missing_document_is_a_fetch_error_naming_the_url(self, rig: FetchRig) -> None:
        with pytest.raises(FetchError) as info:
            rig.fetcher.fetch_release(rig.missing_url)
        assert rig.missing_url in str(info.value)

    # ----------------------------------------------------------------- images

    def test_image_relative_to_the_document(self, rig: FetchRig) -> None:
        data = payload()
        rig.publish("kubesolo-os-1.3.0.img", data)
        got, chunks = drain(
            rig.fetcher.open_image(rig.release_url, spec_for(data, "kubesolo-os-1.3.0.img"))
        )
        assert got == data
        assert chunks > 1

    def test_image_in_a_subfolder(self, rig: FetchRig) -> None:
        data = payload(100_000, b"sub")
        rig.publish("images/os.img", data)
        got, _ = drain(rig.fetcher.open_image(rig.release_url, spec_for(data, "images/os.img")))
        assert got == data

    def test_image_by_absolute_url(self, rig: FetchRig) -> None:
        data = payload(200_000, b"abs")
        url = rig.publish("abs.img", data)
        got, _ = drain(rig.fetcher.open_image(rig.missing_url, spec_for(data, url)))
        assert got == data

    def test_missing_image_fails_at_open(self, rig: FetchRig) -> None:
        with pytest.raises(FetchError):
            rig.fetcher.open_image(rig.release_url, spec_for(b"x" * 10, "absent.img"))

    def test_wrong_sha256_is_a_fetch_error(self, rig: FetchRig) -> None:
        data = payload(300_000, b"sha")
        rig.publish("sha.img", data)
        spec = spec_for(data, "sha.img", sha=hashlib.sha256(b"other").hexdigest())
        with pytest.raises(FetchError, match="SHA-256"):
            drain(rig.fetcher.open_image(rig.release_url, spec))

    def test_never_more_than_the_announced_size(self, rig: FetchRig) -> None:
        data = payload(300_000, b"more")
        rig.publish("more.img", data)
        spec = spec_for(data[:-1000], "more.img")
        got, _ = bytes_before_error(lambda: rig.fetcher.open_image(rig.release_url, spec))
        assert got <= spec.size

    def test_fewer_bytes_than_announced_is_a_fetch_error(self, rig: FetchRig) -> None:
        data = payload(300_000, b"less")
        rig.publish("less.img", data)
        spec = spec_for(data + b"\0" * 1000, "less.img")
        with pytest.raises(FetchError):
            drain(rig.fetcher.open_image(rig.release_url, spec))


class FetcherFaultContract(FetcherContract):
    """Persistent faults: the fetcher gives up with a FetchError, in bounded time."""

    def _inject(self, rig: FetchRig, kind: str, size: int) -> None:
        assert rig.inject is not None
        rig.inject(kind, size)

    def test_a_server_that_keeps_failing(self, rig: FetchRig) -> None:
        data = payload(100_000, b"fail")
        doc = rig.publish("release.json", document("1.0.0", "f.img", data))
        rig.publish("f.img", data)
        self._inject(rig, "fail", len(data))
        start = time.monotonic()
        with pytest.raises(FetchError):
            rig.fetcher.fetch_release(doc)
        with pytest.raises(FetchError):
            drain(rig.fetcher.open_image(rig.release_url, spec_for(data, "f.img")))
        assert time.monotonic() - start < 20

    def test_a_stream_always_cut_at_the_same_byte(self, rig: FetchRig) -> None:
        data = payload(500_000, b"cut")
        rig.publish("cut.img", data)
        self._inject(rig, "truncate", len(data))
        start = time.monotonic()
        got, _ = bytes_before_error(
            lambda: rig.fetcher.open_image(rig.release_url, spec_for(data, "cut.img"))
        )
        assert got < len(data)
        assert time.monotonic() - start < 20

    def test_a_server_that_stalls(self, rig: FetchRig) -> None:
        data = payload(100_000, b"stall")
        rig.publish("stall.img", data)
        self._inject(rig, "stall", len(data))
        start = time.monotonic()
        with pytest.raises(FetchError):
            drain(rig.fetcher.open_image(rig.release_url, spec_for(data, "stall.img")))
        assert time.monotonic() - start < 20
