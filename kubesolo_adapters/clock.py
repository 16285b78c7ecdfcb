"""The system clock: wall-clock UTC for timestamps, the monotonic clock for durations.

Timestamps (``started_at``, ``updated_at``, the ``.corrupt-`` suffix of a
set-aside state file) come from :meth:`SystemClock.now`; anything that
measures a span (settle time, timeouts, back-off) uses
:meth:`SystemClock.monotonic`, which an NTP step at boot cannot move back.
An edge box often boots with a wrong wall clock and fixes it minutes later.
"""

from __future__ import annotations

import datetime as dt
import time

import attrs

__all__ = ["SystemClock"]


@attrs.define
class SystemClock:
    """The Clock port over the operating system's clocks."""

    def now(self) -> dt.datetime:
        """Wall-clock time, timezone-aware UTC."""
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a negative span waits nothing (like the memory clock)."""
        # time.sleep raises ValueError for a negative span; a deadline that has
        # already passed is an ordinary case for a caller computing "time left".
        time.sleep(max(seconds, 0.0))
