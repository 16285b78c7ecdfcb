"""The HealthProbes contract against the in-memory adapter."""

from __future__ import annotations

import attrs
import pytest

from kubesolo_adapters.fakes import MemoryProbes
from tests.contract.probes_suite import ProbesContract, UrlKind

# What each kind of URL "answers" in memory: the fake only knows statuses.
_STATUS = {"ok": 200, "error": 500, "stall": 504, "refused": 502}


@attrs.define
class MemoryProbesWorld:
    """MemoryProbes' fields are the world."""

    probes: MemoryProbes = attrs.field(factory=MemoryProbes)

    def set_containerd(self, up: bool) -> None:
        self.probes.containerd_ok = up

    def url(self, kind: UrlKind) -> str:
        url = f"http://probe.invalid/{kind}"
        self.probes.url_status[url] = _STATUS[kind]
        return url

    def set_disk(self, ok: bool) -> None:
        self.probes.disk_ok = ok


class TestMemoryProbes(ProbesContract):
    """MemoryProbes honours the HealthProbes contract."""

    @pytest.fixture
    def world(self) -> MemoryProbesWorld:
        return MemoryProbesWorld()
