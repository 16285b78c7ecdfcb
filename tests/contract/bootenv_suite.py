"""The BootEnv port's contract: one suite for the memory fakes and the real adapters.

A subclass overrides the ``make_world`` fixture with a factory of
:class:`BootWorld`: the adapter under test plus the box around it, i.e. the
kernel facts it reads (booted slot, boot id) and a firmware that reboots the
box by playing the bootloader on whatever the adapter persisted. Every world
starts committed on slot A, running slot A.

The suite holds only what every kind of bootloader promises; what differs
between GRUB (three trial boots) and tryboot (one) is phrased so that both
must pass it ("a failing trial ends on the committed slot within four boots").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubesolo_core.bootmodel import TRIAL_BOOTS, BootModel
from kubesolo_core.ports import BootEnv
from kubesolo_core.slots import Slot


class BootWorld(Protocol):
    """An adapter under test on a simulated box."""

    @property
    def env(self) -> BootEnv:
        """The adapter under test."""

    @property
    def kind(self) -> str:
        """``grub`` or ``tryboot``."""

    @property
    def model(self) -> BootModel[Any]:
        """The pure model the adapter must agree with."""

    def set_booted(self, slot: Slot | None) -> None:
        """What the kernel command line says (None: no kubesolo.slot= and no other hint)."""

    def set_boot_id(self, boot_id: str | None) -> None:
        """This boot's id (None: unreadable)."""

    def forget_env(self) -> None:
        """The env is missing (no grubenv / no autoboot.txt)."""

    def reopen(self) -> BootEnv:
        """A new adapter over the same persisted env (what the next CLI run sees)."""

    def reboot(self, *, clean: bool = True) -> Slot:
        """Reboot the box; ``clean``: through ``request_reboot``, else a crash or power cut.

        The world's firmware plays the bootloader on the persisted env, then
        sets the booted slot and a new boot id. Returns the slot booted.
        """

    def reboot_requested(self) -> bool:
        """True once ``request_reboot`` reached the world's reboot hook."""

    def snapshot(self) -> object:
        """Everything the adapter persisted, comparable with ``==``."""


WorldFactory = Callable[[], BootWorld]


def _trial_and_committed(env: BootEnv) -> tuple[Slot, Slot | None]:
    view = env.read()
    return view.committed_slot, view.trial_slot


