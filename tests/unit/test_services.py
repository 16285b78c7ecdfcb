"""The services over the in-memory adapters: the rules of DESIGN.md 2.2 and 2.3, by example."""

from __future__ import annotations

from typing import Any

import pytest

from kubesolo_adapters.fakes import MemoryBox
from kubesolo_core.errors import (
    ConfigError,
    FetchError,
    InvalidOperation,
    PreflightRefused,
    SlotConflict,
    VerifyError,
)
from kubesolo_core.lifecycle import Phase
from kubesolo_core.reconcile import Verdict
from kubesolo_core.results import HealthSettings
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version


@pytest.fixture(params=["grub", "tryboot"])
def box(request: pytest.FixtureRequest) -> MemoryBox[Any]:
    b = MemoryBox.create(request.param)
    b.publish("1.1.0")
    return b


def test_check_is_passive(box: MemoryBox[Any]) -> None:
    before = (box.store.text, box.power.writes)
    result = box.agent().check()
    assert result.update_available and str(result.available_version) == "1.1.0"
    assert str(result.current_version) == "1.0.0"
    assert (box.store.text, box.power.writes) == before


def test_apply_stages_a_verified_image_on_the_passive_slot(box: MemoryBox[Any]) -> None:
    result = box.agent().apply()
    assert result.state.phase is Phase.STAGED and result.state.target_slot is Slot.B
    assert box.slots.read_version(Slot.B) == "1.1.0"
    assert str(result.state.from_version) == "1.0.0" and result.state.attempt_count == 1
    # nothing switched yet
    assert box.boot_env.read().committed_slot is Slot.A and not box.boot_env.read().in_trial


