"""The passive slot is proven not to be the running system by identity, never by spelling.

Issue 8, bug 1: with ``slot_b`` set to another name for slot A's file (a
symlink, ``./``), ``apply`` wrote slot A. Here every other name a careless
operator can give (symlink, ``./``, ``..``, hard link, bind mount, a loop
device over the file, the whole disk holding both slots, a mounted device,
the root device) is refused by ``check_writable`` *and* by the guard in
front of the first byte (``write_image`` alone), and slot A stays
byte-identical. Distinct slots (two files, two partitions of one disk) pass.

Never does a test here call ``write_image`` on anything it did not make: the
root-device case asks only ``check_writable``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesolo_adapters import slotguard
from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_core.errors import SlotConflict, SlotError
from kubesolo_core.slots import Slot
from tests.contract.loopdev import attached, mounted, unique_label
from tests.contract.slots_suite import chunked, served
from tests.tools import require_root, require_tool

MIB = 1 << 20


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def slot_a(tmp_path: Path) -> Path:
    path = tmp_path / "slots" / "a.img"
    path.parent.mkdir()
    path.write_bytes(os.urandom(2 * MIB))
    return path


def assert_refused(store: BlockSlotStore, guarded: Path, *names: str) -> None:
    """Both doors refuse slot B, naming every ``names``; ``guarded`` keeps its bytes."""
    before = digest(guarded)
    with pytest.raises(SlotConflict) as first:
        store.check_writable(Slot.B)
    message = str(first.value)
    for name in names:
        assert name in message, message
    assert "\n" not in message
    payload, image = served(os.urandom(MIB), "none")
    with pytest.raises(SlotConflict):
        store.write_image(Slot.B, chunked(payload), image)
    assert digest(guarded) == before


# --------------------------------------------------------------------------- files


def test_distinct_files_pass(slot_a: Path, tmp_path: Path) -> None:
    b = tmp_path / "b.img"
    b.write_bytes(bytes(2 * MIB))
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(b)})
    store.check_writable(Slot.B)
    payload, image = served(os.urandom(MIB), "none")
    store.write_image(Slot.B, chunked(payload), image)
    assert Path(b).read_bytes()[:MIB] == payload


def test_symlink_to_slot_a(slot_a: Path, tmp_path: Path) -> None:
    link = tmp_path / "b-link.img"
    link.symlink_to(slot_a)
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(link)})
    assert_refused(store, slot_a, str(link), str(slot_a), "one slot")


def test_dot_slash_spelling(slot_a: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(slot_a.parent)
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: "./a.img"})
    assert_refused(store, slot_a, "'./a.img'", str(slot_a))


def test_dot_dot_spelling(slot_a: Path) -> None:
    other = f"{slot_a.parent}/../{slot_a.parent.name}/./a.img"
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: other})
    assert_refused(store, slot_a, other)


def test_hard_link(slot_a: Path, tmp_path: Path) -> None:
    hard = tmp_path / "b-hard.img"
    hard.hardlink_to(slot_a)
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(hard)})
    assert_refused(store, slot_a, str(hard), "inode")


def test_symlink_chain_through_a_directory_link(slot_a: Path, tmp_path: Path) -> None:
    (tmp_path / "dirlink").symlink_to(slot_a.parent)
    (tmp_path / "b.img").symlink_to(tmp_path / "dirlink" / "a.img")
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(tmp_path / "b.img")})
    assert_refused(store, slot_a, str(tmp_path / "b.img"))


def test_slot_a_is_the_link_and_slot_b_the_file(slot_a: Path, tmp_path: Path) -> None:
    # Writing slot A (booted B) where A's spec is a link to B's file.
    link = tmp_path / "a-link.img"
    link.symlink_to(slot_a)
    store = BlockSlotStore({Slot.A: str(link), Slot.B: str(slot_a)})
    with pytest.raises(SlotConflict, match="slot A"):
        store.check_writable(Slot.A)


def test_fifo_as_slot_is_refused_without_hanging(slot_a: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "b.fifo"
    os.mkfifo(fifo)
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(fifo)})
    info = store.describe(Slot.B)
    assert not info.exists and "is a FIFO" in (info.problem or "")
    payload, image = served(b"x" * 4096, "none")
    with pytest.raises(SlotError, match="FIFO"):
        store.write_image(Slot.B, chunked(payload), image)


def test_directory_and_dangling_link_say_why(slot_a: Path, tmp_path: Path) -> None:
    dangling = tmp_path / "gone.img"
    dangling.symlink_to(tmp_path / "nowhere.img")
    store = BlockSlotStore({Slot.A: "/", Slot.B: str(dangling)})
    assert "is a directory" in (store.describe(Slot.A).problem or "")
    assert "No such file" in (store.describe(Slot.B).problem or "")


def test_the_open_door_checks_the_descriptor_not_the_name(slot_a: Path, tmp_path: Path) -> None:
    # The guard on the open descriptor sees slot A even when the name looked harmless.
    link = tmp_path / "b.img"
    link.symlink_to(slot_a)
    with pytest.raises(SlotConflict):
        slotguard.open_slot_for_write(
            str(link), target_name="slot B", survivors=[("slot A", str(slot_a))], exclusive=False
        )


# --------------------------------------------------------------------------- mounts (pure)


def test_mountinfo_parsing_and_escapes() -> None:
    text = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "40 27 7:3 / /mnt/with\\040blank rw - ext4 /dev/loop3 rw\n"
        "garbage line\n"
        "41 27 x:y / /odd rw - ext4 /dev/odd rw\n"
    )
    mounts = slotguard.parse_mountinfo(text)
    assert [(os.major(m.dev), os.minor(m.dev), m.mountpoint) for m in mounts] == [
        (254, 0, "/"),
        (7, 3, "/mnt/with blank"),
    ]


def test_the_device_mounted_at_root_is_refused_by_identity() -> None:
    # Only check_writable here: never a write near the machine's root device.
    root_dev = Path("/").stat().st_dev
    node = next(
        (
            str(p)
            for p in sorted(Path("/dev").iterdir())
            if p.is_block_device() and p.stat().st_rdev == root_dev
        ),
        None,
    )
    if node is None:
        pytest.skip("the root filesystem has no block device node here (overlay or tmpfs root)")
    target = slotguard.identify(node)
    assert target is not None
    reason = slotguard.write_refusal(target, "slot B", [])
    assert reason is not None and "root filesystem" in reason and node in reason


# --------------------------------------------------------------------------- block devices


@pytest.fixture
def loop_a(slot_a: Path) -> Iterator[str]:
    require_root()
    require_tool("losetup")
    with attached(slot_a) as dev:
        yield dev


@pytest.mark.root
def test_loop_device_over_slot_a_file(slot_a: Path, loop_a: str) -> None:
    # slot A is the file, slot B the loop device reading and writing the same bytes.
    store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: loop_a})
    assert_refused(store, slot_a, loop_a, str(slot_a), "overlap")


@pytest.mark.root
def test_file_behind_the_loop_device_of_slot_a(slot_a: Path, loop_a: str) -> None:
    store = BlockSlotStore({Slot.A: loop_a, Slot.B: str(slot_a)})
    assert_refused(store, slot_a, loop_a, str(slot_a))


@pytest.mark.root
def test_bind_mounted_directory(slot_a: Path, tmp_path: Path) -> None:
    require_root()
    view = tmp_path / "bind"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(slot_a.parent), str(view)], check=True, timeout=30)
    try:
        store = BlockSlotStore({Slot.A: str(slot_a), Slot.B: str(view / "a.img")})
        assert_refused(store, slot_a, str(view / "a.img"))
    finally:
        subprocess.run(["umount", str(view)], check=False, timeout=30)


@pytest.mark.root
def test_a_mounted_device_is_refused(tmp_path: Path) -> None:
    require_root()
    require_tool("losetup", "mkfs.ext4", "mount")
    image = tmp_path / "b.img"
    with image.open("wb") as fh:
        fh.truncate(8 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    a = tmp_path / "a.img"
    a.write_bytes(bytes(8 * MIB))
    with attached(image) as dev, mounted(dev, tmp_path / "mnt", "ro"):
        store = BlockSlotStore({Slot.A: str(a), Slot.B: dev})
        with pytest.raises(SlotConflict, match="mounted") as info:
            store.check_writable(Slot.B)
        assert str(tmp_path / "mnt") in str(info.value)
        before = digest(image)
        payload, spec = served(os.urandom(MIB), "none")
        with pytest.raises((SlotConflict, SlotError)):
            store.write_image(Slot.B, chunked(payload), spec)
        assert digest(image) == before


@pytest.fixture
def gpt_disk(tmp_path: Path) -> Iterator[tuple[str, dict[Slot, str]]]:
    """A GPT loop disk with two slot partitions (the kernel knows them via partx)."""
    require_root()
    require_tool("losetup", "partx", "sfdisk")
    names = {Slot.A: unique_label("KIA"), Slot.B: unique_label("KIB")}
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(2 * MIB + 2 * 4 * MIB + MIB)
    table = "label: gpt\nfirst-lba: 2048\n" + "".join(
        f"size={4 * MIB // 512}, name={names[s]}\n" for s in (Slot.A, Slot.B)
    )
    subprocess.run(["sfdisk", "-q", str(image)], input=table, text=True, check=True, timeout=30)
    with attached(image) as dev:
        subprocess.run(["partx", "-a", dev], check=True, capture_output=True, timeout=30)
        try:
            yield dev, {Slot.A: f"{dev}p1", Slot.B: f"{dev}p2"}
        finally:
            subprocess.run(["partx", "-d", dev], check=False, capture_output=True, timeout=30)


@pytest.mark.root
def test_partitions_of_one_disk_are_told_apart(gpt_disk: tuple[str, dict[Slot, str]]) -> None:
    _, parts = gpt_disk
    store = BlockSlotStore(parts)
    store.check_writable(Slot.B)
    store.check_writable(Slot.A)
    before = digest(parts[Slot.A])
    payload, image = served(os.urandom(MIB), "none")
    store.write_image(Slot.B, chunked(payload), image)
    assert digest(parts[Slot.A]) == before


@pytest.mark.root
def test_the_whole_disk_holding_both_slots(gpt_disk: tuple[str, dict[Slot, str]]) -> None:
    disk, parts = gpt_disk
    store = BlockSlotStore({Slot.A: parts[Slot.A], Slot.B: disk})
    before = digest(parts[Slot.A])
    with pytest.raises(SlotConflict, match="overlap") as info:
        store.check_writable(Slot.B)
    assert disk in str(info.value) and parts[Slot.A] in str(info.value)
    payload, image = served(os.urandom(MIB), "none")
    with pytest.raises((SlotConflict, SlotError)):
        store.write_image(Slot.B, chunked(payload), image)
    assert digest(parts[Slot.A]) == before


@pytest.mark.root
def test_a_partition_of_the_disk_that_is_slot_a(gpt_disk: tuple[str, dict[Slot, str]]) -> None:
    disk, parts = gpt_disk
    store = BlockSlotStore({Slot.A: disk, Slot.B: parts[Slot.B]})
    with pytest.raises(SlotConflict, match="overlap"):
        store.check_writable(Slot.B)
