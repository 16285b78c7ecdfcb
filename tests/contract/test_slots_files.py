"""The SlotStore contract against BlockSlotStore on plain image files (no root needed to write).

Each slot is an 8 MiB file holding a real ext4 filesystem made by mkfs; the
images written are real ext4 (or vfat) filesystems with a ``version`` file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import zstandard

from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_adapters.slotwriter import HEAD_BYTES
from kubesolo_core.errors import FetchError, VerifyError
from kubesolo_core.release import ImageSpec
from kubesolo_core.slots import Slot
from tests.contract.loopdev import ImageFactory, make_fs_image, read_bytes
from tests.contract.slots_suite import SlotRig, SlotStoreContract, chunked, served
from tests.tools import require_tool

CAPACITY = 8 << 20
LABELS = {Slot.A: "KFILEA", Slot.B: "KFILEB"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    return ImageFactory(tmp_path_factory.mktemp("images"))


@pytest.fixture
def slot_files(tmp_path: Path) -> dict[Slot, Path]:
    require_tool("mkfs.ext4", "debugfs", "mkfs.vfat", "mtype", "mcopy")
    return {
        Slot.A: make_fs_image(
            tmp_path / "A.img",
            fs="ext4",
            size=CAPACITY,
            label=LABELS[Slot.A],
            files={"version": b"1.0.0\n"},
        ),
        Slot.B: make_fs_image(
            tmp_path / "B.img",
            fs="ext4",
            size=CAPACITY,
            label=LABELS[Slot.B],
            files={"version": b"0.9.0\n"},
        ),
    }


def file_rig(
    slot_files: dict[Slot, Path], images: ImageFactory, tmp_path: Path, **store: Any
) -> SlotRig:
    specs = {slot: str(path) for slot, path in slot_files.items()}
    return SlotRig(
        store=BlockSlotStore(specs, **store),
        capacity=CAPACITY,
        image=lambda slot, version: images.image(label=LABELS[slot], version=version),
        missing=BlockSlotStore({**specs, Slot.B: str(tmp_path / "absent.img")}),
        raw=lambda slot, n: read_bytes(specs[slot], n),
    )


class TestImageFileSlotStore(SlotStoreContract):
    @pytest.fixture
    def rig(self, slot_files: dict[Slot, Path], images: ImageFactory, tmp_path: Path) -> SlotRig:
        return file_rig(slot_files, images, tmp_path, chunk_size=1 << 20)


class TestImageFileSlotStoreSmallPieces(SlotStoreContract):
    """16 KiB buffers: the read-back runs in 1 MiB stretches while the image still streams."""

    @pytest.fixture
    def rig(self, slot_files: dict[Slot, Path], images: ImageFactory, tmp_path: Path) -> SlotRig:
        return file_rig(slot_files, images, tmp_path, chunk_size=16 << 10)


class TestImageFileSlotStoreThroughThePageCache(SlotStoreContract):
    """O_DIRECT off (as where a file system refuses it): page cache, fsync, cache drop."""

    @pytest.fixture
    def rig(self, slot_files: dict[Slot, Path], images: ImageFactory, tmp_path: Path) -> SlotRig:
        return file_rig(slot_files, images, tmp_path, direct_io=False)


# --------------------------------------------------------------------------- file-only behaviour


def test_image_file_keeps_its_size(slot_files: dict[Slot, Path], images: ImageFactory) -> None:
    store = BlockSlotStore({s: str(p) for s, p in slot_files.items()})
    data, spec = served(images.image(label="KFILEB", version="2.0.0"), "gzip")
    store.write_image(Slot.B, chunked(data), spec)
    assert slot_files[Slot.B].stat().st_size == CAPACITY


def test_vfat_version_is_read_with_mtools(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> None:
    store = BlockSlotStore({s: str(p) for s, p in slot_files.items()})
    data, spec = served(images.image(label="KFILEB", version="3.1.4", fs="vfat"), "zstd")
    store.write_image(Slot.B, chunked(data), spec)
    assert store.read_version(Slot.B) == "3.1.4"


def test_more_than_raw_size_is_refused_and_not_written_past_it(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> None:
    store = BlockSlotStore({s: str(p) for s, p in slot_files.items()})
    raw = images.image(label="KFILEB", version="2.0.0")
    tail_before = read_bytes(str(slot_files[Slot.B]), 1 << 20, offset=len(raw))
    data, spec = served(raw + b"\x77" * 8192, "gzip")
    short = ImageSpec(
        url=spec.url,
        sha256=spec.sha256,
        size=spec.size,
        compression="gzip",
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )
    with pytest.raises(VerifyError, match="more than its raw_size"):
        store.write_image(Slot.B, chunked(data), short)
    assert read_bytes(str(slot_files[Slot.B]), 1 << 20, offset=len(raw)) == tail_before


def test_a_write_cut_short_keeps_the_old_head(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> None:
    """The superblock (and label) is written last: a cut stream leaves the old one readable."""
    store = BlockSlotStore({s: str(p) for s, p in slot_files.items()}, chunk_size=256 << 10)
    head_before = read_bytes(str(slot_files[Slot.B]), HEAD_BYTES)
    data, spec = served(images.image(label="KFILEB", version="2.0.0"), "none")

    def cut() -> Iterator[bytes]:
        yield from chunked(data[: len(data) * 3 // 4])
        raise FetchError("http://server/image.img: connection reset (test)")

    with pytest.raises(FetchError):
        store.write_image(Slot.B, cut(), spec)
    assert read_bytes(str(slot_files[Slot.B]), HEAD_BYTES) == head_before
    # the bytes after the head did change: the write really happened
    assert read_bytes(str(slot_files[Slot.B]), 1 << 20, offset=2 << 20) == data[2 << 20 : 3 << 20]


def slot_b_before(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> tuple[BlockSlotStore, bytes, bytes]:
    """The store over the slot files, slot B's head as it is, and a new image for slot B."""
    store = BlockSlotStore({s: str(p) for s, p in slot_files.items()})
    head_before = read_bytes(str(slot_files[Slot.B]), HEAD_BYTES)
    return store, head_before, images.image(label="KFILEB", version="2.0.0")


