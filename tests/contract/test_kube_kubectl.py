"""The Kube contract against the real kubectl binary and a stand-in API server.

tests/contract/fakeapi.py is a stand-in for a cluster: it serves, on
127.0.0.1, the few API paths kubectl reads for KubectlKube. kubectl itself is
the real binary (/usr/bin/kubectl on the CI machine).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from kubesolo_adapters.kubectl import GRACE, KubectlKube
from kubesolo_core.policies import PodInfo, Unavailable
from tests.contract.fakeapi import FakeApiServer, FakeCluster, FakePod, fake_api
from tests.contract.kube_suite import T0, KubeContract
from tests.tools import require_tool

NODE = "edge-1"
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


@attrs.define
class KubectlWorld:
    """A fake API server whose state the test changes, and KubectlKube pointed at it."""

    kube: KubectlKube
    api: FakeApiServer
    stack: contextlib.ExitStack

    @property
    def cluster(self) -> FakeCluster:
        return self.api.cluster

    def set_labels(self, labels: dict[str, str]) -> None:
        self.cluster.labels = dict(labels)

    def set_ready(self, ready: bool) -> None:
        self.cluster.ready = ready

    def set_pods(self, pods: list[PodInfo]) -> None:
        fakes = []
        for p in pods:
            if p.phase in POD_PHASES:
                since = p.running_since if p.phase == "Running" else None
                fakes.append(FakePod(name=p.name, phase=p.phase, containers=[(since, p.restarts)]))
            else:  # a container reason: the pod runs, its container waits
                fakes.append(
                    FakePod(
                        name=p.name,
                        phase="Running",
                        containers=[(None, p.restarts)],
                        waiting_reason=p.phase,
                    )
                )
        self.cluster.pods = fakes

    def set_apiserver_ready(self, ready: bool) -> None:
        self.cluster.readyz_status = 200 if ready else 500

    def go_down(self) -> None:
        # Closing the server leaves the kubeconfig pointing at a closed port.
        self.stack.close()


@pytest.fixture
def kubectl_world(tmp_path: Path) -> Iterator[KubectlWorld]:
    require_tool("kubectl")
    # kubectl may write a cache under $HOME; keep it inside the test's tmp dir.
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
        mp.setenv("HOME", str(tmp_path / "home"))
        mp.delenv("KUBECONFIG", raising=False)
        api = stack.enter_context(fake_api(tmp_path, FakeCluster(node_name=NODE)))
        kube = KubectlKube(node_name=NODE, kubeconfig=api.kubeconfig, timeout=5.0)
        yield KubectlWorld(kube=kube, api=api, stack=stack)


class TestKubectlKube(KubeContract):
    """KubectlKube, through the real kubectl, honours the Kube contract."""

    @pytest.fixture
    def world(self, kubectl_world: KubectlWorld) -> KubectlWorld:
        return kubectl_world


class TestKubectlOnly:
    """What only the real adapter has: files, binaries, timeouts, the wire."""

    def test_kubectl_asks_exactly_these_paths(self, kubectl_world: KubectlWorld) -> None:
        w = kubectl_world
        w.kube.node_labels()
        w.kube.node_ready()
        w.kube.kube_system_pods()
        w.kube.apiserver_ready()
        paths = [r.split("?", 1)[0] for r in w.cluster.requests]
        # Google Cloud SDK's kubectl dispatcher asks /version once per cache dir
        # to pick its kubectl.1.NN; anything else asked is a change to hear about.
        assert paths.count("/version") <= 1
        assert [p for p in paths if p != "/version"] == [
            f"/api/v1/nodes/{NODE}",
            f"/api/v1/nodes/{NODE}",
            "/api/v1/namespaces/kube-system/pods",
            "/readyz",
        ]
        # --request-timeout reaches the server as ?timeout=
        assert all(r.endswith("?timeout=5s") for r in w.cluster.requests)

    def test_latest_container_start_and_summed_restarts(self, kubectl_world: KubectlWorld) -> None:
        later = T0 + dt.timedelta(seconds=90)
        kubectl_world.cluster.pods = [
            FakePod(name="kube-proxy", containers=[(T0, 1), (later, 2)]),
            FakePod(name="half-up", containers=[(T0, 0), (None, 4)]),
        ]
        got = kubectl_world.kube.kube_system_pods()
        assert got == [
            PodInfo(name="kube-proxy", phase="Running", running_since=later, restarts=3),
            # phase Running, one container crash-looping: not held running
            PodInfo(name="half-up", phase="CrashLoopBackOff", running_since=None, restarts=4),
        ]

    def test_missing_kubeconfig_is_unavailable(self, tmp_path: Path) -> None:
        require_tool("kubectl")
        missing = tmp_path / "no-such-kubeconfig"
        kube = KubectlKube(node_name=NODE, kubeconfig=missing)
        for answer in (kube.node_labels(), kube.node_ready(), kube.apiserver_ready()):
            assert isinstance(answer, Unavailable)
            assert str(missing) in answer.reason

    def test_missing_kubectl_is_unavailable(self, kubectl_world: KubectlWorld) -> None:
        kube = attrs.evolve(kubectl_world.kube, kubectl="/nonexistent/kubectl")
        answer = kube.kube_system_pods()
        assert isinstance(answer, Unavailable)
        assert "/nonexistent/kubectl" in answer.reason
        assert kubectl_world.cluster.requests == []

    def test_connection_refused_names_the_server(self, kubectl_world: KubectlWorld) -> None:
        url = kubectl_world.api.url
        kubectl_world.go_down()
        answer = kubectl_world.kube.node_labels()
        assert isinstance(answer, Unavailable)
        assert url.removeprefix("http://") in answer.reason
        assert "refused" in answer.reason

    def test_slow_server_is_unavailable_in_bounded_time(self, kubectl_world: KubectlWorld) -> None:
        kubectl_world.cluster.stall = 30.0
        kube = attrs.evolve(kubectl_world.kube, timeout=1.0)
        t = time.monotonic()
        answer = kube.apiserver_ready()
        took = time.monotonic() - t
        assert isinstance(answer, Unavailable)
        assert "request timeout 1s reached" in answer.reason
        assert took < 1.0 + GRACE

    def test_hung_kubectl_is_killed_with_its_children(
        self, kubectl_world: KubectlWorld, tmp_path: Path
    ) -> None:
        # A wrapper that ignores --request-timeout and leaves a child holding
        # our pipes: the adapter's own deadline must still end it, whole.
        pidfile = tmp_path / "child.pid"
        script = tmp_path / "hung-kubectl"
        script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nsleep 60\n")
        script.chmod(0o755)
        kube = attrs.evolve(kubectl_world.kube, kubectl=str(script), timeout=0.5, grace=0.5)
        t = time.monotonic()
        answer = kube.apiserver_ready()
        assert time.monotonic() - t < 3.0
        assert isinstance(answer, Unavailable)
        assert "no answer within 1s (killed)" in answer.reason
        child = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            # reaped by init once killed; a zombie still has a /proc entry briefly
            stat = Path(f"/proc/{child}/stat")
            with contextlib.suppress(OSError):
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)
        alive = Path(f"/proc/{child}/stat")
        with contextlib.suppress(OSError):
            assert alive.read_text().rsplit(")", 1)[1].split()[0] == "Z"

    def test_a_prefetched_node_query_answers_the_next_read_once(
        self, kubectl_world: KubectlWorld
    ) -> None:
        w = kubectl_world
        w.set_labels({"kubesolo.io/updates": "allowed"})
        node = f"/api/v1/nodes/{NODE}"

        def asked() -> int:
            return [r.split("?", 1)[0] for r in w.cluster.requests].count(node)

        w.kube.prefetch_node()
        w.kube.prefetch_node()  # a second hint while one runs starts nothing more
        deadline = time.monotonic() + 10
        while asked() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asked() == 1, "the query did not start ahead of the read"
        assert w.kube.node_labels() == {"kubesolo.io/updates": "allowed"}
        assert asked() == 1, "the read asked again instead of taking the answer"
        # the answer serves one read: the next one asks the API afresh
        w.set_labels({"kubesolo.io/updates": "blocked"})
        assert w.kube.node_labels() == {"kubesolo.io/updates": "blocked"}
        assert asked() == 2

    def test_a_prefetched_query_never_taken_is_killed_at_exit(self, tmp_path: Path) -> None:
        # apply may end before preflight (the release could not be fetched): the
        # kubectl started ahead must not outlive the agent's process.
        pidfile = tmp_path / "kubectl.pid"
        script = tmp_path / "slow-kubectl"
        script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
        script.chmod(0o755)
        code = (
            "import pathlib, sys, time\n"
            "from kubesolo_adapters.kubectl import KubectlKube\n"
            f"kube = KubectlKube(node_name='n', kubectl={str(script)!r}, timeout=30.0)\n"
            "kube.prefetch_node()\n"
            "deadline = time.monotonic() + 10\n"
            f"while not pathlib.Path({str(pidfile)!r}).exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "time.sleep(0.1)\n"
        )
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code], timeout=30, check=True)
        assert proc.returncode == 0
        assert time.monotonic() - t < 15, "exit waited for the query"
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _running(pid), f"kubectl {pid} outlived the agent"

    def test_unknown_node_is_unavailable(self, kubectl_world: KubectlWorld) -> None:
        kube = attrs.evolve(kubectl_world.kube, node_name="not-this-one")
        answer = kube.node_labels()
        assert isinstance(answer, Unavailable)
        assert "not-this-one" in answer.reason
        assert "NotFound" in answer.reason

    @pytest.mark.parametrize("status", [401, 403])
    def test_refused_credentials_are_unavailable_not_unready(
        self, kubectl_world: KubectlWorld, status: int
    ) -> None:
        kubectl_world.cluster.status_override = status
        assert isinstance(kubectl_world.kube.apiserver_ready(), Unavailable)
        assert isinstance(kubectl_world.kube.node_ready(), Unavailable)

    def test_readyz_503_is_not_ready(self, kubectl_world: KubectlWorld) -> None:
        kubectl_world.cluster.readyz_status = 503
        assert kubectl_world.kube.apiserver_ready() is False

    def test_unparseable_output_is_unavailable(self, kubectl_world: KubectlWorld) -> None:
        # /bin/echo stands in for a kubectl that prints something else than JSON.
        kube = attrs.evolve(kubectl_world.kube, kubectl="/bin/echo")
        for answer in (kube.node_labels(), kube.kube_system_pods(), kube.apiserver_ready()):
            assert isinstance(answer, Unavailable)
            assert "not JSON" in answer.reason or "not 'ok'" in answer.reason

    def test_default_kubeconfig_comes_from_the_environment(
        self, kubectl_world: KubectlWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("KUBECONFIG", str(kubectl_world.api.kubeconfig))
        kubectl_world.cluster.labels = {"a": "b"}
        kube = KubectlKube(node_name=NODE)
        assert kube.node_labels() == {"a": "b"}

    def test_runs_without_home(self, kubectl_world: KubectlWorld, tmp_path: Path) -> None:
        # An init script may run with no HOME at all. (Without HOME the kubectl
        # dispatcher caches under ./.kube: run from the test's own folder.)
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("HOME")
            mp.chdir(tmp_path)
            assert "HOME" not in os.environ
            assert kubectl_world.kube.apiserver_ready() is True


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan is reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