def test_apply_again_is_a_no_op(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.apply()
    writes = box.power.writes
    assert not agent.apply().changed
    assert box.power.writes == writes


def test_apply_refuses_a_passive_slot_that_is_the_running_one_by_another_name(
    box: MemoryBox[Any],
) -> None:
    # Issue 8, bug 1: slot B's spec names slot A's bytes (a symlink, "./a.img").
    box.slots.alias_of_other = Slot.B
    running = box.slots.contents[Slot.A]
    env = box.boot_env.read()
    with pytest.raises(SlotConflict, match="one slot"):
        box.agent().apply()
    assert box.store.text is None  # state unchanged: nothing started
    assert box.slots.contents[Slot.A] == running and Slot.B not in box.slots.contents
    assert box.boot_env.read() == env
    # --force does not override a configuration that would overwrite the running system.
    with pytest.raises(SlotConflict):
        box.agent().apply(force=True)
    assert box.slots.contents[Slot.A] == running


def test_a_missing_passive_slot_is_refused_with_its_spec_and_reason(box: MemoryBox[Any]) -> None:
    box.slots.capacities[Slot.B] = None
    with pytest.raises(PreflightRefused, match=r"slot B \(memory:B\): slot B not found"):
        box.agent().apply()
    assert box.store.text is None


def test_preflight_refusal_does_not_touch_slot_or_state(box: MemoryBox[Any]) -> None:
    box.kube.block()
    with pytest.raises(PreflightRefused, match=r"updates\.kubesolo\.io/block"):
        box.agent().apply()
    assert box.store.text is None and Slot.B not in box.slots.contents
    assert box.agent().apply(force=True).state.phase is Phase.STAGED


def test_shrunk_slot_is_caught_before_any_byte_is_written(box: MemoryBox[Any]) -> None:
    box.slots.capacities[Slot.B] = 100
    with pytest.raises(PreflightRefused, match="passive slot holds 100 bytes"):
        box.agent().apply()
    assert Slot.B not in box.slots.contents


def test_downgrade_refused(box: MemoryBox[Any]) -> None:
    box.publish("0.9.0")
    with pytest.raises(PreflightRefused, match="older"):
        box.agent().apply()
    assert box.agent().apply(allow_downgrade=True).state.to_version == Version.parse("0.9.0")


@pytest.mark.parametrize("fault", ["fail", "truncate", "flip"])
def test_a_broken_download_fails_and_never_stages(box: MemoryBox[Any], fault: str) -> None:
    if fault == "fail":
        box.fetcher.images.clear()  # the document is served, the image is a 404
    elif fault == "truncate":
        box.fetcher.truncate_next = 1
    else:
        box.slots.flip_next_write = True
    with pytest.raises((FetchError, VerifyError)):
        box.agent().apply()
    state = box.store.load()
    assert state.phase is Phase.FAILED and state.last_error
    with pytest.raises(InvalidOperation, match="nothing staged"):
        box.agent().activate()


def test_full_cycle_commits(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.apply()
    state = agent.activate().state
    assert state.phase is Phase.ACTIVATED and state.activation_boot_id == "boot-0"
    status = agent.status()
    assert status.reconciliation.verdict is Verdict.PENDING_REBOOT
    assert box.reboot() is Slot.B
    outcome = agent.healthcheck()
    assert outcome.state.phase is Phase.SUCCESS and outcome.state.last_error is None
    assert box.boot_env.read().committed_slot is Slot.B
    assert box.reboot() is Slot.B


def test_healthcheck_off_lifecycle_does_not_churn_state(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    outcome = agent.healthcheck()
    assert outcome.healthy and box.store.text is None
    box.kube.ready = False
    assert not agent.healthcheck().healthy
    assert box.store.text is None and box.power.writes == 0


def test_pending_reboot_is_not_a_failure(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.apply()
    agent.activate()
    outcome = agent.healthcheck()  # same boot: the trial has not started
    assert outcome.reconciliation.verdict is Verdict.PENDING_REBOOT
    assert outcome.state.phase is Phase.ACTIVATED and outcome.state.health_check_failures == 0


def test_bootloader_rollback_is_recorded_with_a_reason(box: MemoryBox[Any]) -> None:
    box.publish("1.1.0", healthy=False)
    agent = box.agent()
    agent.apply()
    agent.activate()
    for _ in range(6):
        if box.reboot() is Slot.A:
            assert agent.healthcheck().healthy  # the old slot is healthy
            break
        assert not agent.healthcheck().healthy
    state = box.store.load()
    assert state.phase is Phase.ROLLED_BACK
    assert "bootloader rolled back to slot A" in (state.last_error or "")
    assert box.slots.read_version(box.boot_env.booted or Slot.B) == "1.0.0"


def test_unbootable_image_is_rolled_back_by_the_bootloader(box: MemoryBox[Any]) -> None:
    box.publish("1.1.0", bootable=False)
    agent = box.agent()
    agent.apply()
    agent.activate()
    assert box.reboot() is Slot.A  # B crashed on every trial boot
    agent.status()
    assert box.store.load().phase is Phase.ROLLED_BACK


def test_auto_rollback_after_n_failures(box: MemoryBox[Any]) -> None:
    box.publish("1.1.0", healthy=False)
    agent = box.agent(HealthSettings(auto_rollback_after=2, kube_system_settle=0, settle_timeout=0))
    agent.apply()
    agent.activate()
    box.reboot()
    first = agent.healthcheck()
    assert not first.healthy and first.state.health_check_failures == 1
    second = agent.healthcheck()
    assert not second.healthy
    state = second.state
    assert state.phase is Phase.ROLLED_BACK and "auto-rollback" in (state.last_error or "")
    assert box.boot_env.read().committed_slot is Slot.A
    assert box.reboot() is Slot.A


def test_a_clean_pass_resets_the_failure_count(box: MemoryBox[Any]) -> None:
    agent = box.agent(HealthSettings(auto_rollback_after=3, kube_system_settle=0, settle_timeout=0))
    agent.apply()
    agent.activate()
    box.reboot()
    box.probes.disk_ok = False
    assert not agent.healthcheck().healthy
    box.probes.disk_ok = True
    outcome = agent.healthcheck()
    assert outcome.state.phase is Phase.SUCCESS and outcome.state.health_check_failures == 0


def test_healthcheck_waits_for_kube_system_to_settle(box: MemoryBox[Any]) -> None:
    agent = box.agent(HealthSettings(kube_system_settle=30, settle_timeout=120, poll_interval=5))
    agent.apply()
    agent.activate()
    box.reboot()  # pods start "now": 30 s must pass before they count as settled
    outcome = agent.healthcheck()
    assert outcome.state.phase is Phase.SUCCESS
    assert 30 <= box.clock.monotonic() <= 40


def test_manual_rollback(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    with pytest.raises(InvalidOperation, match="nothing to roll back"):
        agent.rollback()
    agent.apply()
    agent.activate()
    box.reboot()
    agent.healthcheck()
    state = agent.rollback()
    assert state.phase is Phase.ROLLED_BACK and "manual rollback to slot A" in state.last_error
    assert box.reboot() is Slot.A


def test_apply_refused_while_a_trial_is_in_flight(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.apply()
    agent.activate()
    box.publish("1.2.0")
    with pytest.raises(InvalidOperation, match="activated"):
        agent.apply()


def test_status_reports_slots_and_boot_env(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.apply()
    status = agent.status()
    a, b = status.slots
    assert (a.version, a.booted, a.committed) == ("1.0.0", True, True)
    assert (b.version, b.booted, b.committed) == ("1.1.0", False, False)
    assert status.state.phase is Phase.STAGED and status.booted_slot is Slot.A


def test_no_server_configured(box: MemoryBox[Any]) -> None:
    agent = box.agent()
    agent.server = None
    with pytest.raises(ConfigError, match="--server"):
        agent.check()
    with pytest.raises(ConfigError, match="--server"):
        agent.apply()


# ---------------------------------------------------------------- issue 8, bug 2: never stuck


class _Boom(Exception):
    """Not one of ours: a bug, a library's own exception (httpx.InvalidURL), anything."""


def _explode(*_: object, **__: object) -> Any:
    raise _Boom("something nobody planned for")


def _cut_stream(*_: object, **__: object) -> Any:
    def chunks() -> Any:
        yield b"\0" * 10
        raise KeyboardInterrupt  # Ctrl-C mid-download

    return chunks()


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("fetcher.open_image", _Boom),
        ("slots.write_image", _Boom),
        ("fetcher.stream", KeyboardInterrupt),
        ("store.save_staged", OSError),
    ],
)
def test_any_exception_during_apply_leaves_failed_never_working(
    box: MemoryBox[Any], monkeypatch: pytest.MonkeyPatch, where: str, error: type[BaseException]
) -> None:
    """Whatever escapes between the first save and the end of apply, state.json says failed."""
    # the adapters are slotted attrs classes: patch the class, undone after the test
    if where == "fetcher.open_image":
        monkeypatch.setattr(type(box.fetcher), "open_image", _explode)
    elif where == "slots.write_image":
        monkeypatch.setattr(type(box.slots), "write_image", _explode)
    elif where == "fetcher.stream":
        monkeypatch.setattr(type(box.fetcher), "open_image", _cut_stream)
    else:
        save = type(box.store).save

        def save_but_not_staged(self: Any, state: Any) -> None:
            if state.phase is Phase.STAGED:
                raise OSError(28, "No space left on device")
            save(self, state)

        monkeypatch.setattr(type(box.store), "save", save_but_not_staged)
    with pytest.raises(error):
        box.agent().apply()
    state = box.store.load()
    assert state.phase is Phase.FAILED, state
    assert state.last_error and str(state.to_version) == "1.1.0"
    # and the box can try again
    monkeypatch.undo()
    assert box.agent().apply().state.phase is Phase.STAGED


def test_the_settle_wait_says_what_it_waits_for(box: MemoryBox[Any]) -> None:
    """One 'health.waiting' event per round: the failing checks and the seconds left (issue 8)."""
    agent = box.agent(HealthSettings(kube_system_settle=30, settle_timeout=120, poll_interval=5))
    agent.apply()
    agent.activate()
    box.reboot()
    seen: list[dict[str, Any]] = []
    agent.events = lambda event, **fields: seen.append({"event": event, **fields})
    agent.healthcheck()
    rounds = [e for e in seen if e["event"] == "health.waiting"]
    assert 5 <= len(rounds) <= 8  # 30 s of settling at 5 s a round
    assert all(r["failing"] == ["kube_system"] for r in rounds)
    assert "kube_system" in rounds[0]["reasons"]
    lefts = [r["seconds_left"] for r in rounds]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] <= 120 and lefts[-1] >= 80
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
