"""The BootEnv contract against TrybootBootEnv on real files, plus tryboot-specific checks.

The world's firmware follows the Raspberry Pi documentation: a reboot whose
argument carries `` tryboot`` (the kernel's ``strstr``) sets the one-shot
flag; with ``tryboot_a_b=1`` the flagged boot uses ``[tryboot]
boot_partition``, every other boot ``[all] boot_partition``; it then fills
/proc/device-tree/chosen/bootloader/{tryboot,partition} (big-endian u32).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import attrs
import pytest

from kubesolo_adapters.autoboot import AUTOBOOT_LIMIT, parse_autoboot, render_autoboot
from kubesolo_adapters.bootfacts import BootFacts
from kubesolo_adapters.sandbox import KernelFacts, TrybootFirmware
from kubesolo_adapters.tryboot import TRYBOOT_ARGUMENT, TrybootBootEnv, read_u32
from kubesolo_core.bootmodel import TrybootModel
from kubesolo_core.errors import BootEnvError, CorruptInput
from kubesolo_core.slots import Slot
from tests.contract.bootenv_suite import BootEnvContract, WorldFactory

DOCUMENTED = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
_worlds = itertools.count()


@attrs.define
class TrybootWorld:
    """autoboot.txt, a device tree, /proc/cmdline and boot_id in a temp folder."""

    root: Path
    partitions: dict[Slot, int] = attrs.field(factory=lambda: {Slot.A: 2, Slot.B: 3})
    kind: str = "tryboot"
    reboots: list[str] = attrs.field(factory=list)
    model: TrybootModel = attrs.field(init=False)
    env: TrybootBootEnv = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.model = TrybootModel(partitions=self.partitions)
        self.root.mkdir(parents=True)
        a, b = self.partitions[Slot.A], self.partitions[Slot.B]
        self.autoboot.write_text(DOCUMENTED.replace("=2", f"={a}").replace("=3", f"={b}"))
        self.set_dt(tryboot=0, partition=a)
        self.kernel.boot(Slot.A)
        self.env = self.reopen()

    @property
    def autoboot(self) -> Path:
        return self.root / "autoboot.txt"

    @property
    def firmware(self) -> TrybootFirmware:
        return TrybootFirmware(self.autoboot, self.root / "dt", self.model)

    @property
    def kernel(self) -> KernelFacts:
        return KernelFacts(
            self.root / "cmdline",
            self.root / "boot_id",
            before="console=serial0,115200",
            after="rootwait",
        )

    def set_dt(self, *, tryboot: int | None, partition: int | None) -> None:
        self.firmware.set_device_tree(tryboot=tryboot, partition=partition)

    def set_booted(self, slot: Slot | None) -> None:
        self.kernel.set_booted(slot)
        if slot is None:
            self.set_dt(tryboot=0, partition=None)

    def set_boot_id(self, boot_id: str | None) -> None:
        self.kernel.set_boot_id(boot_id)

    def forget_env(self) -> None:
        self.autoboot.unlink()

    def reopen(self) -> TrybootBootEnv:
        return TrybootBootEnv(
            self.autoboot,
            facts=BootFacts(self.root / "cmdline", self.root / "boot_id"),
            device_tree=self.root / "dt",
            partitions=self.partitions,
            reboot=self.reboots.append,
        )

    def reboot(self, *, clean: bool = True) -> Slot:
        if clean:
            self.env.request_reboot()
        flag = clean and bool(self.reboots) and " tryboot" in self.reboots[-1]
        slot = self.firmware.power_on(flag=flag)
        self.kernel.boot(slot)
        self.reboots.clear()
        return slot

    def reboot_requested(self) -> bool:
        return bool(self.reboots)

    def snapshot(self) -> object:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


class TestTrybootBootEnv(BootEnvContract):
    @pytest.fixture
    def make_world(self, tmp_path: Path) -> WorldFactory:
        return lambda: TrybootWorld(tmp_path / f"w{next(_worlds)}")


# --------------------------------------------------------------------------- tryboot only


@pytest.fixture
def world(tmp_path: Path) -> TrybootWorld:
    return TrybootWorld(tmp_path / "box")


def test_activate_writes_the_documented_file(world: TrybootWorld) -> None:
    world.forget_env()
    world.env.activate(Slot.B)
    assert world.autoboot.read_text() == DOCUMENTED


def test_mark_good_swaps_the_partitions(world: TrybootWorld) -> None:
    world.env.activate(Slot.B)
    assert world.reboot() is Slot.B
    world.reopen().mark_good(Slot.B)
    assert world.autoboot.read_text() == (
        "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    )


def test_request_reboot_passes_exactly_0_tryboot(world: TrybootWorld) -> None:
    world.env.request_reboot()
    assert world.reboots == [""], "no trial pending: a plain reboot"
    world.reboots.clear()
    world.env.activate(Slot.B)
    world.reopen().request_reboot()  # a later CLI run still knows
    assert world.reboots == [TRYBOOT_ARGUMENT]
    assert TRYBOOT_ARGUMENT == "0 tryboot"


def test_the_pending_trial_ends_with_the_boot(world: TrybootWorld) -> None:
    world.env.activate(Slot.B)
    assert world.env.read().trial_slot is Slot.B
    # A power cut instead of the tryboot reboot: the firmware flag never existed.
    assert world.reboot(clean=False) is Slot.A
    env = world.reopen()
    view = env.read()
    assert (view.committed_slot, view.trial_slot) == (Slot.A, None)
    assert view.booted_in_trial is False
    env.request_reboot()
    assert world.reboots == [""]


def test_without_a_boot_id_the_device_tree_decides(world: TrybootWorld) -> None:
    world.set_boot_id(None)
    world.env.activate(Slot.B)
    assert world.env.read().trial_slot is Slot.B
    # This boot is the tryboot of partition 3: the flag was used up.
    world.set_dt(tryboot=1, partition=3)
    view = world.env.read()
    assert view.trial_slot is None
    assert view.booted_in_trial is True


def test_trial_boot_is_seen_in_the_device_tree(world: TrybootWorld) -> None:
    world.env.activate(Slot.B)
    world.reboot()
    view = world.reopen().read()
    assert view.booted_in_trial is True
    assert view.raw["dt_tryboot"] == "1"
    assert view.raw["dt_partition"] == "3"


def test_booted_slot_falls_back_to_the_device_tree_partition(world: TrybootWorld) -> None:
    world.set_booted(None)
    world.set_dt(tryboot=0, partition=3)
    assert world.env.booted_slot() is Slot.B
    world.set_dt(tryboot=0, partition=7)
    assert world.env.booted_slot() is None
    world.set_booted(Slot.A)  # the command line wins over the device tree
    world.set_dt(tryboot=0, partition=3)
    assert world.env.booted_slot() is Slot.A


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00\x00\x02", 2),
        (b"\x00\x00\x01\x00", 256),
        (b"\x80\x00\x00\x01", 0x80000001),
        (b"\x02\x00\x00\x00", 0x02000000),
        (b"\x00\x00\x02", None),
        (b"", None),
        (b"\x00\x00\x00\x00\x00\x00\x00\x02", None),
    ],
)
def test_device_tree_u32_is_big_endian(tmp_path: Path, data: bytes, expected: int | None) -> None:
    path = tmp_path / "partition"
    path.write_bytes(data)
    assert read_u32(path) == expected
    assert read_u32(tmp_path / "absent") is None


def test_custom_partition_map(tmp_path: Path) -> None:
    world = TrybootWorld(tmp_path / "box", partitions={Slot.A: 5, Slot.B: 6})
    world.env.activate(Slot.B)
    assert parse_autoboot(world.autoboot.read_text()).trial == 6
    assert world.reboot() is Slot.B
    world.reopen().mark_good(Slot.B)
    settings = parse_autoboot(world.autoboot.read_text())
    assert (settings.committed, settings.trial) == (6, 5)


def test_a_bad_partition_map_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BootEnvError, match="partition map"):
        TrybootBootEnv(tmp_path / "a.txt", facts=BootFacts(), partitions={Slot.A: 2, Slot.B: 2})


# --------------------------------------------------------------------------- autoboot.txt


def test_unknown_lines_comments_sections_and_crlf_are_kept(world: TrybootWorld) -> None:
    text = (
        "# boot selector for KubeSolo OS\r\n"
        "[all]\r\n"
        "tryboot_a_b=1\r\n"
        "boot_partition=2\r\n"
        "some_future_option=7\r\n"
        "[none]\r\n"
        "boot_partition=9\r\n"
        "[tryboot]\r\n"
        "  boot_partition=3\r\n"
        "# end\r\n"
    )
    world.autoboot.write_bytes(text.encode())
    world.env.activate(Slot.B)
    assert world.autoboot.read_bytes() == text.encode(), "nothing to change for activate B"
    world.env.mark_good(Slot.B)
    assert world.autoboot.read_bytes() == (
        text.replace("boot_partition=2", "boot_partition=@")
        .replace("  boot_partition=3", "  boot_partition=2")
        .replace("boot_partition=@", "boot_partition=3")
        .encode()
    )


def test_missing_settings_are_added_where_they_take_effect() -> None:
    text = "# only a comment\nsome_option=1\n"
    new = render_autoboot(text, committed=3, trial=2, tryboot_a_b=True)
    assert new.startswith("# only a comment\nsome_option=1\n")
    settings = parse_autoboot(new)
    assert (settings.committed, settings.trial, settings.tryboot_a_b) == (3, 2, True)


def test_tryboot_a_b_is_switched_on_by_activate(world: TrybootWorld) -> None:
    world.autoboot.write_text("[all]\ntryboot_a_b=0\nboot_partition=2\n")
    assert world.env.read().trial_slot is None
    world.env.activate(Slot.B)
    assert world.autoboot.read_text() == (
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    )
    assert world.env.read().trial_slot is Slot.B


def test_a_layout_that_cannot_say_it_is_refused_untouched(world: TrybootWorld) -> None:
    # An [all] line after [tryboot] overrides the trial partition in a tryboot.
    text = "[tryboot]\nboot_partition=3\n[all]\ntryboot_a_b=1\nboot_partition=2\n"
    world.autoboot.write_text(text)
    with pytest.raises(CorruptInput, match=r"autoboot\.txt.*nothing was written"):
        world.env.activate(Slot.B)
    assert world.autoboot.read_text() == text


def test_the_512_byte_limit_is_refused_untouched(world: TrybootWorld) -> None:
    head = "# " + "x" * (AUTOBOOT_LIMIT - 30) + "\n"
    text = head + "[all]\nboot_partition=2\n"
    assert len(text) <= AUTOBOOT_LIMIT
    world.autoboot.write_text(text)
    with pytest.raises(BootEnvError, match="512"):
        world.env.activate(Slot.B)
    assert world.autoboot.read_text() == text
    assert not list(world.root.glob(".autoboot.txt.*")), "no temp file left behind"


def test_an_interrupted_write_leaves_the_old_file(
    world: TrybootWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.autoboot.read_bytes()

    def cut(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", cut)
    with pytest.raises(BootEnvError, match="old file is intact"):
        world.env.mark_good(Slot.B)
    assert world.autoboot.read_bytes() == before
    assert not list(world.root.glob(".autoboot.txt.*"))


def test_garbage_partition_numbers_read_as_slot_a(world: TrybootWorld) -> None:
    world.autoboot.write_text("[all]\ntryboot_a_b=1\nboot_partition=two\n")
    assert parse_autoboot(world.autoboot.read_text()).committed == 0
    assert world.env.read().committed_slot is Slot.A
