"""Reconciliation, case by case: the table of DESIGN.md 2.2 written out, not derived."""

from __future__ import annotations

import datetime as dt

import pytest

from kubesolo_core.bootmodel import GrubModel
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.reconcile import Verdict, reconcile
from kubesolo_core.slots import Slot

NOW = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
GRUB = GrubModel()
COMMITTED_A = GRUB.view(GRUB.initial(Slot.A))
TRIAL_B = GRUB.view(GRUB.activate(GRUB.initial(Slot.A), Slot.B))
ACTIVATED = UpdateState(
    phase=Phase.ACTIVATED,
    from_version="1.0.0",
    to_version="1.1.0",
    target_slot=Slot.B,
    activation_boot_id="boot-1",
)

# (state, view, booted, boot id) -> (verdict, new phase or None)
CASES = {
    "idle, nothing to say": (
        UpdateState(),
        COMMITTED_A,
        Slot.A,
        "boot-1",
        Verdict.CONSISTENT,
        None,
    ),
    "success, nothing to say": (
        UpdateState(phase=Phase.SUCCESS, target_slot=Slot.B),
        COMMITTED_A,
        Slot.A,
        "boot-9",
        Verdict.CONSISTENT,
        None,
    ),
    "no kubesolo.slot=: no judgement": (
        ACTIVATED,
        COMMITTED_A,
        None,
        "boot-2",
        Verdict.BOOTED_UNKNOWN,
        None,
    ),
    "running the trial slot": (ACTIVATED, TRIAL_B, Slot.B, "boot-2", Verdict.IN_TRIAL, None),
    "same boot as the activation": (
        ACTIVATED,
        TRIAL_B,
        Slot.A,
        "boot-1",
        Verdict.PENDING_REBOOT,
        None,
    ),
    "old slot, new boot, trial still pending": (
        ACTIVATED,
        TRIAL_B,
        Slot.A,
        "boot-2",
        Verdict.PENDING_REBOOT,
        None,
    ),
    "old slot, new boot, committed on the old slot: the bootloader rolled back": (
        ACTIVATED,
        COMMITTED_A,
        Slot.A,
        "boot-2",
        Verdict.ROLLED_BACK,
        Phase.ROLLED_BACK,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_reconciliation_table(case: str) -> None:
    state, view, booted, boot_id, verdict, phase = CASES[case]
    rec = reconcile(state, view, booted, boot_id, NOW)
    assert rec.verdict is verdict
    if phase is None:
        assert rec.state is None
    else:
        assert rec.state is not None and rec.state.phase is phase
        assert rec.state.last_error and "rolled back to slot A" in rec.state.last_error
        assert rec.state.updated_at == NOW
    if verdict is not Verdict.CONSISTENT:
        assert rec.message  # every judgement says why, in one sentence
