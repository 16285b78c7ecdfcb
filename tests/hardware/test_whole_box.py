"""The whole box: the agent runs inside a real Linux booted by the shipped GRUB and updates itself.

Each scenario boots a disk image again and again under QEMU (UEFI, TCG,
``-no-reboot``): GRUB (deploy/grub.cfg) picks a slot, Debian's kernel boots
it, the slot's init mounts the data partition and the ESP and runs the real
boot helper (deploy/kubesolo-update-boot) and the real agent; a reboot ends
QEMU and the test starts the next boot. After every boot the host reads the
disk: the grubenv GRUB will see next, state.json on the data partition, the
slots' versions. See tests/hardware/wholebox/ for how the box is built and
what in it is a stand-in (Kubernetes and containerd only).

Scenarios 1 and 5 share one box: the second update (back into A) starts
where the first (into B) ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesolo_core.slots import Slot
from tests.hardware.wholebox.driver import Boot, WholeBox
from tests.hardware.wholebox.rootfs import SlotVariant
from tests.tools import require_tool

OLD, NEW, NEWER = "1.0.0", "1.1.0", "1.2.0"
COMMITTED_A = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
TRIAL_B = {"active_slot": "B", "boot_counter": "3", "boot_success": "0"}
#: more boots than any scenario needs: a loop that waits for GRUB never runs away
MAX_BOOTS = 6


@pytest.fixture(scope="module")
def wholebox_tools(hardware_tools: None) -> None:
    require_tool(
        "apt-get", "apt-cache", "dpkg-deb", "cpio", "mkfs.ext4", "debugfs", "e2fsck",
        "mkfs.vfat", "mcopy", "strip", "chroot",
    )  # fmt: skip


def _box(tmp: Path, name: str, **kwargs: Any) -> WholeBox:
    return WholeBox.build(tmp, name, slot_a=SlotVariant(version=OLD), **kwargs)


def _ran(boot: Boot, slot: Slot, version: str) -> None:
    """GRUB chose ``slot`` and the kernel and init of that slot's release ran."""
    assert boot.grub_slot is slot, f"GRUB chose {boot.grub_slot}\n{boot.tail()}"
    assert (boot.guest_slot, boot.version) == (slot.value, version), boot.tail()
    assert not boot.result.timed_out, boot.tail()


def _rc(boot: Boot, step: str) -> int | None:
    """The exit code of the last run of ``step`` in this boot, None if it never ended."""
    found = boot.step(step)
    return None if found is None else found.rc


def _state(boot: Boot) -> dict[str, Any]:
    assert boot.state is not None, "no state.json on the data partition"
    return boot.state


def _update(box: WholeBox, *, check: bool = False) -> Boot:
    """One boot on the committed slot that applies and activates the offered release."""
    booted = box.boots[-1].grub_slot if box.boots else Slot.A
    boot = box.boot(("check," if check else "") + "apply,activate-reboot")
    assert booted is not None
    _ran(boot, booted, boot.version or "?")
    assert _rc(boot, "boot-helper") == 0, boot.tail()
    assert _rc(boot, "apply") == 0, boot.tail()
    assert boot.end == "reboot", f"activate --reboot did not reboot\n{boot.tail()}"
    target = booted.other()
    assert boot.env == {"active_slot": target.value, "boot_counter": "3", "boot_success": "0"}
    state = _state(boot)
    assert (state["phase"], state["target_slot"]) == ("activated", target.value)
    return boot


# --------------------------------------------------------------------------- 1 and 5


@pytest.fixture(scope="module")
def updated_box(
    wholebox_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WholeBox]:
    """A box that went A (1.0.0) -> B (1.1.0): the update, the trial boot, one stable boot."""
    box = _box(tmp_path_factory.mktemp("healthy"), "1+5 healthy update A->B, then B->A")
    box.publish(SlotVariant(version=NEW))
    first = box.boot("measure,check,apply,activate-reboot")
    assert first.end == "reboot", first.tail()
    box.boot()
    box.boot("status")
    yield box
    box.cleanup()


