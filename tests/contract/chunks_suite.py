"""The ChunkSource contract (adaptive updates): one suite for the memory store and the real ones.

A subclass provides the ``rig`` fixture: a source, the URL of a release
document, a way to publish an image's chunk index and chunk store next to it,
and a way to damage one chunk of the store (take it away, or corrupt it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import attrs
import pytest

from kubesolo_core.adaptive import ChunkSource
from kubesolo_core.chunks import ChunkIndex, Need, parse_index
from kubesolo_core.errors import FetchError
from kubesolo_core.release import ChunksSpec


@dataclass
class ChunkRig:
    source: ChunkSource
    release_url: str
    #: publish ``image`` (a name for its index); returns the release's spec and the index
    publish: Callable[[bytes, str], tuple[ChunksSpec, ChunkIndex]]
    #: "missing" or "corrupt" the chunk with this SHA-256 in the store
    damage: Callable[[bytes, str], None]


def image_bytes(size: int = 3 << 20, seed: bytes = b"img") -> bytes:
    """Varied, partly compressible content with a run of zeros, like a filesystem."""
    out = bytearray()
    n = 0
    while len(out) < size - (512 << 10):
        block = hashlib.sha256(seed + n.to_bytes(4, "little")).digest() * 64  # 2 KiB
        out += block if n % 3 else os.urandom(2048)
        n += 1
    out += bytes(size - len(out))
    return bytes(out)


def needs_of(index: ChunkIndex) -> list[Need]:
    seen: dict[bytes, Need] = {}
    for c in index:
        if c.sha256 in seen:
            old = seen[c.sha256]
            seen[c.sha256] = attrs.evolve(old, offsets=(*old.offsets, c.offset))
        else:
            seen[c.sha256] = Need(
                sha256=c.sha256, length=c.length, stored=c.stored, offsets=(c.offset,)
            )
    return list(seen.values())


class ChunkSourceContract:
    """What every ChunkSource does. Not collected itself (no Test prefix)."""

    @pytest.fixture
    def rig(self) -> ChunkRig:
        raise NotImplementedError

    def test_index_is_fetched_and_checked(self, rig: ChunkRig) -> None:
        image = image_bytes()
        spec, index = rig.publish(image, "os-1.img")
        data = rig.source.fetch_index(rig.release_url, spec)
        assert hashlib.sha256(data).hexdigest() == spec.sha256
        assert parse_index(data).raw_sha256 == hashlib.sha256(image).hexdigest()
        assert len(parse_index(data)) == len(index) > 3

    def test_an_index_other_than_the_one_named_is_refused(self, rig: ChunkRig) -> None:
        spec, _ = rig.publish(image_bytes(seed=b"2"), "os-2.img")
        with pytest.raises(FetchError):
            rig.source.fetch_index(rig.release_url, attrs.evolve(spec, sha256="0" * 64))
        with pytest.raises(FetchError):
            rig.source.fetch_index(rig.release_url, attrs.evolve(spec, size=spec.size + 1))

    def test_a_missing_index_is_a_fetch_error(self, rig: ChunkRig) -> None:
        spec, _ = rig.publish(image_bytes(seed=b"3"), "os-3.img")
        with pytest.raises(FetchError):
            rig.source.fetch_index(rig.release_url, attrs.evolve(spec, index="nothing.chunks"))

    def test_every_chunk_asked_for_arrives_once_and_matches(self, rig: ChunkRig) -> None:
        image = image_bytes(seed=b"4")
        spec, index = rig.publish(image, "os-4.img")
        needs = needs_of(index)
        got = list(rig.source.fetch_chunks(rig.release_url, spec, needs))
        assert sorted(n.sha256 for n, _, _ in got) == sorted(n.sha256 for n in needs)
        for need, raw, served in got:
            assert hashlib.sha256(raw).digest() == need.sha256
            assert raw == image[need.offsets[0] : need.offsets[0] + need.length]
            assert served == need.stored

    def test_nothing_asked_nothing_fetched(self, rig: ChunkRig) -> None:
        spec, _ = rig.publish(image_bytes(seed=b"5"), "os-5.img")
        assert list(rig.source.fetch_chunks(rig.release_url, spec, [])) == []

    def test_a_missing_chunk_is_a_fetch_error(self, rig: ChunkRig) -> None:
        spec, index = rig.publish(image_bytes(seed=b"6"), "os-6.img")
        needs = needs_of(index)
        rig.damage(needs[len(needs) // 2].sha256, "missing")
        with pytest.raises(FetchError):
            list(rig.source.fetch_chunks(rig.release_url, spec, needs))

    def test_a_corrupt_chunk_never_passes_as_good(self, rig: ChunkRig) -> None:
        spec, index = rig.publish(image_bytes(seed=b"7"), "os-7.img")
        needs = needs_of(index)
        bad = needs[1]
        rig.damage(bad.sha256, "corrupt")
        try:
            got = list(rig.source.fetch_chunks(rig.release_url, spec, needs))
        except FetchError:
            return  # the source noticed (a broken zstd frame)
        # or the bytes arrive, and the writer's SHA-256 check refuses them
        raw = next(r for n, r, _ in got if n.sha256 == bad.sha256)
        assert hashlib.sha256(raw).digest() != bad.sha256
