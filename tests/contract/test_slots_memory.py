"""The SlotStore contract against the in-memory fake (kubesolo_adapters.fakes)."""

from __future__ import annotations

import pytest

from kubesolo_adapters.fakes import MemorySlotStore, make_image
from kubesolo_core.slots import Slot
from tests.contract.slots_suite import SlotRig, SlotStoreContract

CAPACITY = 8 << 20


class TestMemorySlotStore(SlotStoreContract):
    @pytest.fixture
    def rig(self) -> SlotRig:
        store = MemorySlotStore(
            capacities={Slot.A: CAPACITY, Slot.B: CAPACITY},
            contents={Slot.A: make_image("1.0.0", size=64 << 10)},
        )
        missing = MemorySlotStore(capacities={Slot.A: CAPACITY, Slot.B: None})
        return SlotRig(
            store=store,
            capacity=CAPACITY,
            image=lambda _slot, version: make_image(version, size=64 << 10),
            missing=missing,
            raw=lambda slot, n: store.contents.get(slot, b"")[:n],
        )
