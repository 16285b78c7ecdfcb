"""Crash-point enumeration: cut the power after the k-th durable write, for every k.

For apply, activate, healthcheck (pass and fail, with and without auto-rollback)
and rollback, on the GRUB and the tryboot model: set the box up, count the
durable writes the operation makes, then for every k replay the set-up, cut
the power after k writes, boot through the bootloader model (init runs the
health check), check the invariants, and drive the box on to the end of the
update. A healthy release must still end committed; an unhealthy one must end
rolled back on the old slot with the old version running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from kubesolo_adapters.chunker import chunk_bytes
from kubesolo_adapters.fakes.chunks import (
    SMALL_PARAMS,
    MemoryChunkSource,
    derive_image,
    enable_adaptive,
    publish_chunked,
)
from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from tests.unit.harness import TALLY, Harness

Setup = Callable[[Harness, bool], None]


def nothing(h: Harness, healthy: bool) -> None:
    h.publish(healthy=healthy)


def staged(h: Harness, healthy: bool) -> None:
    nothing(h, healthy)
    h.run("apply")
    assert h.box.store.load().phase is Phase.STAGED


def activated(h: Harness, healthy: bool) -> None:
    staged(h, healthy)
    h.run("activate")


def trial(h: Harness, healthy: bool) -> None:
    staged(h, healthy)
    h.run("activate")
    # The operation under test is the one init runs on the trial boot.
    h.reboot(run_init=False)


def committed(h: Harness, healthy: bool) -> None:
    staged(h, True)
    h.run("activate")
    h.reboot()
    assert h.box.store.load().phase is Phase.SUCCESS


def second_update(h: Harness, healthy: bool) -> None:
    committed(h, True)
    h.publish(healthy=healthy)


def second_staged(h: Harness, healthy: bool) -> None:
    second_update(h, healthy)
    h.run("apply")


def second_trial(h: Harness, healthy: bool) -> None:
    second_staged(h, healthy)
    h.run("activate")
    h.reboot(run_init=False)


def publish_adaptive(h: Harness, healthy: bool, fault: str = "") -> None:
    """Publish the next release with a chunk index, derived from the running image.

    ``fault``: "missing" (a chunk the store lacks), "corrupt" (a chunk served
    with a flipped bit) or "index" (an index that is not the one named).
    """
    box = h.box
    if box.adaptive is None:
        enable_adaptive(box)
    assert box.adaptive is not None
    source = cast("MemoryChunkSource", box.adaptive.source)
    booted = box.boot_env.booted or Slot.A
    version = f"1.{h.next_version}.0"
    h.next_version += 1
    image = derive_image(box.slots.contents[booted], version, changed_blocks=2, healthy=healthy)
    publish_chunked(box, source, image, version, index_override=b"x" if fault == "index" else None)
    h.known_good.add(image)
    if fault in ("missing", "corrupt"):
        # the last chunk the running image lacks: the box must fetch it, after writing others
        running = box.slots.contents[booted]
        changed = [
            chunk
            for chunk in chunk_bytes(image, SMALL_PARAMS)
            if running[chunk[0] : chunk[0] + chunk[1]] != image[chunk[0] : chunk[0] + chunk[1]]
        ]
        (source.missing if fault == "missing" else source.corrupt).add(changed[-1][2])


def adaptive_nothing(h: Harness, healthy: bool) -> None:
    publish_adaptive(h, healthy)


def adaptive_second_update(h: Harness, healthy: bool) -> None:
    # slot B runs 1.1 (committed), slot A still holds the factory 1.0: in place + copies
    committed(h, True)
    publish_adaptive(h, healthy)


def adaptive_torn_passive(h: Harness, healthy: bool) -> None:
    # the passive slot holds half of an old write and foreign bytes
    factory = h.box.slots.contents[Slot.A]
    h.box.slots.contents[Slot.B] = factory[: len(factory) // 2] + b"\xa5" * 700
    publish_adaptive(h, healthy)


def adaptive_missing_chunk(h: Harness, healthy: bool) -> None:
    publish_adaptive(h, healthy, "missing")


def adaptive_corrupt_chunk(h: Harness, healthy: bool) -> None:
    publish_adaptive(h, healthy, "corrupt")


def adaptive_bad_index(h: Harness, healthy: bool) -> None:
    publish_adaptive(h, healthy, "index")


SCENARIOS: dict[str, tuple[Setup, str, bool, int]] = {
    # name: (set-up, operation, healthy release?, auto_rollback_after)
    "apply": (nothing, "apply", True, 0),
    "activate": (staged, "activate", True, 0),
    "healthcheck-pass": (trial, "healthcheck", True, 0),
    "healthcheck-fail": (trial, "healthcheck", False, 0),
    "healthcheck-fail-auto-rollback": (trial, "healthcheck", False, 1),
    "rollback-in-trial": (trial, "rollback", True, 0),
    "rollback-pending-reboot": (activated, "rollback", True, 0),
    "rollback-after-commit": (committed, "rollback", True, 0),
    "apply-second-update": (second_update, "apply", True, 0),
    "activate-second-update": (second_staged, "activate", True, 0),
    "healthcheck-second-update-pass": (second_trial, "healthcheck", True, 0),
    "healthcheck-second-update-fail": (second_trial, "healthcheck", False, 2),
    # the chunked writer (kubesolo_adapters.fakes.chunks): one durable write per block
    "apply-adaptive": (adaptive_nothing, "apply", True, 0),
    "apply-adaptive-second-update": (adaptive_second_update, "apply", True, 0),
    "apply-adaptive-torn-passive": (adaptive_torn_passive, "apply", True, 0),
    "apply-adaptive-missing-chunk-fallback": (adaptive_missing_chunk, "apply", True, 0),
    "apply-adaptive-corrupt-chunk-fallback": (adaptive_corrupt_chunk, "apply", True, 0),
    "apply-adaptive-bad-index-fallback": (adaptive_bad_index, "apply", True, 0),
}


def fresh(bootloader: str, healthy: bool, auto: int, setup: Setup) -> Harness:
    h = Harness.create(bootloader, auto_rollback_after=auto)
    setup(h, healthy)
    return h


def drive_to_end(h: Harness, *, healthy: bool, rolled_back_ok: bool) -> Phase:
    """Keep operating the box like its operator would until the update is decided."""
    for _ in range(20):
        h.check()
        state = h.box.store.load()
        booted = h.box.boot_env.booted
        running = h.box.slots.read_version(booted) if booted else None
        if state.phase is Phase.SUCCESS and running == str(state.to_version):
            return state.phase
        if state.phase is Phase.ROLLED_BACK and (rolled_back_ok or not healthy):
            if booted is state.target_slot:
                h.reboot()  # the rollback is written; init reboots into the old slot
                continue
            assert running == str(state.from_version), "rolled back, but not to the old version"
            return state.phase
        if state.phase in (Phase.ACTIVATED, Phase.VERIFYING):
            h.reboot()
        elif state.phase is Phase.STAGED:
            h.run("activate")
        else:
            h.run("apply")
    raise AssertionError(f"update undecided after 20 steps: {h.box.store.load()}")


@pytest.mark.parametrize("bootloader", ["grub", "tryboot"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_crash_point(bootloader: str, scenario: str) -> None:
    setup, op, healthy, auto = SCENARIOS[scenario]
    probe = fresh(bootloader, healthy, auto, setup)
    before = probe.box.power.writes
    probe.run(op)
    writes = probe.box.power.writes - before
    assert writes >= 1, f"{op} made no durable write in {scenario}"
    chunked = [w for w in probe.box.power.log[before:] if w.startswith("slot.chunk:")]
    if scenario.startswith("apply-adaptive"):
        # the chunked writer really ran (and, for the faults, the full write after it)
        assert bool(chunked) != scenario.endswith("bad-index-fallback"), scenario
        full = [w for w in probe.box.power.log[before:] if w.startswith("slot.write:")]
        assert bool(full) == scenario.endswith("-fallback"), probe.box.power.log[before:]
    rolled_back_ok = op == "rollback"
    for k in range(writes):
        h = fresh(bootloader, healthy, auto, setup)
        cut = h.run(op, cut_after=k)
        assert cut, f"power cut after {k} of {writes} writes did not hit {op}"
        h.check()
        outcome = drive_to_end(h, healthy=healthy, rolled_back_ok=rolled_back_ok)
        if healthy and not rolled_back_ok:
            assert outcome is Phase.SUCCESS
        TALLY["crash points covered"] += 1
        TALLY[f"crash points covered ({bootloader})"] += 1
        if probe.box.power.log[before + k].startswith("slot.chunk:"):
            TALLY["crash points in the chunked writer"] += 1
    # and without a cut the scenario also ends well
    drive_to_end(probe, healthy=healthy, rolled_back_ok=rolled_back_ok)


@pytest.mark.parametrize("bootloader", ["grub", "tryboot"])
def test_the_scenarios_hold_dozens_of_crash_points(bootloader: str) -> None:
    # Counted here, on its own (no reliance on test order): every durable write
    # of every scenario is one crash point that test_every_crash_point cuts.
    total = 0
    for setup, op, healthy, auto in SCENARIOS.values():
        probe = fresh(bootloader, healthy, auto, setup)
        before = probe.box.power.writes
        probe.run(op)
        total += probe.box.power.writes - before
    assert total >= 24