class BootEnvContract:
    """Every BootEnv adapter must pass these."""

    @pytest.fixture
    def make_world(self) -> WorldFactory:
        raise NotImplementedError("a subclass provides the world factory")

    @pytest.fixture
    def world(self, make_world: WorldFactory) -> BootWorld:
        return make_world()

    # ------------------------------------------------------------------ reading

    def test_kind(self, world: BootWorld) -> None:
        assert world.env.kind == world.kind
        assert world.env.read().kind == world.kind

    def test_fresh_env_is_committed_on_a(self, world: BootWorld) -> None:
        view = world.env.read()
        assert view.committed_slot is Slot.A
        assert view.trial_slot is None
        assert not view.in_trial
        assert view.next_boot is Slot.A

    def test_missing_env_reads_as_committed_a(self, world: BootWorld) -> None:
        world.forget_env()
        view = world.env.read()
        assert (view.committed_slot, view.trial_slot) == (Slot.A, None)

    def test_read_never_writes(self, world: BootWorld) -> None:
        world.forget_env()
        before = world.snapshot()
        world.env.read()
        world.env.read()
        assert world.snapshot() == before
        world.env.activate(Slot.B)
        before = world.snapshot()
        world.env.read()
        assert world.snapshot() == before

    # ------------------------------------------------------------------ writes

    @pytest.mark.parametrize("target", [Slot.A, Slot.B])
    def test_activate_shows_the_trial(self, world: BootWorld, target: Slot) -> None:
        old = target.other()
        world.env.force_rollback(old)
        world.env.activate(target)
        view = world.env.read()
        assert view.committed_slot is old
        assert view.trial_slot is target
        assert view.in_trial
        assert view.next_boot is target

    def test_activate_from_a_missing_env(self, world: BootWorld) -> None:
        world.forget_env()
        world.env.activate(Slot.B)
        assert _trial_and_committed(world.env) == (Slot.A, Slot.B)
        assert _trial_and_committed(world.reopen()) == (Slot.A, Slot.B)

    def test_activate_twice_is_activate_once(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        once = world.env.read()
        world.env.activate(Slot.B)
        twice = world.env.read()
        assert (twice.committed_slot, twice.trial_slot) == (once.committed_slot, once.trial_slot)

    def test_mark_good_commits_the_trial(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        world.env.mark_good(Slot.B)
        assert _trial_and_committed(world.env) == (Slot.B, None)
        assert _trial_and_committed(world.reopen()) == (Slot.B, None)

    def test_force_rollback_cancels_the_trial(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        world.env.force_rollback(Slot.A)
        assert _trial_and_committed(world.env) == (Slot.A, None)
        assert _trial_and_committed(world.reopen()) == (Slot.A, None)

    def test_force_rollback_switches_the_committed_slot(self, world: BootWorld) -> None:
        world.env.force_rollback(Slot.B)
        assert _trial_and_committed(world.env) == (Slot.B, None)
        world.env.force_rollback(Slot.A)
        assert _trial_and_committed(world.env) == (Slot.A, None)

    def test_writes_persist_across_instances(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        mine = world.env.read()
        theirs = world.reopen().read()
        assert (theirs.committed_slot, theirs.trial_slot) == (mine.committed_slot, Slot.B)

    # ------------------------------------------------------------------ the running boot

    @pytest.mark.parametrize("slot", [Slot.A, Slot.B, None])
    def test_booted_slot_follows_the_kernel(self, world: BootWorld, slot: Slot | None) -> None:
        world.set_booted(slot)
        assert world.env.booted_slot() is slot

    def test_boot_id(self, world: BootWorld) -> None:
        world.set_boot_id("6f1e0a3c-1111-4222-8333-944455556666")
        assert world.env.boot_id() == "6f1e0a3c-1111-4222-8333-944455556666"
        world.set_boot_id(None)
        assert world.env.boot_id() is None

    def test_request_reboot_reaches_the_hook(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        assert not world.reboot_requested()
        world.env.request_reboot()
        assert world.reboot_requested()

    # ------------------------------------------------------------------ whole boots

    def test_trial_boot_then_commit(self, world: BootWorld) -> None:
        first = world.env.boot_id()
        world.env.activate(Slot.B)
        assert world.reboot() is Slot.B
        env = world.reopen()
        assert env.booted_slot() is Slot.B
        assert env.boot_id() != first
        env.mark_good(Slot.B)
        assert _trial_and_committed(env) == (Slot.B, None)
        # Committed: every later boot, clean or not, stays on B.
        assert world.reboot(clean=False) is Slot.B
        assert world.reboot() is Slot.B
        assert _trial_and_committed(world.reopen()) == (Slot.B, None)

    def test_a_failing_trial_ends_on_the_committed_slot(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        booted = [world.reboot()]
        assert booted == [Slot.B]
        # The trial never marks good: crashes and watchdog resets, bounded.
        for _ in range(TRIAL_BOOTS + 2):
            booted.append(world.reboot(clean=False))
            if booted[-1] is Slot.A:
                break
        assert booted[-1] is Slot.A, f"still not back on A after {booted}"
        assert len(booted) <= TRIAL_BOOTS + 1
        env = world.reopen()
        assert env.booted_slot() is Slot.A
        assert _trial_and_committed(env) == (Slot.A, None)

    def test_force_rollback_during_the_trial_boots_the_old_slot(self, world: BootWorld) -> None:
        world.env.activate(Slot.B)
        assert world.reboot() is Slot.B
        world.reopen().force_rollback(Slot.A)
        assert world.reboot() is Slot.A
        assert world.reboot(clean=False) is Slot.A

    # ------------------------------------------------------------------ the model, exactly

    # One test body run by every subclass (the contract pattern): each
    # subclass is its own executor, and the world factory gives every example
    # a fresh world, so the shared-executor and fixture checks do not apply.
    @settings(
        max_examples=25,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
            HealthCheck.too_slow,
        ],
    )
    @given(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["activate", "mark_good", "force_rollback", "reopen"]),
                st.sampled_from([Slot.A, Slot.B]),
            ),
            max_size=8,
        )
    )
    def test_views_follow_the_model(
        self, make_world: WorldFactory, ops: list[tuple[str, Slot]]
    ) -> None:
        world = make_world()
        model = world.model
        expected = model.initial(Slot.A)
        env = world.env
        for op, slot in ops:
            if op == "reopen":
                env = world.reopen()
                continue
            getattr(env, op)(slot)
            expected = getattr(model, op)(expected, slot)
            want = model.view(expected)
            got = env.read()
            assert (got.committed_slot, got.trial_slot) == (want.committed_slot, want.trial_slot)
            assert got.boot_counter == want.boot_counter