def test_healthy_update_commits(updated_box: WholeBox) -> None:
    box = updated_box
    update, trial, stable = box.boots[:3]
    _ran(update, Slot.A, OLD)
    for step in ("python-start", "agent-version", "agent-status", "check", "apply"):
        assert _rc(update, step) == 0, f"{step}\n{update.tail()}"
    assert update.env == TRIAL_B
    assert _state(update)["phase"] == "activated"
    # GRUB's first trial boot of B: counted down, and the agent in B commits.
    _ran(trial, Slot.B, NEW)
    assert (trial.result.markers[-1].counter, trial.result.markers[-1].saved) == ("2", True)
    assert _rc(trial, "boot-helper") == 0, trial.tail()
    assert trial.env == {"active_slot": "B", "boot_counter": "2", "boot_success": "1"}
    state = _state(trial)
    assert (state["phase"], state["from_version"], state["to_version"]) == ("success", OLD, NEW)
    assert state["last_error"] is None
    # The next boot is B, committed: GRUB writes nothing, the agent changes nothing.
    _ran(stable, Slot.B, NEW)
    assert stable.result.markers[-1].saved is False
    assert stable.env == trial.env
    assert stable.state == trial.state
    assert stable.status is not None, stable.tail()
    assert stable.status["booted_slot"] == "B" and stable.status["next_boot"] == "B"
    seen = {row["slot"]: row["version"] for row in stable.status["slots"]}
    assert seen == {"A": OLD, "B": NEW}
    # The host's own look at the disk agrees.
    assert (box.slot_version(Slot.A), box.slot_version(Slot.B)) == (OLD, NEW)
    assert [line.split()[1] for line in box.boots_log()] == ["slot=A", "slot=B", "slot=B"]


def test_second_update_goes_back_to_a(updated_box: WholeBox) -> None:
    box = updated_box
    assert box.boots[-1].grub_slot is Slot.B, "scenario 1 did not leave the box on B"
    box.publish(SlotVariant(version=NEWER))
    update = _update(box, check=True)
    _ran(update, Slot.B, NEW)
    assert update.env == {"active_slot": "A", "boot_counter": "3", "boot_success": "0"}
    assert (_state(update)["from_version"], _state(update)["to_version"]) == (NEW, NEWER)
    trial = box.boot()
    _ran(trial, Slot.A, NEWER)
    assert trial.env == {"active_slot": "A", "boot_counter": "2", "boot_success": "1"}
    assert _state(trial)["phase"] == "success"
    assert (box.slot_version(Slot.A), box.slot_version(Slot.B)) == (NEWER, NEW)


# --------------------------------------------------------------------------- 2


def test_unhealthy_release_is_rolled_back_by_grub(wholebox_tools: None, tmp_path: Path) -> None:
    box = _box(tmp_path, "2 unhealthy release: GRUB's trial boots run out")
    box.publish(SlotVariant(version=NEW, health="node-not-ready"))
    _update(box)
    trials = []
    for _ in range(MAX_BOOTS):
        boot = box.boot()
        if boot.grub_slot is not Slot.B:
            break
        trials.append(boot)
        _ran(boot, Slot.B, NEW)
        # The helper's healthcheck fails (4) and it reboots: that is how GRUB counts down.
        assert "KSOLO-STEP name=boot-helper" not in boot.result.serial, boot.tail()
        assert boot.end == "reboot", boot.tail()
        assert _state(boot)["phase"] == "activated"
        assert _state(boot)["health_check_failures"] == len(trials)
    assert [b.result.markers[-1].counter for b in trials] == ["2", "1", "0"]
    # GRUB's rollback boot: slot A, committed, written by GRUB itself.
    _ran(boot, Slot.A, OLD)
    marker = boot.result.markers[-1]
    assert (marker.saved, marker.counter, marker.success) == (True, "3", "1")
    assert boot.env == COMMITTED_A
    state = _state(boot)
    assert state["phase"] == "rolled_back"
    assert "rolled back" in state["last_error"] and NEW in state["last_error"], state
    assert boot.end == "poweroff"
    assert box.slot_version(Slot.A) == OLD
    box.cleanup()


# --------------------------------------------------------------------------- 3


