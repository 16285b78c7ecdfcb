"""The Kube contract against the in-memory adapter."""

from __future__ import annotations

import attrs
import pytest

from kubesolo_adapters.fakes import MemoryKube
from kubesolo_core.policies import PodInfo
from tests.contract.kube_suite import KubeContract


@attrs.define
class MemoryKubeWorld:
    """MemoryKube's fields are the world."""

    kube: MemoryKube = attrs.field(factory=MemoryKube)

    def set_labels(self, labels: dict[str, str]) -> None:
        self.kube.labels = dict(labels)

    def set_ready(self, ready: bool) -> None:
        self.kube.ready = ready

    def set_pods(self, pods: list[PodInfo]) -> None:
        self.kube.pods = list(pods)

    def set_apiserver_ready(self, ready: bool) -> None:
        self.kube.apiserver = ready

    def go_down(self) -> None:
        self.kube.unavailable = "API server down (injected)"


class TestMemoryKube(KubeContract):
    """MemoryKube honours the Kube contract."""

    @pytest.fixture
    def world(self) -> MemoryKubeWorld:
        return MemoryKubeWorld()
