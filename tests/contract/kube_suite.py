"""The Kube port's contract: one suite for MemoryKube and KubectlKube.

A subclass overrides the ``world`` fixture with a :class:`KubeWorld`: the
adapter under test plus the knobs that change what the node looks like (for
the memory adapter its fields, for kubectl the fake API server's state).
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pytest

from kubesolo_core.policies import BLOCK_LABEL, PodInfo, Unavailable
from kubesolo_core.ports import Kube

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


class KubeWorld(Protocol):
    """The adapter under test and the node it looks at."""

    kube: Kube

    def set_labels(self, labels: dict[str, str]) -> None: ...

    def set_ready(self, ready: bool) -> None: ...

    def set_pods(self, pods: list[PodInfo]) -> None:
        """Pods as the port reports them (one container each for a real server).

        A phase that is not a Kubernetes pod phase (``CrashLoopBackOff``) is a
        Running pod whose container waits for that reason.
        """

    def set_apiserver_ready(self, ready: bool) -> None: ...

    def go_down(self) -> None:
        """The API server stops answering (connection refused)."""


class KubeContract:
    """Every Kube adapter must pass these."""

    @pytest.fixture
    def world(self) -> KubeWorld:
        raise NotImplementedError("a subclass provides the world")

    def test_labels_include_the_block_label(self, world: KubeWorld) -> None:
        world.set_labels({BLOCK_LABEL: "true", "kubernetes.io/hostname": "edge-1"})
        assert world.kube.node_labels() == {
            BLOCK_LABEL: "true",
            "kubernetes.io/hostname": "edge-1",
        }

    def test_labels_follow_the_node(self, world: KubeWorld) -> None:
        world.set_labels({BLOCK_LABEL: "true"})
        assert BLOCK_LABEL in world.kube.node_labels()  # type: ignore[operator]
        world.set_labels({})
        assert world.kube.node_labels() == {}

    @pytest.mark.parametrize("ready", [True, False])
    def test_node_ready(self, world: KubeWorld, ready: bool) -> None:
        world.set_ready(ready)
        assert world.kube.node_ready() is ready

    def test_running_pods(self, world: KubeWorld) -> None:
        pods = [
            PodInfo(name="coredns-abc", phase="Running", running_since=T0, restarts=0),
            PodInfo(
                name="local-path-provisioner-x",
                phase="Running",
                running_since=T0 + dt.timedelta(minutes=5),
                restarts=3,
            ),
        ]
        world.set_pods(pods)
        got = world.kube.kube_system_pods()
        assert not isinstance(got, Unavailable)
        assert sorted(got, key=lambda p: p.name) == pods

    @pytest.mark.parametrize("phase", ["Pending", "Failed", "Unknown"])
    def test_pod_not_running_has_no_running_since(self, world: KubeWorld, phase: str) -> None:
        world.set_pods([PodInfo(name="coredns-abc", phase=phase, running_since=None, restarts=7)])
        assert world.kube.kube_system_pods() == [
            PodInfo(name="coredns-abc", phase=phase, running_since=None, restarts=7)
        ]

    def test_crash_looping_pod_is_not_held_running(self, world: KubeWorld) -> None:
        # The API says phase Running; what counts is the container crash-looping.
        crashing = PodInfo(name="coredns-abc", phase="CrashLoopBackOff", restarts=5)
        world.set_pods([crashing])
        assert world.kube.kube_system_pods() == [crashing]

    def test_no_pods_is_an_empty_list(self, world: KubeWorld) -> None:
        world.set_pods([])
        assert world.kube.kube_system_pods() == []

    @pytest.mark.parametrize("ready", [True, False])
    def test_apiserver_readiness(self, world: KubeWorld, ready: bool) -> None:
        world.set_apiserver_ready(ready)
        assert world.kube.apiserver_ready() is ready

    def test_down_is_unavailable_never_an_exception(self, world: KubeWorld) -> None:
        world.go_down()
        answers = [
            world.kube.node_labels(),
            world.kube.node_ready(),
            world.kube.kube_system_pods(),
            world.kube.apiserver_ready(),
        ]
        for answer in answers:
            assert isinstance(answer, Unavailable), answer
            assert answer.reason.strip()
