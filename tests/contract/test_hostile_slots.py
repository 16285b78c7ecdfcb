"""The hostile-input catalogue, part 4: slot paths (issue 8, bug 1 and its class).

The passive slot must be proven not to be the running system by identity,
never by the spelling of its path. Each case points ``--slot-b`` (slot A is
booted and committed) at another name for slot A's bytes, at something that
is not a slot, or at something in use, and runs ``apply`` through the real
CLI: exit 2 (bad configuration) or the refusal of a missing slot, one line
naming the path and what it resolves to, nothing written, state unchanged.

Cases that need root (loop devices, mounts) say so through tests/tools.py.
The root filesystem's own device is checked in test_slot_identity.py with
``check_writable`` only: no test here ever aims a write at the machine's disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesolo_core.slots import Slot
from tests.contract.loopdev import attached, mounted
from tests.hostile import Case, HostileBox, case, fifo, run_case
from tests.tools import require_root, require_tool

USAGE, REFUSED = 2, 3
SLOTS = "slot paths"


def _slot_b(value: str):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        box.flags["slot_b"] = value.format(root=box.root, a=box.slot(Slot.A))
        return []

    return prepare


def _link(kind: str):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        other = box.root / "alias" / "b.img"
        other.parent.mkdir()
        if kind == "symlink":
            other.symlink_to(box.slot(Slot.A))
        elif kind == "hardlink":
            other.hardlink_to(box.slot(Slot.A))
        elif kind == "dirlink":
            (box.root / "alias" / "d").symlink_to(box.slot(Slot.A).parent)
            other = box.root / "alias" / "d" / box.slot(Slot.A).name
        elif kind == "dangling":
            other.symlink_to(box.root / "nowhere.img")
        box.flags["slot_b"] = str(other)
        return []

    return prepare


def _fifo_slot(box: HostileBox) -> list[Path]:
    box.flags["slot_b"] = str(fifo(box.root / "b.fifo"))
    return []


def _relative(box: HostileBox) -> list[Path]:
    # The same file spelled relative to the agent's working directory (the box root).
    box.flags["slot_b"] = os.path.relpath(box.slot(Slot.A), box.root)
    return []


SLOT_CASES: list[Case] = [
    case(SLOTS, "symlink-to-slot-a", "apply", USAGE, ("--slot-b", "alias/b.img", "one slot"),
         prepare=_link("symlink"), state_intact=True),
    case(SLOTS, "hard-link-to-slot-a", "apply", USAGE, ("alias/b.img", "inode", "one slot"),
         prepare=_link("hardlink"), state_intact=True),
    case(SLOTS, "through-a-directory-link", "apply", USAGE, ("alias/d/", "one slot"),
         prepare=_link("dirlink"), state_intact=True),
    case(SLOTS, "dot-slash-spelling", "apply", USAGE, ("/./", "one slot"),
         prepare=_slot_b("{root}/./slot-A.img"), state_intact=True),
    case(SLOTS, "dot-dot-spelling", "apply", USAGE, ("/../", "one slot"),
         prepare=_slot_b("{root}/data/../slot-A.img"), state_intact=True),
    case(SLOTS, "relative-spelling", "apply", USAGE, ("slot-A.img", "one slot"),
         prepare=_relative, state_intact=True),
    case(SLOTS, "same-text-as-slot-a", "apply", USAGE, ("slot_a and slot_b",),
         prepare=_slot_b("{a}"), state_intact=True),
    case(SLOTS, "a-directory", "apply", REFUSED, ("passive slot not found", "directory"),
         prepare=_slot_b("{root}"), state_intact=True),
    case(SLOTS, "the-filesystem-root", "apply", REFUSED, ("slot B (/)", "directory"),
         prepare=_slot_b("/"), state_intact=True),
    case(SLOTS, "a-fifo", "apply", REFUSED, ("b.fifo", "FIFO"), prepare=_fifo_slot,
         state_intact=True, timeout=20),
    case(SLOTS, "a-dangling-link", "apply", REFUSED, ("alias/b.img", "No such file"),
         prepare=_link("dangling"), state_intact=True),
    case(SLOTS, "a-character-device", "apply", REFUSED, ("/dev/null", "character device"),
         prepare=_slot_b("/dev/null"), state_intact=True),
    case(SLOTS, "no-partition-of-that-name", "apply", REFUSED, ("KSOLONOSUCH",),
         prepare=_slot_b("PARTLABEL=KSOLONOSUCH"), state_intact=True),
]  # fmt: skip


@pytest.mark.parametrize("spec", SLOT_CASES, ids=lambda c: c.id)
def test_slot_paths(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


# --------------------------------------------------------------------------- needing root


@contextlib.contextmanager
def _bind(source: Path, view: Path) -> Iterator[Path]:
    view.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(view)], check=True, timeout=30)
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False, timeout=30)


def test_slot_b_through_a_bind_mount(hostile: HostileBox) -> None:
    require_root()
    view = hostile.root.parent / f"{hostile.root.name}-bind"
    with _bind(hostile.slot(Slot.A).parent, view) as v:
        other = str(v / hostile.slot(Slot.A).name)
        spec = case(SLOTS, "bind-mount-view-of-slot-a", "apply", USAGE, ("-bind/", "one slot"),
                    prepare=_slot_b(other), state_intact=True)  # fmt: skip
        run_case(hostile, spec)


def test_slot_b_is_a_loop_device_over_slot_a(hostile: HostileBox) -> None:
    require_root()
    require_tool("losetup")
    with attached(hostile.slot(Slot.A)) as dev:
        spec = case(SLOTS, "loop-device-over-slot-a", "apply", USAGE, (dev, "overlap"),
                    prepare=_slot_b(dev), state_intact=True)  # fmt: skip
        run_case(hostile, spec)


def test_slot_b_is_a_mounted_device(hostile: HostileBox, tmp_path: Path) -> None:
    require_root()
    require_tool("losetup", "mkfs.ext4", "mount")
    image = tmp_path / "mounted.img"
    with image.open("wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    with attached(image) as dev, mounted(dev, tmp_path / "mnt", "ro"):
        before = image.read_bytes()
        spec = case(SLOTS, "a-mounted-device", "apply", USAGE, (dev, "mounted"),
                    prepare=_slot_b(dev), state_intact=True)  # fmt: skip
        run_case(hostile, spec)
        assert image.read_bytes() == before
