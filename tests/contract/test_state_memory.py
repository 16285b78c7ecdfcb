"""The StateStore contract against the in-memory adapter."""

from __future__ import annotations

import attrs
import pytest

from kubesolo_adapters.fakes import MemoryStateStore, PowerCut
from tests.contract.state_suite import StateContract


@attrs.define
class MemoryStateWorld:
    """MemoryStateStore's text is the file; a power cut is the failed save."""

    store: MemoryStateStore = attrs.field(factory=MemoryStateStore)
    name: str = "memory:state.json"

    def write_raw(self, data: bytes) -> None:
        # The fake holds text; latin-1 maps every byte, so no planted byte is lost.
        self.store.text = data.decode("latin-1")

    def read_raw(self) -> bytes | None:
        return None if self.store.text is None else self.store.text.encode("latin-1")

    def kept_aside(self) -> list[bytes]:
        return [t.encode("latin-1") for t in self.store.set_aside]

    def fail_next_save(self) -> type[BaseException]:
        self.store.power.cut_after = self.store.power.writes
        return PowerCut


class TestMemoryStateStore(StateContract):
    """MemoryStateStore honours the StateStore contract."""

    @pytest.fixture
    def world(self) -> MemoryStateWorld:
        return MemoryStateWorld()
