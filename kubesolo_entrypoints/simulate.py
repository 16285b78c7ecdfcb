"""``kubesolo-update simulate``: random update/boot/crash sequences, invariants checked.

Each run builds a :class:`~kubesolo_adapters.fakes.MemoryBox` (GRUB or
tryboot, chosen by the run's random generator) and plays a random sequence
of what happens to a box in the field: releases published (healthy, sick,
or crashing at boot), ``apply``/``activate``/``healthcheck``/``rollback``,
clean reboots, power cuts after the N-th durable write of an operation, a
flaky network and bit flips on the way to the disk. After every step the
invariants below are checked; a violation is reported with the seed and run
number that reproduce it.

Runs are reproducible: run ``i`` of seed ``S`` uses ``random.Random(f"{S}:{i}")``
and nothing else is random.

The invariants are those of :mod:`kubesolo_core.invariants` (the same code
the unit tier's state machine and crash-point tests use):
committed, verified_boots, state_loads, rollback_recorded, counters,
healthy_commits.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import attrs

from kubesolo_adapters.fakes import BoxDriver
from kubesolo_core.invariants import INVARIANTS

__all__ = ["SimulationReport", "run_simulation"]


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
    driver: BoxDriver
    violations: list[str] = attrs.field(factory=list)

    def check(self) -> None:
        self.violations.extend(f"{self.label}: {v}" for v in self.driver.violations())

    def step(self) -> None:
        rng = self.rng
        driver = self.driver
        box = driver.box
        choice = rng.choices(
            ["publish", "apply", "activate", "reboot", "healthcheck", "rollback", "crash"],
            weights=[3, 4, 3, 4, 2, 1, 1],
        )[0]
        cut = rng.randint(0, 3) if rng.random() < 0.25 else None
        if choice == "publish":
            healthy = rng.random() < 0.7
            bootable = rng.random() < 0.85
            driver.publish(healthy=healthy, bootable=bootable)
            if not bootable:
                driver.tally["crashing releases"] += 1
            elif not healthy:
                driver.tally["sick releases"] += 1
        elif choice == "apply":
            if rng.random() < 0.1:
                box.fetcher.truncate_next = 1
                driver.tally["truncated downloads"] += 1
            if rng.random() < 0.1:
                box.fetcher.fail_next = 1
            if rng.random() < 0.05:
                box.slots.flip_next_write = True
                driver.tally["bit flips"] += 1
            driver.run("apply", cut_after=cut)
            box.slots.flip_next_write = False
            box.fetcher.truncate_next = box.fetcher.fail_next = 0
        elif choice in ("activate", "healthcheck", "rollback"):
            driver.run(choice, cut_after=cut)
        elif choice == "reboot":
            driver.reboot(clean=True)
        else:  # a power cut or a watchdog at a random moment of normal running
            driver.tally["crashes"] += 1
            driver.reboot(clean=False)
        self.check()


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
        driver = BoxDriver.create(bootloader, auto_rollback_after=rng.choice([0, 0, 1, 2, 3]))
        run = _Run(rng=rng, label=f"seed {seed} run {i} ({bootloader})", driver=driver)
        tally[f"{bootloader} runs"] += 1
        for _ in range(rng.randint(5, max_steps)):
            steps += 1
            try:
                run.step()
            except RuntimeError as exc:  # MemoryBox: nothing bootable left
                run.violations.append(f"{run.label}: committed: {exc}")
                break
            except Exception as exc:  # a bug in the agent: report it, keep simulating
                run.violations.append(f"{run.label}: crash: {type(exc).__name__}: {exc}")
                break
            if len(run.violations) > 5:
                break
        checks += driver.tally.pop("invariant checks", 0)
        tally.update(driver.tally)
        violations.extend(run.violations)
    return SimulationReport(
        seed=seed,
        runs=runs,
        steps=steps,
        seconds=time.perf_counter() - started,
        tally=dict(tally),
        invariant_checks=checks,
        violations=tuple(violations),
    )
