"""A hypothesis state machine over a whole simulated box (vdirsyncer-style).

It drives updates, boots through the bootloader model, unbootable and
unhealthy images, health passes and failures, manual rollbacks, network and
disk faults, and power cuts at any durable write, and checks the invariants of
tests/unit/harness.py after every step. Runs with the GRUB model and with the
tryboot model.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kubesolo_adapters.fakes import MemoryBox
from tests.unit.harness import TALLY, Harness

OPS = ("apply", "activate", "healthcheck", "rollback", "status", "check")


class BoxMachine(RuleBasedStateMachine):
    bootloader = "grub"

    def __init__(self) -> None:
        super().__init__()
        self.h: Harness

    @initialize(auto=st.sampled_from([0, 0, 1, 2, 3]))
    def start(self, auto: int) -> None:
        self.h = Harness.create(self.bootloader, auto_rollback_after=auto)
        TALLY[f"state-machine runs ({self.bootloader})"] += 1

    @rule(kind=st.sampled_from(["good", "good", "unbootable", "unhealthy"]))
    def publish(self, kind: str) -> None:
        self.h.publish(bootable=kind != "unbootable", healthy=kind != "unhealthy")

    @rule(op=st.sampled_from(OPS))
    def operate(self, op: str) -> None:
        self.h.run(op)
        TALLY["operations"] += 1

    @rule(
        op=st.sampled_from(("apply", "activate", "healthcheck", "rollback")),
        k=st.integers(min_value=0, max_value=5),
    )
    def power_cut_during(self, op: str, k: int) -> None:
        self.h.run(op, cut_after=k)

    @rule(
        kind=st.sampled_from(["good", "unbootable", "unhealthy"]),
        fault=st.sampled_from(["none", "flip", "truncate", "cut"]),
        k=st.integers(min_value=0, max_value=4),
    )
    def full_update(self, kind: str, fault: str, k: int) -> None:
        """A whole update in one step (deep sequences are otherwise rare)."""
        self.h.publish(bootable=kind != "unbootable", healthy=kind != "unhealthy")
        if fault == "flip":
            self.h.box.slots.flip_next_write = True
        elif fault == "truncate":
            self.h.box.fetcher.truncate_next = 1
        self.h.run("apply", cut_after=k if fault == "cut" else None)
        self.h.run("activate")
        self.h.reboot()

    @rule(clean=st.booleans())
    def reboot(self, clean: bool) -> None:
        self.h.reboot(clean=clean)

    @rule(
        fault=st.sampled_from(
            [
                "fail",
                "stall",
                "truncate",
                "flip",
                "block",
                "unblock",
                "kube_down",
                "kube_up",
                "small_slot",
            ]
        )
    )
    def inject(self, fault: str) -> None:
        box: MemoryBox[object] = self.h.box
        if fault == "fail":
            box.fetcher.fail_next = 1
        elif fault == "stall":
            box.fetcher.stall_next = 1
        elif fault == "truncate":
            box.fetcher.truncate_next = 1
        elif fault == "flip":
            box.slots.flip_next_write = True
        elif fault == "block":
            box.kube.block()
        elif fault == "unblock":
            box.kube.block(blocked=False)
        elif fault == "kube_down":
            box.kube.unavailable = "no kubeconfig reachable"
        elif fault == "kube_up":
            box.kube.unavailable = None
        else:
            passive = box.boot_env.booted.other() if box.boot_env.booted else None
            if passive is not None:
                box.slots.capacities[passive] = 1024
        TALLY[f"fault {fault}"] += 1

    @rule()
    def heal_disk(self) -> None:
        for slot in self.h.box.slots.capacities:
            self.h.box.slots.capacities[slot] = 1 << 16

    @invariant()
    def invariants_hold(self) -> None:
        self.h.check()


class TrybootBoxMachine(BoxMachine):
    bootloader = "tryboot"


# "A few thousand examples" in CI: 1500 sequences per bootloader, up to 40 steps each.
_EXAMPLES = 1500 if settings.default.max_examples >= 400 else 100
BoxMachine.TestCase.settings = settings(
    settings.default, max_examples=_EXAMPLES, stateful_step_count=40
)
TrybootBoxMachine.TestCase.settings = BoxMachine.TestCase.settings

TestGrubBox = BoxMachine.TestCase
TestTrybootBox = TrybootBoxMachine.TestCase
