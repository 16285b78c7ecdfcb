"""The shipped deploy/grub.cfg, run by real GRUB under QEMU, equals GrubModel (DESIGN.md 2.1).

Hypothesis generates an initial grubenv (no file at all; variables missing;
valid, near-miss and garbage values; foreign variables that must survive) and
a plan of rounds: agent writes (activate, mark_good, manual rollback, done by
the real GrubBootEnv) followed by one real power-on. After each boot the slot
GRUB chose and the env on the ESP must equal the model's exactly.

Boot budget: mostly legacy BIOS (about 0.5-1 s a boot under TCG), a few UEFI
(about 5 s). The settings are local to each test, not the global profile:
30 BIOS sequences of 3-5 boots (>= 90 real boots), the explicit examples,
and a table of every near-miss value, one boot each (34 boots): random
generation meets a given near miss only now and then, the table always.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from kubesolo_core.slots import Slot
from tests.hardware.harness import (
    MODEL,
    NEAR_MISSES,
    GrubRig,
    check_sequence,
    counted_boot,
    initial_envs,
    rounds,
    tail,
)

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]

TRIAL_B = {"active_slot": "A", "boot_counter": "3", "boot_success": "1", "note": "keep me"}
BOOT = ()  # a round with no agent write: just a boot


@settings(max_examples=30, deadline=None, suppress_health_check=_SLOW_OK, print_blob=True)
@given(initial=initial_envs(), plan=rounds(3, 5))
# The whole life of an update: three trial boots, rollback on the fourth, stable after.
@example(initial=TRIAL_B, plan=[[("activate", Slot.B)], BOOT, BOOT, BOOT, BOOT])
# A trial marked good mid-way is committed and never touched again.
@example(initial=TRIAL_B, plan=[[("activate", Slot.B)], [("mark_good", None)], BOOT])
# No grubenv: boots A, never creates the file; the agent's first write creates it.
@example(initial=None, plan=[BOOT, [("activate", Slot.B)], BOOT])
# Garbage everywhere: reads as "committed on A" and writes nothing.
@example(
    initial={"active_slot": "b", "boot_counter": "-1", "boot_success": "00", "prefix": "(x)"},
    plan=[BOOT, BOOT, BOOT],
)
# A trial with a garbage counter rolls back at once.
@example(
    initial={"active_slot": "B", "boot_counter": "x", "boot_success": "0"}, plan=[BOOT, BOOT, BOOT]
)
def test_grub_cfg_equals_model_bios(grub_rig: GrubRig, initial: Any, plan: Any) -> None:
    check_sequence(grub_rig, MODEL, "bios", initial, plan)


@settings(max_examples=1, deadline=None, suppress_health_check=_SLOW_OK, print_blob=True)
@given(initial=initial_envs(), plan=rounds(2, 3))
@example(initial=TRIAL_B, plan=[[("activate", Slot.B)], BOOT, BOOT, BOOT, BOOT])
def test_grub_cfg_equals_model_uefi(grub_rig: GrubRig, initial: Any, plan: Any) -> None:
    check_sequence(grub_rig, MODEL, "efi", initial, plan)


@pytest.mark.parametrize("timeout", ["abc", "-1", "999", " 5"])
def test_garbage_menu_timeout_never_waits(grub_rig: GrubRig, timeout: str) -> None:
    """A garbage ksolo_timeout reads as 0: GRUB must not sit in its menu forever."""
    grub_rig.set_env({"active_slot": "B", "boot_success": "1", "ksolo_timeout": timeout})
    result = grub_rig.boot("bios")  # fails if GRUB does not halt within the time limit
    assert result.slot is Slot.B


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # A trial GRUB cannot count down boots the committed slot, not the trial.
        ({"active_slot": "B", "boot_counter": "3", "boot_success": "0"}, Slot.A),
        # A rollback boots the committed (other) slot whether or not it can save.
        ({"active_slot": "B", "boot_counter": "0", "boot_success": "0"}, Slot.A),
        ({"active_slot": "A", "boot_counter": "1", "boot_success": "0"}, Slot.B),
    ],
)
def test_unwritable_env_never_runs_an_endless_trial(
    grub_rig: GrubRig, env: dict[str, str], expected: Slot
) -> None:
    """Outside the model on purpose: when save_env fails (a disk GRUB cannot write)."""
    grub_rig.set_env(env)
    runner = grub_rig.runner("bios")
    runner.read_only = True
    result = counted_boot(runner)
    assert result.halted, tail(result)
    assert "KSOLO-ENV-ERROR" in result.serial, tail(result)
    assert result.slot is expected, tail(result)
    assert not result.markers[-1].saved
    assert grub_rig.read_env() == env


TRIAL_ON_B = {"active_slot": "B", "boot_counter": "2", "boot_success": "0"}


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in NEAR_MISSES.items() for value in values],
    ids=repr,
)
def test_near_miss_value_in_a_trial(grub_rig: GrubRig, name: str, value: str) -> None:
    """One near-miss value in an otherwise valid trial: GRUB and the model agree on one boot."""
    check_sequence(grub_rig, MODEL, "bios", {**TRIAL_ON_B, name: value}, [BOOT])
