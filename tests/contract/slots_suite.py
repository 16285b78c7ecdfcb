"""The SlotStore contract: one suite, run against the fake and every real adapter.

A subclass provides the ``rig`` fixture: a store whose slots A and B exist
(A holds an image of version 1.0.0), its capacity per slot, a way to make a
raw slot image of a version that the store can read back, a store whose
slot B is missing, and a way to read the first bytes of a slot's medium.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import zstandard

from kubesolo_core.errors import FetchError, SlotError, VerifyError
from kubesolo_core.ports import SlotStore
from kubesolo_core.release import ImageSpec
from kubesolo_core.slots import Slot

COMPRESSIONS = ("none", "gzip", "zstd")


@dataclass
class SlotRig:
    """What a contract test needs from one adapter."""

    store: SlotStore
    capacity: int
    #: a raw slot image of the given version, readable by ``store`` once written to ``slot``
    image: Callable[[Slot, str], bytes]
    #: a store whose slot B does not exist (A as in ``store``)
    missing: SlotStore
    #: the first n bytes on the slot's medium
    raw: Callable[[Slot, int], bytes]


def served(raw: bytes, compression: str) -> tuple[bytes, ImageSpec]:
    """The bytes a server would serve for ``raw`` and the matching ImageSpec."""
    if compression == "gzip":
        data = gzip.compress(raw, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(raw)
    else:
        data = raw
    return data, ImageSpec(
        url="image.img",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        compression=compression,
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def chunked(data: bytes, size: int = 64 << 10) -> Iterator[bytes]:
    """``data`` in network-sized pieces."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SlotStoreContract:
    """The behaviour every SlotStore must show. Not collected itself (no Test prefix)."""

    @pytest.fixture
    def rig(self) -> SlotRig:
        raise NotImplementedError("a subclass provides the rig")

    # ----------------------------------------------------------------- finding

    def test_describe_present_slots(self, rig: SlotRig) -> None:
        for slot in (Slot.A, Slot.B):
            info = rig.store.describe(slot)
            assert info.slot is slot
            assert info.exists
            assert info.spec
            assert info.device
            assert info.size == rig.capacity
            assert rig.store.capacity(slot) == rig.capacity

    def test_missing_slot_is_described_not_raised(self, rig: SlotRig) -> None:
        info = rig.missing.describe(Slot.B)
        assert not info.exists
        assert info.size is None
        assert rig.missing.capacity(Slot.B) is None
        assert rig.missing.read_version(Slot.B) is None
        assert rig.missing.describe(Slot.A).exists

    def test_read_version_of_the_present_slot(self, rig: SlotRig) -> None:
        assert rig.store.read_version(Slot.A) == "1.0.0"

    def test_write_to_a_missing_slot_is_refused(self, rig: SlotRig) -> None:
        data, spec = served(rig.image(Slot.B, "2.0.0"), "none")
        with pytest.raises(SlotError, match="not found"):
            rig.missing.write_image(Slot.B, chunked(data), spec)

    # ----------------------------------------------------------------- writing

    @pytest.mark.parametrize("compression", COMPRESSIONS)
    def test_write_then_read_back(self, rig: SlotRig, compression: str) -> None:
        raw = rig.image(Slot.B, "2.0.0")
        data, spec = served(raw, compression)
        result = rig.store.write_image(Slot.B, chunked(data), spec)
        assert result.written == len(raw)
        assert result.raw_sha256 == sha(raw)
        assert result.served_sha256 == sha(data)
        assert rig.raw(Slot.B, len(raw)) == raw
        assert rig.store.read_version(Slot.B) == "2.0.0"

    def test_write_leaves_the_other_slot_alone(self, rig: SlotRig) -> None:
        before = rig.raw(Slot.A, 1 << 20)
        data, spec = served(rig.image(Slot.B, "2.0.0"), "gzip")
        rig.store.write_image(Slot.B, chunked(data), spec)
        assert rig.raw(Slot.A, 1 << 20) == before
        assert rig.store.read_version(Slot.A) == "1.0.0"

    def test_rewrite_replaces_the_version(self, rig: SlotRig) -> None:
        for version in ("2.0.0", "2.1.0"):
            data, spec = served(rig.image(Slot.B, version), "zstd")
            rig.store.write_image(Slot.B, chunked(data), spec)
        assert rig.store.read_version(Slot.B) == "2.1.0"

    def test_progress_counts_raw_bytes(self, rig: SlotRig) -> None:
        raw = rig.image(Slot.B, "2.0.0")
        data, spec = served(raw, "gzip")
        seen: list[tuple[int, int | None]] = []
        rig.store.write_image(Slot.B, chunked(data), spec, lambda d, t: seen.append((d, t)))
        assert seen
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert seen[-1] == (len(raw), len(raw))

    def test_garbage_image_reads_as_no_version(self, rig: SlotRig) -> None:
        raw = bytes(range(256)) * 256
        data, spec = served(raw, "none")
        rig.store.write_image(Slot.B, chunked(data), spec)
        assert rig.store.read_version(Slot.B) is None

    # ----------------------------------------------------------------- refusals

    def test_too_small_slot_is_refused(self, rig: SlotRig) -> None:
        raw = b"\x5a" * (rig.capacity + 4096)
        data, spec = served(raw, "gzip")
        with pytest.raises(SlotError):
            rig.store.write_image(Slot.B, chunked(data), spec)

    def test_too_small_slot_is_left_untouched(self, rig: SlotRig) -> None:
        before = rig.raw(Slot.B, 1 << 20)
        raw = b"\x5a" * (rig.capacity + 4096)
        data, spec = served(raw, "none")
        with pytest.raises(SlotError):
            rig.store.write_image(Slot.B, chunked(data), spec)
        assert rig.raw(Slot.B, 1 << 20) == before

    @pytest.mark.parametrize("compression", COMPRESSIONS)
    def test_wrong_raw_sha256_is_a_verify_error(self, rig: SlotRig, compression: str) -> None:
        data, spec = served(rig.image(Slot.B, "2.0.0"), compression)
        lying = ImageSpec(
            url=spec.url,
            sha256=spec.sha256,
            size=spec.size,
            compression=spec.compression,
            raw_size=spec.raw_size,
            raw_sha256=sha(b"something else"),
        )
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(data), lying)

    def test_bit_flip_in_the_served_stream_is_caught(self, rig: SlotRig) -> None:
        raw = rig.image(Slot.B, "2.0.0")
        data, spec = served(raw, "none")
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(bytes(flipped)), spec)

    def test_bit_flip_in_a_gzip_stream_is_caught(self, rig: SlotRig) -> None:
        data, spec = served(rig.image(Slot.B, "2.0.0"), "gzip")
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(bytes(flipped)), spec)

    @pytest.mark.parametrize("compression", ["gzip", "zstd"])
    def test_truncated_compressed_stream_is_an_error(self, rig: SlotRig, compression: str) -> None:
        data, spec = served(rig.image(Slot.B, "2.0.0"), compression)
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(data[: len(data) * 2 // 3]), spec)

    @pytest.mark.parametrize("compression", ["gzip", "zstd"])
    def test_garbage_compressed_stream_is_an_error(self, rig: SlotRig, compression: str) -> None:
        raw = rig.image(Slot.B, "2.0.0")
        _, spec = served(raw, compression)
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(b"not compressed at all" * 500), spec)

    def test_stream_shorter_than_raw_size_is_an_error(self, rig: SlotRig) -> None:
        raw = rig.image(Slot.B, "2.0.0")
        data, spec = served(raw[:-4096], "zstd")
        longer = ImageSpec(
            url=spec.url,
            sha256=spec.sha256,
            size=spec.size,
            compression="zstd",
            raw_size=len(raw),
            raw_sha256=sha(raw),
        )
        with pytest.raises(VerifyError):
            rig.store.write_image(Slot.B, chunked(data), longer)

    def test_fetch_errors_pass_through(self, rig: SlotRig) -> None:
        data, spec = served(rig.image(Slot.B, "2.0.0"), "gzip")

        def broken() -> Iterator[bytes]:
            yield data[:1000]
            raise FetchError("http://server/image.img: connection reset (test)")

        with pytest.raises(FetchError, match="connection reset"):
            rig.store.write_image(Slot.B, broken(), spec)
