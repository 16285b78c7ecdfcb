"""The bootloader models: the GRUB table of DESIGN.md 2.1, tryboot, and shared properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesolo_core.bootmodel import (
    ACTIVE,
    COUNTER,
    SUCCESS,
    TRIAL_BOOTS,
    Bootloader,
    GrubModel,
    TrybootEnv,
    TrybootModel,
)
from kubesolo_core.slots import Slot

grub = GrubModel()
tryboot = TrybootModel()


# ------------------------------------------------------------------ the GRUB table


def test_committed_boot_never_writes() -> None:
    env = {ACTIVE: "B", COUNTER: "3", SUCCESS: "1", "other": "x"}
    out = grub.boot(env)
    assert (out.slot, out.wrote, out.env) == (Slot.B, False, env)


@pytest.mark.parametrize(("counter", "after"), [("3", "2"), ("2", "1"), ("1", "0")])
def test_trial_boot_counts_down(counter: str, after: str) -> None:
    out = grub.boot({ACTIVE: "B", COUNTER: counter, SUCCESS: "0"})
    assert out.slot is Slot.B
    assert out.wrote and out.trial and not out.rolled_back
    assert out.env == {ACTIVE: "B", COUNTER: after, SUCCESS: "0"}


def test_exhausted_trial_rolls_back_to_the_other_slot() -> None:
    out = grub.boot({ACTIVE: "B", COUNTER: "0", SUCCESS: "0"})
    assert out.slot is Slot.A and out.rolled_back
    assert out.env == {ACTIVE: "A", COUNTER: "3", SUCCESS: "1"}


def test_activate_gives_three_trial_boots_and_rolls_back_on_the_fourth() -> None:
    env: Any = grub.activate(grub.initial(Slot.A), Slot.B)
    slots = []
    for _ in range(5):
        out = grub.boot(env)
        slots.append(out.slot)
        env = out.env
    assert TRIAL_BOOTS == 3
    assert slots == [Slot.B, Slot.B, Slot.B, Slot.A, Slot.A]


@pytest.mark.parametrize(
    ("env", "slot", "wrote"),
    [
        ({}, Slot.A, False),  # missing file / empty env: committed A
        ({ACTIVE: "C", SUCCESS: "1"}, Slot.A, False),  # garbage slot reads as A
        ({ACTIVE: "b", SUCCESS: "1"}, Slot.A, False),  # only exactly "B" is B
        ({ACTIVE: "B", SUCCESS: "yes"}, Slot.B, False),  # garbage success = committed
        ({ACTIVE: "B", SUCCESS: ""}, Slot.B, False),
        ({ACTIVE: "B", SUCCESS: "0", COUNTER: "7"}, Slot.A, True),  # garbage counter = 0
        ({ACTIVE: "B", SUCCESS: "0", COUNTER: "-1"}, Slot.A, True),
        ({ACTIVE: "B", SUCCESS: "0"}, Slot.A, True),  # missing counter in trial = 0
        ({ACTIVE: "X", SUCCESS: "0", COUNTER: "2"}, Slot.A, True),  # garbage slot in trial
    ],
)
def test_garbage_never_bricks(env: dict[str, str], slot: Slot, wrote: bool) -> None:
    out = grub.boot(env)
    assert (out.slot, out.wrote) == (slot, wrote)
    if wrote:  # whatever GRUB writes is normalised
        assert out.env[ACTIVE] in ("A", "B")
        assert out.env[COUNTER] in ("0", "1", "2", "3")
        assert out.env[SUCCESS] in ("0", "1")


def test_agent_writes() -> None:
    env = {"keep": "me"}
    assert grub.activate(env, Slot.B) == {"keep": "me", ACTIVE: "B", COUNTER: "3", SUCCESS: "0"}
    assert grub.mark_good({ACTIVE: "B", COUNTER: "1", SUCCESS: "0"}, Slot.B)[SUCCESS] == "1"
    back = grub.force_rollback({ACTIVE: "B", COUNTER: "1", SUCCESS: "0"}, Slot.A)
    assert back == {ACTIVE: "A", COUNTER: "3", SUCCESS: "1"}


def test_grub_view() -> None:
    view = grub.view({ACTIVE: "B", COUNTER: "2", SUCCESS: "0"})
    assert (view.committed_slot, view.trial_slot, view.boot_counter) == (Slot.A, Slot.B, 2)
    view = grub.view({ACTIVE: "B", COUNTER: "3", SUCCESS: "1"})
    assert (view.committed_slot, view.trial_slot, view.in_trial) == (Slot.B, None, False)


# ------------------------------------------------------------------ tryboot


def test_tryboot_one_trial_then_back() -> None:
    env = tryboot.activate(tryboot.initial(Slot.A), Slot.B)
    assert env == TrybootEnv(committed=2, trial=3, flag=True)
    first = tryboot.boot(env)
    assert first.slot is Slot.B and first.trial and not first.env.flag
    second = tryboot.boot(first.env)  # the trial crashed or was not committed
    assert second.slot is Slot.A and not second.trial


def test_a_crash_or_power_cut_loses_the_tryboot_flag() -> None:
    env = tryboot.activate(tryboot.initial(Slot.A), Slot.B)
    out = tryboot.boot(env, clean_shutdown=False)
    assert out.slot is Slot.A and not out.trial and not out.env.flag
    # GRUB keeps nothing outside its env: a crash boots what a clean reboot would.
    genv = grub.activate(grub.initial(Slot.A), Slot.B)
    assert grub.boot(genv, clean_shutdown=False) == grub.boot(genv)


def test_which_bootloader_needs_a_special_reboot_to_start_a_trial() -> None:
    assert Bootloader.GRUB.plain_reboot_starts_trial
    assert not Bootloader.TRYBOOT.plain_reboot_starts_trial
    assert (grub.kind, tryboot.kind) == (Bootloader.GRUB, Bootloader.TRYBOOT)


def test_reboot_required_when_the_running_slot_is_not_the_next_boot() -> None:
    trial = grub.view(grub.activate(grub.initial(Slot.A), Slot.B))
    assert trial.reboot_required(Slot.A)  # activated, not rebooted yet
    assert not trial.reboot_required(Slot.B)  # running the trial
    assert not trial.reboot_required(None)  # unknown: never claim
    committed = grub.view(grub.initial(Slot.A))
    assert committed.reboot_required(Slot.B) and not committed.reboot_required(Slot.A)


def test_tryboot_commit_swaps_partitions() -> None:
    env = tryboot.boot(tryboot.activate(tryboot.initial(Slot.A), Slot.B)).env
    env = tryboot.mark_good(env, Slot.B)
    assert (env.committed, env.trial) == (3, 2)
    assert tryboot.boot(env).slot is Slot.B


def test_tryboot_unknown_partition_reads_as_a() -> None:
    assert tryboot.boot(TrybootEnv(committed=7, trial=9)).slot is Slot.A


def test_tryboot_without_tryboot_a_b_ignores_the_flag() -> None:
    env = TrybootEnv(committed=2, trial=3, flag=True, tryboot_a_b=False)
    assert tryboot.boot(env).slot is Slot.A


# ------------------------------------------------------------------ properties of both

MODELS: list[Any] = [grub, tryboot]
ACTIONS = st.lists(
    st.sampled_from(["boot", "boot", "boot", "activate", "mark_good", "rollback"]), max_size=30
)


@pytest.mark.parametrize("model", MODELS, ids=["grub", "tryboot"])
@given(actions=ACTIONS, start=st.sampled_from([Slot.A, Slot.B]))
def test_unhealthy_trial_always_returns_to_the_committed_slot(
    model: Any, actions: list[str], start: Slot
) -> None:
    """Whatever the agent did before, a trial that is never marked good ends on the
    committed slot within TRIAL_BOOTS + 1 boots and stays there."""
    env = model.initial(start)
    booted = start
    for action in actions:
        if action == "boot":
            out = model.boot(env)
            env, booted = out.env, out.slot
        elif action == "activate":
            env = model.activate(env, booted.other())
        elif action == "mark_good":
            env = model.mark_good(env, booted)
        else:
            env = model.force_rollback(env, booted.other())
    committed = model.view(env).committed_slot
    slots = []
    for _ in range(TRIAL_BOOTS + 3):
        out = model.boot(env)
        env = out.env
        slots.append(out.slot)
    assert slots[-2:] == [committed, committed]
    assert model.view(env).committed_slot is committed
    assert not model.view(env).in_trial


@pytest.mark.parametrize("model", MODELS, ids=["grub", "tryboot"])
@given(start=st.sampled_from([Slot.A, Slot.B]), boots=st.integers(min_value=1, max_value=3))
def test_marked_good_trial_sticks(model: Any, start: Slot, boots: int) -> None:
    env = model.activate(model.initial(start), start.other())
    out = model.boot(env)
    assert out.slot is start.other()
    env = model.mark_good(out.env, out.slot)
    for _ in range(boots + 3):
        out = model.boot(env)
        env = out.env
        assert out.slot is start.other()


@pytest.mark.parametrize("model", MODELS, ids=["grub", "tryboot"])
@given(actions=ACTIONS)
def test_stable_boots_are_idempotent(model: Any, actions: list[str]) -> None:
    """Once no trial is pending, booting changes nothing (GRUB: no write at all)."""
    env = model.initial(Slot.A)
    for action in actions:
        env = model.boot(env).env if action == "boot" else model.activate(env, Slot.B)
    for _ in range(TRIAL_BOOTS + 1):
        env = model.boot(env).env
    settled = model.boot(env)
    assert settled.env == env
    if model is grub:
        assert not settled.wrote


@given(env=st.dictionaries(st.sampled_from([ACTIVE, COUNTER, SUCCESS, "x"]), st.text(max_size=4)))
def test_grub_any_env_boots_a_or_b_and_normalises(env: dict[str, str]) -> None:
    out = grub.boot(env)
    assert out.slot in (Slot.A, Slot.B)
    if out.wrote:
        assert out.env[ACTIVE] == out.slot.value
        assert out.env[COUNTER] in ("0", "1", "2", "3")
    assert out.env.get("x") == env.get("x")  # foreign variables survive
