"""Reconciliation: compare what the agent believes with what the bootloader did.

Run at every healthcheck and status. The bootloader and the kernel command
line are the truth; state.json is the agent's memory of its intent.
"""

from __future__ import annotations

import datetime as dt
import enum

import attrs

from kubesolo_core.bootmodel import BootView
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, UpdateState, transition
from kubesolo_core.slots import Slot


class Verdict(enum.Enum):
    """What the comparison found."""

    CONSISTENT = "consistent"  # nothing in flight, or nothing to say
    BOOTED_UNKNOWN = "booted_unknown"  # no kubesolo.slot= on the kernel command line: no judgement
    PENDING_REBOOT = "pending_reboot"  # activated, the trial boot has not happened yet
    IN_TRIAL = "in_trial"  # running the trial slot; the health check decides
    ROLLED_BACK = "rolled_back"  # the bootloader went back to the old slot


@attrs.frozen(kw_only=True)
class Reconciliation:
    """The verdict, the state to persist (None = unchanged) and a sentence for humans."""

    verdict: Verdict
    state: UpdateState | None
    message: str


def reconcile(
    state: UpdateState,
    view: BootView,
    booted: Slot | None,
    boot_id: str | None,
    now: dt.datetime,
) -> Reconciliation:
    """Compare ``state`` with the bootloader ``view`` and the ``booted`` slot."""
    if state.phase not in POST_ACTIVATION or state.target_slot is None:
        return Reconciliation(verdict=Verdict.CONSISTENT, state=None, message="")
    target = state.target_slot
    old = target.other()
    if booted is None:
        # Without kubesolo.slot on the command line we cannot tell; say so.
        return Reconciliation(
            verdict=Verdict.BOOTED_UNKNOWN,
            state=None,
            message="booted slot unknown (no kubesolo.slot= on the kernel command line)",
        )
    if booted is target:
        return Reconciliation(
            verdict=Verdict.IN_TRIAL,
            state=None,
            message=f"running the trial of slot {target.value}",
        )
    same_boot = boot_id is not None and boot_id == state.activation_boot_id
    if same_boot:
        return Reconciliation(
            verdict=Verdict.PENDING_REBOOT,
            state=None,
            message=f"slot {target.value} is activated; reboot to start its trial",
        )
    if view.committed_slot is old and view.trial_slot is None:
        reason = (
            f"bootloader rolled back to slot {old.value}: the trial of slot {target.value} "
            f"({state.to_version}) was never committed (no passing health check before "
            "its trial boots ran out, or the trial boot never started)"
        )
        return Reconciliation(
            verdict=Verdict.ROLLED_BACK,
            state=transition(state, Phase.ROLLED_BACK, now, error=reason),
            message=reason,
        )
    # Booted the old slot in a new boot while a trial is still pending (picked
    # by hand from the menu, say): the bootloader will try again next boot.
    return Reconciliation(
        verdict=Verdict.PENDING_REBOOT,
        state=None,
        message=f"booted slot {old.value} while the trial of slot {target.value} is still pending",
    )
