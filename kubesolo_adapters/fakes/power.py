"""One power rail for a simulated box: it counts durable writes and cuts after the N-th."""

from __future__ import annotations

import attrs

__all__ = ["Power", "PowerCut"]


class PowerCut(BaseException):
    """The power went off. A BaseException so that no ``except Exception`` survives it."""


@attrs.define
class Power:
    """Counts durable writes; cuts the power after ``cut_after`` of them."""

    cut_after: int | None = None
    writes: int = 0
    log: list[str] = attrs.field(factory=list)

    def durable(self, what: str) -> None:
        """Called before a durable write; raises PowerCut instead of the write past the budget."""
        if self.cut_after is not None and self.writes >= self.cut_after:
            raise PowerCut(what)
        self.writes += 1
        self.log.append(what)
