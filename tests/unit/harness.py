"""The unit tier's view of a simulated box: kubesolo_adapters.fakes.BoxDriver, strict.

The invariants live in :mod:`kubesolo_adapters.fakes.simulation` (one implementation
for these tests and ``kubesolo-update simulate``); here a violation raises.
"""

from __future__ import annotations

from collections import Counter

from kubesolo_adapters.fakes import BoxDriver

#: run-wide tallies printed by tests/unit/conftest.py
TALLY: Counter[str] = Counter()


class InvariantViolated(AssertionError):
    pass


class Harness(BoxDriver):
    """A BoxDriver whose ``check`` raises on the first violated invariant."""

    @classmethod
    def create(cls, bootloader: str, *, auto_rollback_after: int = 0) -> Harness:
        driver = BoxDriver.create(bootloader, auto_rollback_after=auto_rollback_after)
        return cls(
            box=driver.box,
            auto_rollback_after=auto_rollback_after,
            known_good=driver.known_good,
            tally=TALLY,
        )

    def check(self) -> None:
        found = self.violations()
        if found:
            raise InvariantViolated("; ".join(found))
