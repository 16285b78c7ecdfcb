"""The safety invariants of an A/B box, as a pure judgement of what was observed.

One definition serves ``kubesolo-update simulate``, the hypothesis state
machine and the crash-point enumeration of tests/unit, and library users who
simulate their own sequences: whoever drives a box builds an
:class:`Observation` after a step and asks :func:`violations`.

1. ``committed``: the bootloader's committed slot holds a verified image that boots;
2. ``verified_boots``: the box never tries to boot a slot whose content is
   not a verified image;
3. ``state_loads``: the state always loads;
4. ``rollback_recorded``: a rollback by the bootloader ends as
   ``rolled_back`` on the previous slot;
5. ``counters``: the boot counter, attempt count and health-failure count
   stay in range;
6. ``healthy_commits``: only an image that passed its health check is ever
   committed.

"Verified" is judged by content, by the driver: the exact bytes of an image
that was published (or the factory image). The agent's read-back check is the
only thing that makes a slot trialable, so a torn write or a flipped bit that
got past it shows up as a boot of unverified content.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from kubesolo_core.bootmodel import TRIAL_BOOTS, BootView
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, UpdateState
from kubesolo_core.slots import Slot

INVARIANTS = (
    "committed",
    "verified_boots",
    "state_loads",
    "rollback_recorded",
    "counters",
    "healthy_commits",
)

#: upper bound of failed health checks counted in one trial (init reboots after
#: each failure and GRUB allows three trial boots; manual runs may add a few)
MAX_FAILURES = 64


@attrs.frozen(kw_only=True)
class Observation:
    """A box after a step, as the invariants need to see it."""

    view: BootView
    #: the saved state, None when it did not load (``state_error`` says why)
    state: UpdateState | None
    state_error: str | None = None
    #: the committed slot holds a verified image / one that boots / one that is healthy
    committed_verified: bool
    committed_bootable: bool
    committed_healthy: bool
    #: each boot attempt since the last observation: the slot and whether it held verified bytes
    boots: Sequence[tuple[Slot, bool]] = ()
    booted: Slot | None
    boot_id: str | None
    #: the state before the last reboot + health check (for invariant 4), or None
    before: UpdateState | None = None
    auto_rollback_after: int = 0


def violations(obs: Observation) -> list[str]:
    """The invariants ``obs`` breaks, one sentence each (empty: all hold)."""
    bad: list[str] = []
    view = obs.view
    if obs.state_error is not None:
        bad.append(f"state_loads: {obs.state_error}")
    committed = view.committed_slot.value
    if not (obs.committed_verified and obs.committed_bootable):
        bad.append(f"committed: slot {committed} does not hold a verified bootable image")
    if not obs.committed_healthy:
        bad.append(
            f"healthy_commits: slot {committed} is committed with an image "
            "that never passed a health check"
        )
    bad.extend(
        f"verified_boots: the box tried to boot unverified slot {slot.value}"
        for slot, verified in obs.boots
        if not verified
    )
    bad.extend(_rollback_recorded(obs))
    bad.extend(_counters(obs))
    return bad


def _rollback_recorded(obs: Observation) -> list[str]:
    before, state, view = obs.before, obs.state, obs.view
    if state is None or before is None or before.phase not in POST_ACTIVATION:
        return []
    if before.target_slot is None:
        return []
    old = before.target_slot.other()
    back_on_old = (
        obs.booted is old
        and view.committed_slot is old
        and not view.in_trial
        and obs.boot_id != before.activation_boot_id
    )
    if back_on_old and (state.phase is not Phase.ROLLED_BACK or not state.last_error):
        message = (
            f"rollback_recorded: back on slot {old.value} after a trial of "
            f"{before.target_slot.value}, but the state says {state.phase.value}"
        )
        return [message]
    return []


def _counters(obs: Observation) -> list[str]:
    bad = []
    raw_counter = obs.view.raw.get("boot_counter")
    if raw_counter is not None and raw_counter not in {str(n) for n in range(TRIAL_BOOTS + 1)}:
        bad.append(f"counters: the env holds boot_counter={raw_counter!r}")
    state = obs.state
    if state is None:
        return bad
    if state.attempt_count < 0:
        bad.append(f"counters: attempt_count {state.attempt_count} < 0")
    if not 0 <= state.health_check_failures <= MAX_FAILURES:
        bad.append(f"counters: health_check_failures {state.health_check_failures}")
    threshold = obs.auto_rollback_after
    if threshold and state.phase is Phase.ACTIVATED and state.health_check_failures >= threshold:
        bad.append(
            f"counters: {state.health_check_failures} failed health checks passed the "
            f"auto-rollback threshold {threshold}"
        )
    if state.phase in POST_ACTIVATION and state.target_slot is None:
        bad.append("counters: post-activation state without a target slot")
    return bad
