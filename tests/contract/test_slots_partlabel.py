"""Slots named by GPT partition name (PARTLABEL=), the default, on a real partitioned loop disk.

A filesystem label lives inside the image, so once the same release image was
written to both slots two filesystems carry one label; a GPT partition name
lives in the partition table and stays with its slot. This test builds a GPT
disk image with partitions KSOLOA/KSOLOB-like names (unique per run), attaches
it to a loop device and asks the kernel for its partitions with ``partx -a``
(this machine has no udev and ``losetup -P`` does not scan), then shows that
PARTLABEL= specs find each slot while LABEL= refuses the ambiguous label.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_core.errors import SlotError
from kubesolo_core.slots import Slot
from tests.contract.loopdev import ImageFactory, attached, unique_label
from tests.contract.slots_suite import chunked, served
from tests.tools import require_root, require_tool

pytestmark = pytest.mark.root

MIB = 1 << 20
PART = 8 * MIB


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[tuple[dict[Slot, str], str, ImageFactory]]:
    require_root()
    require_tool("losetup", "partx", "sfdisk", "blkid", "mkfs.ext4", "debugfs")
    names = {Slot.A: unique_label("KPA"), Slot.B: unique_label("KPB")}
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(2 * MIB + 2 * PART + MIB)
    table = "label: gpt\nfirst-lba: 2048\n" + "".join(
        f"size={PART // 512}, name={names[s]}\n" for s in (Slot.A, Slot.B)
    )
    subprocess.run(
        ["sfdisk", "-q", str(image)],
        input=table,
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )
    factory = ImageFactory(tmp_path)
    # One release image, written to both slots: both filesystems say the same label.
    same = unique_label("KFS")
    release = factory.image(label=same, version="1.0.0", size=PART)
    with image.open("r+b") as fh:
        for index in (0, 1):
            fh.seek(MIB + index * PART)
            fh.write(release)
    with attached(image) as dev:
        subprocess.run(["partx", "-a", dev], check=True, capture_output=True, timeout=30)
        try:
            yield {s: f"PARTLABEL={n}" for s, n in names.items()}, same, factory
        finally:
            subprocess.run(["partx", "-d", dev], check=False, capture_output=True, timeout=30)


def test_partlabel_finds_each_slot_when_filesystem_labels_collide(
    disk: tuple[dict[Slot, str], str, ImageFactory],
) -> None:
    specs, same_label, _ = disk
    store = BlockSlotStore(specs)
    a, b = store.describe(Slot.A), store.describe(Slot.B)
    assert a.exists and b.exists and a.device != b.device
    assert a.size == b.size == PART
    assert store.read_version(Slot.A) == store.read_version(Slot.B) == "1.0.0"
    # The filesystem label is now on both slots: LABEL= must refuse to guess.
    by_label = BlockSlotStore({Slot.A: f"LABEL={same_label}", Slot.B: specs[Slot.B]})
    info = by_label.describe(Slot.A)
    assert not info.exists and "refusing to guess" in (info.problem or "")
    with pytest.raises(SlotError):
        by_label.write_image(Slot.A, iter([b"x"]), served(b"x" * 1024, "none")[1])


def test_write_through_partlabel_touches_only_that_partition(
    disk: tuple[dict[Slot, str], str, ImageFactory],
) -> None:
    specs, same_label, factory = disk
    store = BlockSlotStore(specs)
    before_a = hashlib.sha256(Path(store.describe(Slot.A).device or "").read_bytes()).hexdigest()
    raw = factory.image(label=same_label, version="1.1.0", size=4 * MIB)
    payload, image = served(raw, "gzip")
    store.write_image(Slot.B, chunked(payload), image)
    assert store.read_version(Slot.B) == "1.1.0"
    assert store.read_version(Slot.A) == "1.0.0"
    after_a = hashlib.sha256(Path(store.describe(Slot.A).device or "").read_bytes()).hexdigest()
    assert after_a == before_a


def test_unknown_partition_name_is_a_clear_problem() -> None:
    require_tool("blkid")
    store = BlockSlotStore({Slot.A: f"PARTLABEL={unique_label('NOPE')}", Slot.B: "/nonexistent"})
    info = store.describe(Slot.A)
    assert not info.exists and "no GPT partition named" in (info.problem or "")
    assert store.capacity(Slot.A) is None
