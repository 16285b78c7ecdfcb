"""One-line progress displays on stderr, on a terminal: apply's download, healthcheck's wait."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ProgressBar", "SettleDisplay"]


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


class SettleDisplay:
    """On a terminal: the health check's settle wait as one live line on stderr.

    Wraps the agent's event sink: ``health.waiting`` rounds rewrite one line
    (which checks still fail, why, and the seconds left); every other event
    goes to the sink as before, after the line is ended.
    """

    def __init__(self, inner: Callable[..., None]) -> None:
        self.inner = inner
        self.showing = False

    def __call__(self, event: str, **fields: Any) -> None:
        if event != "health.waiting":
            self.close()
            self.inner(event, **fields)
            return
        names = list(fields.get("failing", []))
        reasons = fields.get("reasons") or {}
        why = str(reasons.get(names[0], "")) if names else ""
        if len(why) > 70:
            why = why[:67] + "..."
        line = (
            f"waiting for the node ({fields.get('seconds_left', '?')} s left): "
            f"{', '.join(names)} failing" + (f" ({names[0]}: {why})" if why else "")
        )
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()
        self.showing = True

    def close(self) -> None:
        if self.showing:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.showing = False
