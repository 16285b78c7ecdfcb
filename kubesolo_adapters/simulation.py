"""Driving a :class:`~kubesolo_adapters.memory.MemoryBox` like the field does, and the invariants.

One implementation serves ``kubesolo-update simulate``, the hypothesis state
machine and the crash-point enumeration of tests/unit, and library users who
simulate their own sequences.

The invariants (:func:`check_invariants`):

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

"Verified" is judged by content: the exact bytes of an image that was
published (or the factory image). The agent's read-back check is the only
thing that makes a slot trialable, so a torn write or a flipped bit that got
past it shows up as a boot of unverified content.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from kubesolo_adapters.memory import MemoryBox, PowerCut, image_meta
from kubesolo_core.bootmodel import TRIAL_BOOTS
from kubesolo_core.errors import KubesoloError
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, UpdateState
from kubesolo_core.services import Agent, HealthSettings
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


def check_invariants(
    box: MemoryBox[Any],
    known_good: set[bytes],
    *,
    booted: Iterable[tuple[Slot, bytes | None]] = (),
    before: UpdateState | None = None,
    auto_rollback_after: int = 0,
) -> list[str]:
    """The violations of the invariants for ``box`` now (empty = all hold).

    ``known_good`` holds every verified image's bytes; ``booted`` lists the
    boot attempts to judge, each with the content its slot held at that boot;
    ``before`` is the state before the last reboot + healthcheck (for
    invariant 4), or None.
    """
    bad: list[str] = []
    # 3: the state loads
    try:
        state: UpdateState | None = box.store.load()
    except KubesoloError as exc:
        state = None
        bad.append(f"state_loads: {exc}")
    # 1: committed slot verified and bootable
    view = box.boot_env.read()
    committed = box.slots.contents.get(view.committed_slot)
    if committed not in known_good or not box.bootable(view.committed_slot):
        bad.append(
            f"committed: slot {view.committed_slot.value} does not hold a verified bootable image"
        )
    # 6: and it proved healthy
    meta = image_meta(committed)
    if not meta or not meta.get("healthy"):
        bad.append(
            f"healthy_commits: slot {view.committed_slot.value} is committed with an image "
            "that never passed a health check"
        )
    # 2: every boot attempt picked verified content
    for slot, content in booted:
        if content not in known_good:
            bad.append(f"verified_boots: the box tried to boot unverified slot {slot.value}")
    # 4: a bootloader rollback is recorded
    if (
        state is not None
        and before is not None
        and before.phase in POST_ACTIVATION
        and before.target_slot is not None
    ):
        old = before.target_slot.other()
        if (
            box.boot_env.booted is old
            and view.committed_slot is old
            and not view.in_trial
            and box.boot_env.current_boot_id != before.activation_boot_id
            and (state.phase is not Phase.ROLLED_BACK or not state.last_error)
        ):
            bad.append(
                f"rollback_recorded: back on slot {old.value} after a trial of "
                f"{before.target_slot.value}, but the state says {state.phase.value}"
            )
    # 5: counters in range
    raw_counter = view.raw.get("boot_counter")
    if raw_counter is not None and raw_counter not in {str(n) for n in range(TRIAL_BOOTS + 1)}:
        bad.append(f"counters: the env holds boot_counter={raw_counter!r}")
    if state is not None:
        if state.attempt_count < 0:
            bad.append(f"counters: attempt_count {state.attempt_count} < 0")
        if not 0 <= state.health_check_failures <= MAX_FAILURES:
            bad.append(f"counters: health_check_failures {state.health_check_failures}")
        if (
            auto_rollback_after
            and state.phase is Phase.ACTIVATED
            and state.health_check_failures >= auto_rollback_after
        ):
            bad.append(
                f"counters: {state.health_check_failures} failed health checks passed the "
                f"auto-rollback threshold {auto_rollback_after}"
            )
        if state.phase in POST_ACTIVATION and state.target_slot is None:
            bad.append("counters: post-activation state without a target slot")
    return bad


@attrs.define
class BoxDriver:
    """A box plus what its operator knows: the images published, what booted.

    ``run`` performs one agent operation, optionally cutting the power after
    a number of durable writes (then the box reboots uncleanly); ``reboot``
    boots through the bootloader model and runs the health check as init does.
    Domain errors are expected outcomes and are tallied; anything else is a
    bug and propagates.
    """

    box: MemoryBox[Any]
    auto_rollback_after: int = 0
    known_good: set[bytes] = attrs.field(factory=set)
    tally: Counter[str] = attrs.field(factory=Counter)
    next_version: int = 1
    #: boot attempts (slot, content then) not yet checked
    unchecked_boots: list[tuple[Slot, bytes | None]] = attrs.field(factory=list)
    #: the state before the last reboot, for the rollback invariant
    before_reboot: UpdateState | None = None
    last_error: KubesoloError | None = None

    @classmethod
    def create(cls, bootloader: str, *, auto_rollback_after: int = 0) -> BoxDriver:
        """A fresh box (committed on slot A) and its driver."""
        box = MemoryBox.create(bootloader)
        return cls(
            box=box,
            auto_rollback_after=auto_rollback_after,
            known_good=set(box.slots.contents.values()),
        )

    def agent(self) -> Agent:
        """An agent as the box's init and operators run it."""
        return self.box.agent(
            HealthSettings(
                kube_system_settle=0, settle_timeout=0, auto_rollback_after=self.auto_rollback_after
            )
        )

    def state(self) -> UpdateState | None:
        """The saved state, None when it does not load."""
        try:
            return self.box.store.load()
        except KubesoloError:
            return None

    def publish(self, *, bootable: bool = True, healthy: bool = True) -> str:
        """Publish the next release; returns its version."""
        version = f"1.{self.next_version}.0"
        self.next_version += 1
        self.known_good.add(self.box.publish(version, bootable=bootable, healthy=healthy))
        self.tally["releases"] += 1
        return version

    def run(self, op: str, *, cut_after: int | None = None) -> bool:
        """Run ``op`` (apply, activate, healthcheck, rollback, status, check).

        Returns True when the power was cut during it.
        """
        box = self.box
        box.power.cut_after = None if cut_after is None else box.power.writes + cut_after
        self.tally[op] += 1
        try:
            getattr(self.agent(), op)()
        except PowerCut:
            self.tally["power cuts"] += 1
            box.power.cut_after = None
            self.reboot(clean=False)
            return True
        except KubesoloError as exc:
            self.last_error = exc
            self.tally[f"{op} refused or failed"] += 1
        finally:
            box.power.cut_after = None
        return False

    def reboot(self, *, clean: bool = True, run_init: bool = True) -> None:
        """Boot through the bootloader model (bounded); init runs the health check."""
        box = self.box
        since = len(box.boot_log)
        self.before_reboot = self.state()
        self.tally["reboots"] += 1
        try:
            box.reboot(clean=clean)
        finally:
            # What each boot found on the slot it picked (invariant 2); a slot
            # is only ever written by the agent, never during the boots.
            new = box.boot_log[since:]
            self.unchecked_boots.extend((slot, box.slots.contents.get(slot)) for slot, _ in new)
            self.tally["boots"] += len(new)
        if run_init:
            self.tally["healthcheck"] += 1
            try:
                self.agent().healthcheck()
            except KubesoloError as exc:
                self.last_error = exc
                self.tally["healthcheck failed"] += 1
            after = self.state()
            if (
                self.before_reboot is not None
                and after is not None
                and after.phase is Phase.ROLLED_BACK
                and self.before_reboot.phase in POST_ACTIVATION
            ):
                self.tally["rollbacks recorded"] += 1

    def violations(self) -> list[str]:
        """Check every invariant over what happened since the last check."""
        self.tally["invariant checks"] += 1
        found = check_invariants(
            self.box,
            self.known_good,
            booted=self.unchecked_boots,
            before=self.before_reboot,
            auto_rollback_after=self.auto_rollback_after,
        )
        self.unchecked_boots = []
        self.before_reboot = None
        return found
