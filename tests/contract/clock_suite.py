"""The Clock port's contract: one suite for MemoryClock and SystemClock.

A subclass overrides the ``clock`` fixture. The suite sleeps at most a few
tens of milliseconds in all, so it runs against the system clock unchanged.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from kubesolo_core.ports import Clock

STEP = 0.02


class ClockContract:
    """Every Clock adapter must pass these."""

    @pytest.fixture
    def clock(self) -> Clock:
        raise NotImplementedError("a subclass provides the clock")

    def test_now_is_aware_utc(self, clock: Clock) -> None:
        now = clock.now()
        assert now.tzinfo is not None
        assert now.utcoffset() == dt.timedelta(0)

    def test_now_is_a_plausible_time(self, clock: Clock) -> None:
        # Not 1970, not the far future: the stamps go into state.json and logs.
        assert dt.datetime(2020, 1, 1, tzinfo=dt.UTC) < clock.now()
        assert clock.now() < dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

    def test_monotonic_never_goes_back(self, clock: Clock) -> None:
        readings = [clock.monotonic() for _ in range(1000)]
        assert all(b >= a for a, b in itertools.pairwise(readings))

    def test_sleep_advances_monotonic_and_now(self, clock: Clock) -> None:
        m0, t0 = clock.monotonic(), clock.now()
        clock.sleep(STEP)
        assert clock.monotonic() - m0 >= STEP
        # the wall clock may be stepped by NTP, but not by a few ms the wrong way here
        assert clock.now() > t0

    @pytest.mark.parametrize("seconds", [0.0, -1.0])
    def test_sleep_zero_or_negative_returns(self, clock: Clock, seconds: float) -> None:
        m0 = clock.monotonic()
        clock.sleep(seconds)  # a deadline already passed: no error, no wait
        assert 0 <= clock.monotonic() - m0 < 0.5
