"""``kubesolo-update simulate``: random update/boot/crash sequences, invariants checked.

Each run builds a :class:`~kubesolo_adapters.memory.MemoryBox` (GRUB or
tryboot, chosen by the run's random generator) and plays a random sequence
of what happens to a box in the field: releases published (healthy, sick,
or crashing at boot), ``apply``/``activate``/``healthcheck``/``rollback``,
clean reboots, power cuts after the N-th durable write of an operation, a
flaky network and bit flips on the way to the disk. After every step the
invariants below are checked; a violation is reported with the seed and run
number that reproduce it.

Runs are reproducible: run ``i`` of seed ``S`` uses ``random.Random(f"{S}:{i}")``
and nothing else is random.

The invariants (:func:`check_invariants`, importable by tests):

1. ``committed``: the bootloader's committed slot holds a verified image that boots;
2. ``verified_boots``: the box never tries to boot a slot whose content is not
   a verified image;
3. ``state_loads``: the state always loads;
4. ``rollback_recorded``: a rollback by the bootloader ends as ``rolled_back``
   on the previous slot;
5. ``counters``: the boot counter, attempt count and health-failure count
   stay in range.

"Verified" is judged by content: the exact bytes of an image that was
published (or the factory image). The agent's read-back check is the only
thing that makes a slot trialable, so a torn write or a flipped bit that got
past it shows up as a boot of unverified content.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import attrs

from kubesolo_adapters.memory import MemoryBox, PowerCut
from kubesolo_core.bootmodel import TRIAL_BOOTS
from kubesolo_core.errors import KubesoloError
from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, UpdateState
from kubesolo_core.services import HealthSettings

INVARIANTS = ("committed", "verified_boots", "state_loads", "rollback_recorded", "counters")

#: upper bound of failed health checks counted in one trial (the simulator's
#: init reboots after each failure and GRUB allows three trial boots, tryboot
#: one; a manual healthcheck may add a few more)
MAX_FAILURES = 64


def check_invariants(
    box: MemoryBox[Any],
    known_good: set[bytes],
    *,
    boots_since: int = 0,
    before: UpdateState | None = None,
) -> list[str]:
    """The invariants that hold for ``box`` now; a list of violations (empty = all hold).

    ``known_good`` holds every verified image's bytes; ``boots_since`` is the
    index in ``box.boot_log`` from which boots are new; ``before`` is the
    state before the last reboot + healthcheck (for invariant 4), or None.
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
    # 2: every boot attempt picked verified content
    for slot, _ok in box.boot_log[boots_since:]:
        if box.slots.contents.get(slot) not in known_good:
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
            and state.phase is not Phase.ROLLED_BACK
        ):
            bad.append(
                f"rollback_recorded: back on slot {old.value} after a trial of "
                f"{before.target_slot.value}, but the state says {state.phase.value}"
            )
    # 5: counters in range
    if view.boot_counter is not None and not 0 <= view.boot_counter <= TRIAL_BOOTS:
        bad.append(f"counters: boot_counter {view.boot_counter} out of 0..{TRIAL_BOOTS}")
    raw_counter = view.raw.get("boot_counter")
    if raw_counter is not None and raw_counter not in {str(n) for n in range(TRIAL_BOOTS + 1)}:
        bad.append(f"counters: the env holds boot_counter={raw_counter!r}")
    if state is not None:
        if state.attempt_count < 0:
            bad.append(f"counters: attempt_count {state.attempt_count} < 0")
        if not 0 <= state.health_check_failures <= MAX_FAILURES:
            bad.append(f"counters: health_check_failures {state.health_check_failures}")
    return bad


@attrs.frozen(kw_only=True)
class SimulationReport:
    """What a simulation did and found."""

    seed: int
    runs: int
    steps: int
    seconds: float
    tally: dict[str, int]
    invariant_checks: int
    violations: tuple[str, ...]

    @property
    def per_second(self) -> float:
        """Sequences per second."""
        return self.runs / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        """``simulate --json``."""
        return {
            "seed": self.seed,
            "runs": self.runs,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "sequences_per_second": round(self.per_second, 1),
            "invariants": list(INVARIANTS),
            "invariant_checks": self.invariant_checks,
            "tally": dict(sorted(self.tally.items())),
            "violations": list(self.violations),
            "ok": not self.violations,
        }

    def text(self) -> str:
        """The human report."""
        lines = [
            (
                f"simulated {self.runs} sequences ({self.steps} steps) with seed {self.seed} "
                f"in {self.seconds:.2f}s: {self.per_second:.0f} sequences/s"
            ),
            f"invariants ({', '.join(INVARIANTS)}) checked {self.invariant_checks} times",
            "events: " + ", ".join(f"{k} {v}" for k, v in sorted(self.tally.items())),
        ]
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}):")
            lines.extend(f"  {v}" for v in self.violations[:20])
        else:
            lines.append("no violations")
        return "\n".join(lines)


