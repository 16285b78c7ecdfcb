"""The Clock contract against the system clock."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from kubesolo_adapters.clock import SystemClock
from tests.contract.clock_suite import ClockContract


class TestSystemClock(ClockContract):
    """SystemClock honours the Clock contract."""

    @pytest.fixture
    def clock(self) -> SystemClock:
        return SystemClock()

    def test_now_is_the_system_time(self, clock: SystemClock) -> None:
        assert abs(clock.now().timestamp() - time.time()) < 1.0
        assert clock.now().tzinfo is dt.UTC

    def test_sleep_really_waits(self, clock: SystemClock) -> None:
        start = time.monotonic()
        clock.sleep(0.05)
        assert time.monotonic() - start >= 0.05
