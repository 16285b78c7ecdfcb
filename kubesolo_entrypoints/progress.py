"""A one-line progress display on stderr, for ``apply`` on a terminal."""

from __future__ import annotations

import sys
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """A one-line progress display on stderr (only used when stderr is a TTY)."""

    def __init__(self) -> None:
        self.seen: dict[int | None, int] = {}
        self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        self.seen[total] = done
        now = time.monotonic()
        if now - self.last < 0.1 and (total is None or done < total):
            return
        self.last = now
        # Download and write report on the same callback; show the slower one.
        fractions = [d / t for t, d in self.seen.items() if t]
        fraction = min(fractions) if fractions else 0.0
        width = 30
        bar = "#" * int(fraction * width)
        sys.stderr.write(f"\r  [{bar:<{width}}] {fraction:6.1%}  {done / 1048576:8.1f} MiB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.seen:
            sys.stderr.write("\n")
