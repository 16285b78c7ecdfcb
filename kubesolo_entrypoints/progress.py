"""Progress of long work: one live line on a terminal, a log event now and then otherwise.

apply's download and write: :class:`ProgressBar` on a TTY, :class:`LogProgress`
off one (a CronJob's log, the serial console), so a 20-minute download over a
slow link is never silent. healthcheck's settle wait: :class:`SettleDisplay`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LogProgress", "ProgressBar", "SettleDisplay"]


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
        fraction = _slowest(self.seen)
        width = 30
        bar = "#" * int(fraction * width)
        sys.stderr.write(f"\r  [{bar:<{width}}] {fraction:6.1%}  {done / 1048576:8.1f} MiB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.seen:
            sys.stderr.write("\n")


def _slowest(seen: dict[int | None, int]) -> float:
    # Download and write report on the same callback; the slower one is the truth.
    fractions = [d / t for t, d in seen.items() if t]
    return min(fractions) if fractions else 0.0


class LogProgress:
    """Off a terminal: an ``update.progress`` event at most every ``every`` seconds, and at the end.

    Fields: ``percent`` (of the slower of download and write), ``done_bytes``
    and ``total_bytes`` of the stream that reported last.
    """

    def __init__(
        self,
        events: Callable[..., None],
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.every = every
        self.clock = clock
        self.seen: dict[int | None, int] = {}
        self.last: float | None = None
        self.finished: set[int | None] = set()

    def __call__(self, done: int, total: int | None) -> None:
        self.seen[total] = done
        now = self.clock()
        end = total is not None and done >= total
        if end and total in self.finished:
            return
        if not end and self.last is not None and now - self.last < self.every:
            return
        if self.last is None and not end:
            self.last = now  # the first report comes one interval in, not at byte 0
            return
        self.last = now
        if end:
            self.finished.add(total)
        self.events(
            "update.progress",
            percent=round(100 * _slowest(self.seen), 1),
            done_bytes=done,
            total_bytes=total,
        )


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