def test_auto_rollback_after_two_failed_health_checks(wholebox_tools: None, tmp_path: Path) -> None:
    box = _box(
        tmp_path,
        "3 auto-rollback after 2 failed health checks",
        settings={"KUBESOLO_UPDATE_AUTO_ROLLBACK_AFTER": "2"},
    )
    box.publish(SlotVariant(version=NEW, health="containerd-down"))
    _update(box)
    first = box.boot()
    _ran(first, Slot.B, NEW)
    assert (_state(first)["phase"], _state(first)["health_check_failures"]) == ("activated", 1)
    assert first.end == "reboot"
    second = box.boot()
    _ran(second, Slot.B, NEW)
    state = _state(second)
    assert (state["phase"], state["health_check_failures"]) == ("rolled_back", 2)
    assert "auto-rollback to slot A after 2 failed health checks" in state["last_error"]
    assert "containerd" in state["last_error"]
    # The agent switched back itself, before GRUB's trial boots ran out.
    assert second.env == COMMITTED_A
    assert second.end == "reboot"
    back = box.boot()
    _ran(back, Slot.A, OLD)
    assert back.result.markers[-1].saved is False  # GRUB had nothing left to do
    assert _state(back)["phase"] == "rolled_back"
    assert back.env == COMMITTED_A
    box.cleanup()


# --------------------------------------------------------------------------- 4


def test_power_cuts_mid_apply_then_mid_activate(wholebox_tools: None, tmp_path: Path) -> None:
    box = _box(tmp_path, "4 power cut mid-apply, then mid-activate; retries complete")
    box.publish(SlotVariant(version=NEW))
    cut = box.boot("cut-apply", cut=True)
    _ran(cut, Slot.A, OLD)
    assert cut.power_cut and "KSOLO-CUT-NOW apply" in cut.result.serial, cut.tail()
    assert cut.env == COMMITTED_A
    assert _state(cut)["phase"] == "downloading"
    # The committed slot boots; the retried apply completes; the cut comes in activate.
    cut2 = box.boot("apply,cut-activate", cut=True)
    _ran(cut2, Slot.A, OLD)
    assert _rc(cut2, "apply") == 0, cut2.tail()
    assert cut2.power_cut and "KSOLO-CUT-NOW activate" in cut2.result.serial, cut2.tail()
    # The state was saved (activated), the env write never happened.
    assert _state(cut2)["phase"] == "activated"
    assert cut2.env == COMMITTED_A
    # The committed slot boots again; the agent sees the trial never started and retries.
    retry = _update(box)
    _ran(retry, Slot.A, OLD)
    assert "bootloader rolled back to slot A" in retry.result.serial, retry.tail()
    done = box.boot()
    _ran(done, Slot.B, NEW)
    assert _state(done)["phase"] == "success"
    assert done.env == {"active_slot": "B", "boot_counter": "2", "boot_success": "1"}
    assert box.slot_version(Slot.B) == NEW
    box.cleanup()


# --------------------------------------------------------------------------- 6


def test_kernel_panic_in_b_is_rolled_back_by_grub_alone(
    wholebox_tools: None, tmp_path: Path
) -> None:
    box = _box(tmp_path, "6 B's init exits: kernel panic, GRUB rolls back alone")
    box.publish(SlotVariant(version=NEW, broken_init=True))
    update = _update(box)
    activated = _state(update)
    panics = []
    for _ in range(MAX_BOOTS):
        boot = box.boot()
        if boot.grub_slot is not Slot.B:
            break
        panics.append(boot)
        assert boot.panicked and "KSOLO-BROKEN" in boot.result.serial, boot.tail()
        assert boot.guest_slot is None  # no init of ours ran, so neither did the agent
        assert boot.state == activated  # nothing in B touched the state
    assert [b.result.markers[-1].counter for b in panics] == ["2", "1", "0"]
    _ran(boot, Slot.A, OLD)
    assert boot.result.markers[-1].saved is True
    assert boot.env == COMMITTED_A
    state = _state(boot)
    assert state["phase"] == "rolled_back" and NEW in state["last_error"]
    box.cleanup()
