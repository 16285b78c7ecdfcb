"""A test harness around MemoryBox: runs agent operations like a box would, checks invariants.

The invariants (issue 2):

1. there is always a committed slot holding a verified image;
2. the box never boots a slot whose image was not verified;
3. the state always loads;
4. a bootloader rollback always ends as rolled_back on the previous slot;
5. counters stay in range;
6. the bootloader never commits an image whose health check never passed.

"Verified" is judged by content: a slot holds a verified image when its bytes
are exactly one of the images ever published (or the factory image). The
agent's read-back check is the only thing that makes a slot bootable in its
eyes, so a fault (a flipped bit, a torn write) that slips past it shows up
here as a boot of an unverified slot.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from kubesolo_adapters.memory import MemoryBox, PowerCut, image_meta
from kubesolo_core.bootmodel import COUNTER, GrubModel
from kubesolo_core.errors import KubesoloError
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase
from kubesolo_core.services import HealthSettings

#: run-wide tallies printed by tests/unit/conftest.py
TALLY: Counter[str] = Counter()


class InvariantViolated(AssertionError):
    pass


@attrs.define
class Harness:
    """A box plus what the test knows about it."""

    box: MemoryBox[Any]
    known_images: set[bytes] = attrs.field(factory=set)
    booted_contents: list[bytes | None] = attrs.field(factory=list)
    auto_rollback_after: int = 0
    next_version: int = 1
    last_error: BaseException | None = None

    @classmethod
    def create(cls, bootloader: str, *, auto_rollback_after: int = 0) -> Harness:
        box = MemoryBox.create(bootloader)
        factory = box.slots.contents[next(iter(box.slots.contents))]
        return cls(box=box, known_images={factory}, auto_rollback_after=auto_rollback_after)

    # -------------------------------------------------------------- operations

    def agent(self) -> Any:
        return self.box.agent(
            HealthSettings(
                kube_system_settle=0,
                settle_timeout=0,
                auto_rollback_after=self.auto_rollback_after,
            )
        )

    def publish(self, *, bootable: bool = True, healthy: bool = True) -> str:
        version = f"1.{self.next_version}.0"
        self.next_version += 1
        image = self.box.publish(version, bootable=bootable, healthy=healthy)
        self.known_images.add(image)
        return version

    def run(self, op: str, *, cut_after: int | None = None) -> bool:
        """Run one agent operation; True if the power was cut during it.

        Domain errors are expected outcomes (a refusal, a failed health
        check); anything else is a bug and propagates.
        """
        box = self.box
        box.power.cut_after = None if cut_after is None else box.power.writes + cut_after
        try:
            getattr(self.agent(), op)()
        except PowerCut:
            TALLY["power cuts"] += 1
            self.reboot(clean=False)
            return True
        except KubesoloError as exc:
            self.last_error = exc
        finally:
            box.power.cut_after = None
        return False

    def reboot(self, *, clean: bool = True, run_init: bool = True) -> None:
        box = self.box
        before = len(box.boot_log)
        box.reboot(clean=clean)
        TALLY["boots"] += len(box.boot_log) - before
        # What each boot found on the slot it picked (invariant 2).
        for slot, _ok in box.boot_log[before:]:
            self.booted_contents.append(box.slots.contents.get(slot))
        if run_init:
            self.after_boot()

    def after_boot(self) -> None:
        """What init does at every boot: run the health check (which reconciles first)."""
        agent = self.agent()
        state_before = box_state(self.box)
        try:
            agent.healthcheck()
        except KubesoloError as exc:
            self.last_error = exc
        self.check_rollback_recorded(state_before)

    # -------------------------------------------------------------- invariants

    def check_rollback_recorded(self, before: Any) -> None:
        """Invariant 4: a rollback by the bootloader ends as rolled_back on the previous slot."""
        box = self.box
        if before is None or before.phase not in POST_ACTIVATION or before.target_slot is None:
            return
        view = box.boot_env.read()
        booted = box.boot_env.booted
        old = before.target_slot.other()
        if booted is old and view.committed_slot is old and not view.in_trial:
            state = box.store.load()
            if state.phase is not Phase.ROLLED_BACK or not state.last_error:
                raise InvariantViolated(
                    f"bootloader went back to {old} but the agent says {state.phase}"
                )
            TALLY["bootloader rollbacks recorded"] += 1

    def check(self) -> None:
        """Invariants 1, 2, 3 and 5; raises InvariantViolated."""
        box = self.box
        TALLY["invariant checks"] += 1
        # 3: the state always loads (a crash never leaves a half-written file)
        try:
            state = box.store.load()
        except KubesoloError as exc:
            raise InvariantViolated(f"state does not load: {exc}") from exc
        # 1: a committed slot with a verified image
        view = box.boot_env.read()
        committed = box.slots.contents.get(view.committed_slot)
        if committed not in self.known_images or not box.bootable(view.committed_slot):
            raise InvariantViolated(
                f"committed slot {view.committed_slot} does not hold a verified bootable image"
            )
        # 6: only a release that proved healthy gets committed
        meta = image_meta(committed)
        if not meta or not meta.get("healthy"):
            raise InvariantViolated(
                f"committed slot {view.committed_slot} holds an image that never passed health"
            )
        # 2: every boot picked a verified image
        for content in self.booted_contents:
            if content not in self.known_images:
                raise InvariantViolated("the box booted a slot whose image was not verified")
        # 5: counters in range
        if isinstance(box.model, GrubModel):
            counter = box.boot_env.env.get(COUNTER)
            if counter not in ("0", "1", "2", "3"):
                raise InvariantViolated(f"boot_counter {counter!r} out of range")
        if state.attempt_count < 0 or state.health_check_failures < 0:
            raise InvariantViolated("negative counter in state")
        if (
            self.auto_rollback_after
            and state.phase is Phase.ACTIVATED
            and state.health_check_failures >= self.auto_rollback_after
        ):
            raise InvariantViolated("health failures passed the auto-rollback threshold")
        if state.phase in POST_ACTIVATION and state.target_slot is None:
            raise InvariantViolated("post-activation state without a target slot")


def box_state(box: MemoryBox[Any]) -> Any:
    try:
        return box.store.load()
    except KubesoloError:
        return None
