"""The SlotStore contract against BlockSlotStore on real loop devices, found by LABEL= via blkid.

Each test attaches two 8 MiB image files holding real ext4 filesystems
(made by mkfs, labelled with labels unique to this run) to loop devices and
detaches them afterwards. Needs root, losetup, blkid, mkfs.ext4, debugfs,
mkfs.vfat and mtools.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kubesolo_adapters import fsversion
from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_adapters.slotfind import blkid_resolver, sysfs_resolver
from kubesolo_core.errors import SlotError
from kubesolo_core.slots import Slot
from tests.contract.loopdev import (
    ImageFactory,
    attached,
    make_fs_image,
    mounted,
    read_bytes,
    unique_label,
)
from tests.contract.slots_suite import SlotRig, SlotStoreContract, chunked, served
from tests.tools import require_root, require_tool

pytestmark = pytest.mark.root

CAPACITY = 8 << 20
# Unique per run: blkid sees every block device on the machine, other tests' too.
LABELS = {Slot.A: unique_label("KTA"), Slot.B: unique_label("KTB")}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    return ImageFactory(tmp_path_factory.mktemp("images"))


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[dict[Slot, str]]:
    require_root()
    require_tool("losetup", "blkid", "mkfs.ext4", "debugfs", "mkfs.vfat", "mtype", "mcopy")
    files = {
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
    with attached(files[Slot.A]) as dev_a, attached(files[Slot.B]) as dev_b:
        yield {Slot.A: dev_a, Slot.B: dev_b}


def label_store(**store: Any) -> BlockSlotStore:
    return BlockSlotStore({slot: f"LABEL={label}" for slot, label in LABELS.items()}, **store)


class TestLoopDeviceSlotStore(SlotStoreContract):
    store: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def rig(self, loops: dict[Slot, str], images: ImageFactory) -> SlotRig:
        return SlotRig(
            store=label_store(**self.store),
            capacity=CAPACITY,
            image=lambda slot, version: images.image(label=LABELS[slot], version=version),
            missing=BlockSlotStore(
                {Slot.A: f"LABEL={LABELS[Slot.A]}", Slot.B: f"LABEL={unique_label('KTX')}"}
            ),
            raw=lambda slot, n: read_bytes(loops[slot], n),
        )


class TestLoopDeviceSlotStoreSmallPieces(TestLoopDeviceSlotStore):
    """16 KiB buffers: O_DIRECT writes and the read-back in 1 MiB stretches while streaming."""

    store: ClassVar[dict[str, Any]] = {"chunk_size": 16 << 10}


# --------------------------------------------------------------------------- device-only behaviour


def test_labels_resolve_to_the_loop_devices(loops: dict[Slot, str]) -> None:
    store = label_store()
    for slot in (Slot.A, Slot.B):
        assert store.describe(slot).device == loops[slot]
        assert blkid_resolver(LABELS[slot]) == [loops[slot]]
        # the superblock scan finds the same device without blkid
        assert sysfs_resolver(LABELS[slot]) == [loops[slot]]


def test_sysfs_resolver_drives_a_store(loops: dict[Slot, str]) -> None:
    store = BlockSlotStore(
        {slot: f"LABEL={label}" for slot, label in LABELS.items()}, resolver=sysfs_resolver
    )
    assert store.describe(Slot.B).device == loops[Slot.B]
    assert store.capacity(Slot.B) == CAPACITY
    assert store.read_version(Slot.A) == "1.0.0"


def test_a_device_path_spec_works(loops: dict[Slot, str], images: ImageFactory) -> None:
    store = BlockSlotStore(dict(loops))
    data, spec = served(images.image(label=LABELS[Slot.B], version="2.0.0"), "gzip")
    store.write_image(Slot.B, chunked(data), spec)
    assert store.read_version(Slot.B) == "2.0.0"
    assert store.capacity(Slot.B) == CAPACITY


def test_a_mounted_slot_is_refused_and_untouched(
    loops: dict[Slot, str], images: ImageFactory, tmp_path: Path
) -> None:
    store = label_store()
    data, spec = served(images.image(label=LABELS[Slot.B], version="2.0.0"), "none")
    with mounted(loops[Slot.B], tmp_path / "mnt"):
        before = hashlib.sha256(read_bytes(loops[Slot.B], CAPACITY)).hexdigest()
        with pytest.raises(SlotError, match="mounted/in use"):
            store.write_image(Slot.B, chunked(data), spec)
        after = hashlib.sha256(read_bytes(loops[Slot.B], CAPACITY)).hexdigest()
        assert after == before
        # debugfs reads a mounted ext4 without a second mount
        assert store.read_version(Slot.B) == "0.9.0"


def test_vfat_slot_image_on_a_device(loops: dict[Slot, str], images: ImageFactory) -> None:
    store = label_store()
    data, spec = served(images.image(label=LABELS[Slot.B], version="4.0.0", fs="vfat"), "zstd")
    store.write_image(Slot.B, chunked(data), spec)
    assert store.describe(Slot.B).device == loops[Slot.B]  # blkid finds the FAT label too
    assert store.read_version(Slot.B) == "4.0.0"


def test_a_duplicate_label_is_refused(
    loops: dict[Slot, str], images: ImageFactory, tmp_path: Path
) -> None:
    twin = make_fs_image(
        tmp_path / "twin.img",
        fs="ext4",
        size=CAPACITY,
        label=LABELS[Slot.B],
        files={"version": b"6.6.6\n"},
    )
    data, spec = served(images.image(label=LABELS[Slot.B], version="2.0.0"), "none")
    with attached(twin) as twin_dev:
        store = label_store()
        info = store.describe(Slot.B)
        assert not info.exists
        with pytest.raises(SlotError, match="refusing to guess"):
            store.write_image(Slot.B, chunked(data), spec)
        assert read_bytes(twin_dev, 4096) == twin.read_bytes()[:4096]


def test_version_by_mount_when_the_tools_are_missing(
    loops: dict[Slot, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without debugfs and mtools on PATH the store mounts read-only (root) and unmounts.

    (The direct ext reader is switched off: it would answer first.)
    """
    monkeypatch.setattr(fsversion, "read_root_file", lambda *_: None)
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("mount", "umount", "blkid"):
        for where in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            if Path(where, name).exists():
                (tools / name).symlink_to(Path(where, name))
                break
    monkeypatch.setenv("PATH", str(tools))
    store = label_store()
    assert store.read_version(Slot.A) == "1.0.0"
    with Path("/proc/self/mounts").open() as fh:
        assert loops[Slot.A] not in fh.read()


def test_no_loop_device_left_behind(tmp_path: Path) -> None:
    """The fixtures detach what they attach, even when the test body fails."""
    require_root()
    require_tool("losetup")
    image = make_fs_image(tmp_path / "x.img", fs="ext4", size=CAPACITY, label=unique_label())
    seen: list[str] = []
    with contextlib.suppress(RuntimeError), attached(image) as dev:
        seen.append(dev)
        raise RuntimeError("test body fails")
    assert seen
    backing = Path(f"/sys/block/{Path(seen[0]).name}/loop/backing_file")
    assert not backing.exists() or str(image) not in backing.read_text()
