"""Fakes that ship with the package: every port in memory, a whole box, the simulator.

Library users test their provisioning code against them; the simulator and
the unit tier run on them; tests/contract holds each to the same suite as the
real adapter, so they stay faithful. Nothing here touches the machine.
"""

from kubesolo_adapters.fakes.box import SERVER, MemoryBox
from kubesolo_adapters.fakes.images import image_meta, make_image
from kubesolo_adapters.fakes.memory import (
    MemoryBootEnv,
    MemoryClock,
    MemoryFetcher,
    MemoryKube,
    MemoryProbes,
    MemorySlotStore,
    MemoryStateStore,
)
from kubesolo_adapters.fakes.power import Power, PowerCut
from kubesolo_adapters.fakes.simulation import BoxDriver, observe

__all__ = [
    "SERVER",
    "BoxDriver",
    "MemoryBootEnv",
    "MemoryBox",
    "MemoryClock",
    "MemoryFetcher",
    "MemoryKube",
    "MemoryProbes",
    "MemorySlotStore",
    "MemoryStateStore",
    "Power",
    "PowerCut",
    "image_meta",
    "make_image",
    "observe",
]
