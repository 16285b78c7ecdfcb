"""Driving a :class:`~kubesolo_adapters.fakes.MemoryBox` like the field does.

One implementation serves ``kubesolo-update simulate``, the hypothesis state
machine and the crash-point enumeration of tests/unit, and library users who
simulate their own sequences. What the invariants are is the core's
(:mod:`kubesolo_core.invariants`); this module only observes a memory box for
them (:func:`observe`): "verified" is judged by content, the exact bytes of an
image that was published (or the factory image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from kubesolo_adapters.fakes.box import MemoryBox
from kubesolo_adapters.fakes.images import image_meta
from kubesolo_adapters.fakes.power import PowerCut
from kubesolo_core.errors import KubesoloError
from kubesolo_core.invariants import Observation, violations
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, UpdateState
from kubesolo_core.results import HealthSettings
from kubesolo_core.services import Agent
from kubesolo_core.slots import Slot


def observe(
    box: MemoryBox[Any],
    known_good: set[bytes],
    *,
    booted: Iterable[tuple[Slot, bytes | None]] = (),
    before: UpdateState | None = None,
    auto_rollback_after: int = 0,
) -> Observation:
    """What the invariants judge of ``box`` now.

    ``known_good`` holds every verified image's bytes; ``booted`` lists the
    boot attempts to judge, each with the content its slot held at that boot;
    ``before`` is the state before the last reboot + healthcheck, or None.
    """
    try:
        state: UpdateState | None = box.store.load()
        error = None
    except KubesoloError as exc:
        state, error = None, str(exc)
    view = box.boot_env.read()
    committed = box.slots.contents.get(view.committed_slot)
    meta = image_meta(committed)
    return Observation(
        view=view,
        state=state,
        state_error=error,
        committed_verified=committed in known_good,
        committed_bootable=box.bootable(view.committed_slot),
        committed_healthy=bool(meta and meta.get("healthy")),
        boots=tuple((slot, content in known_good) for slot, content in booted),
        booted=box.boot_env.booted,
        boot_id=box.boot_env.current_boot_id,
        before=before,
        auto_rollback_after=auto_rollback_after,
    )


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
                healthy = self.agent().healthcheck().healthy
            except KubesoloError as exc:
                self.last_error = exc
                healthy = False
            if not healthy:
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
        found = violations(
            observe(
                self.box,
                self.known_good,
                booted=self.unchecked_boots,
                before=self.before_reboot,
                auto_rollback_after=self.auto_rollback_after,
            )
        )
        self.unchecked_boots = []
        self.before_reboot = None
        return found