def test_an_image_that_does_not_verify_never_gets_its_head(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> None:
    """The head is written only after the rest read back right: a bad image keeps the old one."""
    store, head_before, raw = slot_b_before(slot_files, images)
    data, spec = served(raw, "zstd")
    lying = attrs.evolve(spec, raw_sha256=hashlib.sha256(b"another image").hexdigest())
    with pytest.raises(VerifyError, match=r"reads back .* with SHA-256"):
        store.write_image(Slot.B, chunked(data), lying)
    assert read_bytes(str(slot_files[Slot.B]), HEAD_BYTES) == head_before
    # the rest was written (and read back): only the head was held back
    assert read_bytes(str(slot_files[Slot.B]), 1 << 20, offset=2 << 20) == raw[2 << 20 : 3 << 20]


@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
def test_the_read_back_sees_the_medium_not_what_was_sent(
    slot_files: dict[Slot, Path], images: ImageFactory, direct_io: bool
) -> None:
    """A byte changed on the medium after the writer wrote it fails the read-back.

    The change is made through another descriptor once the stream has ended
    (so before the read-back starts: the image is smaller than one
    read-back stretch), after the writer's bytes are seen at that offset.
    """
    path = slot_files[Slot.B]
    store = BlockSlotStore(
        {Slot.A: str(slot_files[Slot.A]), Slot.B: str(path)}, direct_io=direct_io
    )
    head_before = read_bytes(str(path), HEAD_BYTES)
    data, spec = served(images.image(label="KFILEB", version="2.0.0"), "none")
    where = 2 << 20

    def then_tamper() -> Iterator[bytes]:
        yield from chunked(data)
        deadline = time.monotonic() + 30
        while read_bytes(str(path), 4096, offset=where) != data[where : where + 4096]:
            assert time.monotonic() < deadline, "the writer never wrote offset 2 MiB"
            time.sleep(0.01)
        with path.open("r+b") as fh:
            fh.seek(where)
            fh.write(bytes([data[where] ^ 0xFF]))

    with pytest.raises(VerifyError, match=r"reads back .* with SHA-256"):
        store.write_image(Slot.B, then_tamper(), spec)
    assert read_bytes(str(path), HEAD_BYTES) == head_before


def test_a_zstd_window_over_the_limit_is_refused_before_the_head(
    slot_files: dict[Slot, Path], images: ImageFactory
) -> None:
    """zstd --long/--ultra windows (up to 2 GiB) would blow the agent's memory: refused."""
    store, head_before, raw = slot_b_before(slot_files, images)
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=24, write_content_size=False
    )
    squeeze = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = squeeze.compress(raw) + squeeze.flush()
    _, spec = served(raw, "zstd")
    big = attrs.evolve(spec, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    with pytest.raises(VerifyError, match="window larger than 8 MiB") as caught:
        store.write_image(Slot.B, chunked(data), big)
    assert "level 19 or lower" in str(caught.value)
    assert read_bytes(str(slot_files[Slot.B]), HEAD_BYTES) == head_before


def test_directory_is_not_a_slot(tmp_path: Path) -> None:
    store = BlockSlotStore({Slot.A: str(tmp_path), Slot.B: str(tmp_path / "nope")})
    info = store.describe(Slot.A)
    assert not info.exists
    assert store.capacity(Slot.A) is None
