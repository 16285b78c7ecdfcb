"""The HealthProbes port's contract: one suite for MemoryProbes and LocalProbes.

A subclass overrides the ``world`` fixture with a :class:`ProbesWorld`: the
adapter under test plus knobs for containerd, the probe URL and the disk.
"""

from __future__ import annotations

from typing import Literal, Protocol

import pytest

from kubesolo_core.ports import HealthProbes

UrlKind = Literal["ok", "error", "stall", "refused"]


class ProbesWorld(Protocol):
    """The adapter under test and the box it probes."""

    probes: HealthProbes

    def set_containerd(self, up: bool) -> None:
        """containerd serving on its socket, or not there at all."""

    def url(self, kind: UrlKind) -> str:
        """A URL that answers 200, answers 500, stalls past the timeout, or refuses."""

    def set_disk(self, ok: bool) -> None:
        """The data dir writable, or broken (for the real adapter: not a directory)."""


class ProbesContract:
    """Every HealthProbes adapter must pass these."""

    @pytest.fixture
    def world(self) -> ProbesWorld:
        raise NotImplementedError("a subclass provides the world")

    def test_containerd_up(self, world: ProbesWorld) -> None:
        world.set_containerd(True)
        assert world.probes.containerd().ok

    def test_containerd_absent(self, world: ProbesWorld) -> None:
        world.set_containerd(False)
        result = world.probes.containerd()
        assert not result.ok
        assert "containerd" in result.reason

    def test_containerd_comes_back(self, world: ProbesWorld) -> None:
        world.set_containerd(False)
        assert not world.probes.containerd().ok
        world.set_containerd(True)
        assert world.probes.containerd().ok

    def test_probe_url_200_passes(self, world: ProbesWorld) -> None:
        result = world.probes.probe_url(world.url("ok"))
        assert result.ok, result.reason
        assert result.reason == ""

    @pytest.mark.parametrize("kind", ["error", "stall", "refused"])
    def test_probe_url_failure_names_the_url(self, world: ProbesWorld, kind: UrlKind) -> None:
        url = world.url(kind)
        result = world.probes.probe_url(url)
        assert not result.ok
        assert url in result.reason

    def test_disk_writable(self, world: ProbesWorld) -> None:
        world.set_disk(True)
        result = world.probes.disk_writable()
        assert result.ok, result.reason

    def test_disk_broken(self, world: ProbesWorld) -> None:
        world.set_disk(False)
        result = world.probes.disk_writable()
        assert not result.ok
        assert result.reason.strip()
