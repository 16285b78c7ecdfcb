"""The real agent drives updates on a real disk image; real GRUB does every reboot.

See tests/hardware/box.py for what is real here (everything but Kubernetes:
Kube and HealthProbes are the in-memory adapters, healthy or not per
scenario). Each scenario starts from a box committed on slot A (1.0.0) and a
loopback server offering 1.1.0 for slot B.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesolo_adapters.sandbox import publish
from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from tests.hardware.box import Box, kill, make_agent, release_server, start_child
from tests.hardware.diskimage import make_slot_filesystem
from tests.tools import require_root, require_tool

NEW = "1.1.0"


@pytest.fixture
def box(hardware_tools: None, tmp_path: Path) -> Iterator[Box]:
    require_root()
    require_tool("losetup", "debugfs")
    www = tmp_path / "www"
    www.mkdir()
    # One release image for either slot: its filesystem label is slot A's even
    # though it lands on B. GRUB finds slots by partition and the agent by GPT
    # partition name, so the duplicate label must not matter.
    image = make_slot_filesystem(
        tmp_path / "kubesolo-os-1.1.0.img",
        label="KSOLOA",
        size_mib=8,
        files={"version": b"1.1.0\n"},
    )
    publish(www, NEW, image.read_bytes(), compression="none")
    with release_server(www) as server:
        host, port = server.server_address[:2]
        box = Box.build(tmp_path, f"http://{host!s}:{port}/release.json")
        box.server = server
        first = box.power_on()
        assert first.slot is Slot.A
        yield box


def _phase(box: Box) -> str:
    return str(json.loads(box.state.read_text())["phase"])


def _update_to_trial(box: Box, **options: object) -> None:
    """apply + activate on A, then the reboot into B's first trial boot."""
    with box.running() as paths:
        agent = make_agent(paths, **options)  # type: ignore[arg-type]
        assert agent.apply().state.phase is Phase.STAGED
        assert agent.activate().state.phase is Phase.ACTIVATED
    boot = box.power_on()
    assert (boot.slot, boot.markers[-1].counter) == (Slot.B, "2")


def test_healthy_update_commits(box: Box) -> None:
    _update_to_trial(box)
    with box.running() as paths:
        outcome = make_agent(paths).healthcheck()
        assert outcome.state.phase is Phase.SUCCESS
    assert box.env() == {"active_slot": "B", "boot_counter": "2", "boot_success": "1"}
    for _ in range(2):  # committed: stable boots of B that never write
        boot = box.power_on()
        assert boot.slot is Slot.B
        assert not boot.markers[-1].saved
    with box.running() as paths:
        status = make_agent(paths).status()
        assert status.state.phase is Phase.SUCCESS
        assert {s.info.slot: s.version for s in status.slots} == {Slot.A: "1.0.0", Slot.B: NEW}


def test_never_healthy_update_is_rolled_back_by_grub(box: Box) -> None:
    _update_to_trial(box, healthy=False)
    slots = []
    for _ in range(3):  # init reboots after each failed healthcheck
        with box.running() as paths:
            assert not make_agent(paths, healthy=False).healthcheck().healthy
        slots.append(box.power_on().slot)
    # Trial boots 2 and 3 on B, then GRUB's rollback boot on A.
    assert slots == [Slot.B, Slot.B, Slot.A]
    assert box.env() == {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
    with box.running() as paths:
        status = make_agent(paths).status()
    assert status.state.phase is Phase.ROLLED_BACK
    assert "rolled back" in (status.state.last_error or "")
    assert box.power_on().slot is Slot.A


def test_auto_rollback_after_two_failed_healthchecks(box: Box) -> None:
    _update_to_trial(box, healthy=False, auto_rollback_after=2)
    with box.running() as paths:
        assert not make_agent(paths, healthy=False, auto_rollback_after=2).healthcheck().healthy
    assert _phase(box) == Phase.ACTIVATED.value
    assert box.power_on().slot is Slot.B
    with box.running() as paths:
        assert not make_agent(paths, healthy=False, auto_rollback_after=2).healthcheck().healthy
    assert _phase(box) == Phase.ROLLED_BACK.value
    boot = box.power_on()
    assert boot.slot is Slot.A
    assert not boot.markers[-1].saved  # the agent committed A itself: GRUB has nothing to do


def test_manual_rollback_after_a_commit(box: Box) -> None:
    _update_to_trial(box)
    with box.running() as paths:
        make_agent(paths).healthcheck()
        assert make_agent(paths).rollback().phase is Phase.ROLLED_BACK
    assert box.power_on().slot is Slot.A
    assert box.env() == {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}


def test_power_cut_during_apply_still_boots_the_committed_slot(box: Box) -> None:
    server = box.server
    server.throttle = 0.01  # 8 MiB in 64 KiB pieces: about 1.3 s of writing
    server.half = 4 * 1024 * 1024
    with box.running() as paths:
        child = start_child(paths, "apply")
        try:
            assert server.half_sent.wait(timeout=60), "the download never got half way"
        finally:
            kill(child)
        assert child.returncode == -9, "the child finished before the cut"
    assert _phase(box) == Phase.DOWNLOADING.value
    for _ in range(2):
        assert box.power_on().slot is Slot.A
    # The next apply starts over and stages a verified image.
    server.throttle = 0.0
    with box.running() as paths:
        assert make_agent(paths).apply().state.phase is Phase.STAGED


def test_power_cut_during_activate_still_boots_the_committed_slot(box: Box) -> None:
    with box.running() as paths:
        assert make_agent(paths).apply().state.phase is Phase.STAGED
        child = start_child(paths, "activate", activate_delay=30.0)
        try:
            deadline = time.monotonic() + 30
            while _phase(box) != Phase.ACTIVATED.value and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            kill(child)
        assert child.returncode == -9
    # The state says activated, the env was never written: GRUB boots A, and
    # the agent reconciles (a new boot id on the old slot) to rolled_back.
    assert box.env() == {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
    assert box.power_on().slot is Slot.A
    with box.running() as paths:
        status = make_agent(paths).status()
    assert status.state.phase is Phase.ROLLED_BACK