@attrs.define
class _Run:
    """One random sequence on one box."""

    rng: random.Random
    label: str
    box: MemoryBox[Any]
    auto_rollback_after: int
    known: set[bytes] = attrs.field(factory=set)
    tally: Counter[str] = attrs.field(factory=Counter)
    violations: list[str] = attrs.field(factory=list)
    checks: int = 0
    next_version: int = 1

    def agent(self) -> Any:
        return self.box.agent(
            HealthSettings(
                kube_system_settle=0, settle_timeout=0, auto_rollback_after=self.auto_rollback_after
            )
        )

    def check(self, *, boots_since: int, before: UpdateState | None = None) -> None:
        self.checks += 1
        for v in check_invariants(self.box, self.known, boots_since=boots_since, before=before):
            self.violations.append(f"{self.label}: {v}")

    def _state(self) -> UpdateState | None:
        try:
            return self.box.store.load()
        except KubesoloError:
            return None

    def op(self, name: str, *, cut: int | None) -> None:
        """Run an agent operation, maybe cutting the power after ``cut`` more writes."""
        box = self.box
        box.power.cut_after = None if cut is None else box.power.writes + cut
        self.tally[name] += 1
        try:
            getattr(self.agent(), name)()
        except PowerCut:
            self.tally["power cuts"] += 1
            box.power.cut_after = None
            self.reboot(clean=False)
            return
        except KubesoloError:
            self.tally[f"{name} refused or failed"] += 1
        finally:
            box.power.cut_after = None

    def reboot(self, *, clean: bool) -> None:
        """Reboot, then run the health check as init does."""
        box = self.box
        since = len(box.boot_log)
        before = self._state()
        self.tally["reboots"] += 1
        try:
            box.reboot(clean=clean)
        except RuntimeError as exc:  # MemoryBox: nothing bootable
            self.violations.append(f"{self.label}: committed: {exc}")
            raise
        self.tally["boots"] += len(box.boot_log) - since
        self.tally["healthcheck"] += 1
        try:
            self.agent().healthcheck()
        except KubesoloError:
            self.tally["healthcheck failed"] += 1
        after = self._state()
        if (
            before is not None
            and after is not None
            and after.phase is Phase.ROLLED_BACK
            and before.phase in POST_ACTIVATION
        ):
            self.tally["rollbacks"] += 1
        self.check(boots_since=since, before=before)

    def step(self) -> None:
        rng = self.rng
        box = self.box
        choice = rng.choices(
            ["publish", "apply", "activate", "reboot", "healthcheck", "rollback", "crash"],
            weights=[3, 4, 3, 4, 2, 1, 1],
        )[0]
        cut = rng.randint(0, 3) if rng.random() < 0.25 else None
        if choice == "publish":
            version = f"1.{self.next_version}.0"
            self.next_version += 1
            healthy = rng.random() < 0.7
            bootable = rng.random() < 0.85
            self.known.add(box.publish(version, healthy=healthy, bootable=bootable))
            self.tally["releases"] += 1
            if not bootable:
                self.tally["crashing releases"] += 1
            elif not healthy:
                self.tally["sick releases"] += 1
        elif choice == "apply":
            if rng.random() < 0.1:
                box.fetcher.truncate_next = 1
                self.tally["truncated downloads"] += 1
            if rng.random() < 0.1:
                box.fetcher.fail_next = 1
            if rng.random() < 0.05:
                box.slots.flip_next_write = True
                self.tally["bit flips"] += 1
            self.op("apply", cut=cut)
            box.slots.flip_next_write = False
            box.fetcher.truncate_next = box.fetcher.fail_next = 0
        elif choice in ("activate", "healthcheck", "rollback"):
            self.op(choice, cut=cut)
        elif choice == "reboot":
            self.reboot(clean=True)
        else:  # a power cut or a watchdog at a random moment of normal running
            self.tally["crashes"] += 1
            self.reboot(clean=False)
        self.check(boots_since=len(box.boot_log))


def run_simulation(*, runs: int = 200, seed: int = 0, max_steps: int = 30) -> SimulationReport:
    """Run ``runs`` random sequences (bounded: at most ``max_steps`` steps each)."""
    started = time.perf_counter()
    tally: Counter[str] = Counter()
    violations: list[str] = []
    checks = 0
    steps = 0
    for i in range(runs):
        rng = random.Random(f"{seed}:{i}")  # noqa: S311  (reproducible on purpose)
        bootloader = rng.choice(["grub", "tryboot"])
        box = MemoryBox.create(bootloader)
        run = _Run(
            rng=rng,
            label=f"seed {seed} run {i} ({bootloader})",
            box=box,
            auto_rollback_after=rng.choice([0, 0, 1, 2, 3]),
        )
        run.known.update(c for c in box.slots.contents.values())
        tally[f"{bootloader} runs"] += 1
        for _ in range(rng.randint(5, max_steps)):
            steps += 1
            try:
                run.step()
            except RuntimeError:
                break  # bricked: already recorded
            except Exception as exc:  # a bug in the agent: report it, keep simulating
                run.violations.append(f"{run.label}: crash: {type(exc).__name__}: {exc}")
                break
            if len(run.violations) > 5:
                break
        tally.update(run.tally)
        violations.extend(run.violations)
        checks += run.checks
    return SimulationReport(
        seed=seed,
        runs=runs,
        steps=steps,
        seconds=time.perf_counter() - started,
        tally=dict(tally),
        invariant_checks=checks,
        violations=tuple(violations),
    )
