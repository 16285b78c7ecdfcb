"""The Clock contract against the in-memory clock."""

from __future__ import annotations

import datetime as dt

import pytest

from kubesolo_adapters.fakes import MemoryClock
from tests.contract.clock_suite import ClockContract


class TestMemoryClock(ClockContract):
    """MemoryClock honours the Clock contract."""

    @pytest.fixture
    def clock(self) -> MemoryClock:
        return MemoryClock()

    def test_only_moves_when_told(self, clock: MemoryClock) -> None:
        t0, m0 = clock.now(), clock.monotonic()
        assert (clock.now(), clock.monotonic()) == (t0, m0)
        clock.advance(30)
        assert clock.now() - t0 == dt.timedelta(seconds=30)
        assert clock.monotonic() - m0 == 30
