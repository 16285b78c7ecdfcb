"""A stand-in for a Kubernetes API server on 127.0.0.1, for the real kubectl binary.

Not a cluster: a threaded plain-HTTP server that answers the few API paths
:class:`kubesolo_adapters.kubectl.KubectlKube` makes kubectl read, from a
fixture state the test changes between calls. Logged by running kubectl
1.32 against it, ``kubectl get --raw <path>`` requests exactly ``<path>``
(with ``?timeout=<request-timeout>`` appended); no discovery (``/api``,
``/apis``). The kubectl on the CI machine is Google Cloud SDK's dispatcher
(/usr/bin/kubectl -> google-cloud-sdk/bin/kubectl, which runs kubectl.1.27 ..
kubectl.1.33 to match the server): it first asks ``/version`` and caches the
answer under ``$HOME/.kube/cache/http``, so with a fresh or unwritable HOME
every call makes that request too. Every request is recorded in
:attr:`FakeCluster.requests`, so a test notices when kubectl starts asking
for something else.

Served:
* ``/api/v1/nodes/<name>``: a Node with the fixture's labels and Ready condition
  (404 Status for another name);
* ``/api/v1/namespaces/kube-system/pods``: a PodList built from :class:`FakePod`;
* ``/readyz``: ``ok`` (200), or the API server's failure text with
  :attr:`FakeCluster.readyz_status`;
* ``/version``; anything else is a 404 Status, like the real server.

Faults: :attr:`FakeCluster.stall` holds every answer that many seconds (a
hung API server), :attr:`FakeCluster.status_override` answers every path with
that status (401, 403, 500...).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@attrs.define
class FakePod:
    """A kube-system pod: phase, and per container (started_at or None, restarts)."""

    name: str
    phase: str = "Running"
    #: one entry per container: (running since, or None when waiting), restart count
    containers: list[tuple[dt.datetime | None, int]] = attrs.field(factory=list)
    #: why a container that is not running waits
    waiting_reason: str = "CrashLoopBackOff"

    def document(self) -> dict[str, Any]:
        """The pod as the API serves it (the fields kubectl users read)."""
        statuses = []
        for i, (started, restarts) in enumerate(self.containers):
            state: dict[str, Any] = (
                {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
                if started is not None
                else {"waiting": {"reason": self.waiting_reason}}
            )
            statuses.append(
                {
                    "name": f"c{i}",
                    "ready": started is not None,
                    "restartCount": restarts,
                    "state": state,
                }
            )
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": "kube-system"},
            "status": {"phase": self.phase, "containerStatuses": statuses},
        }


@attrs.define
class FakeCluster:
    """The state the fake API server answers from; change it between calls."""

    node_name: str = "kubesolo-node"
    labels: dict[str, str] = attrs.field(factory=dict)
    ready: bool = True
    pods: list[FakePod] = attrs.field(factory=list)
    readyz_status: int = 200
    stall: float = 0.0
    status_override: int | None = None
    requests: list[str] = attrs.field(factory=list)
    #: set at shutdown so stalled handlers return at once
    stopping: threading.Event = attrs.field(factory=threading.Event)

    def node(self) -> dict[str, Any]:
        """The Node document."""
        return {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"name": self.node_name, "labels": dict(self.labels)},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {
                        "type": "Ready",
                        "status": "True" if self.ready else "False",
                        "reason": "KubeletReady" if self.ready else "KubeletNotReady",
                    },
                ]
            },
        }


def _status(code: int, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": _REASONS.get(code, ""),
            "code": code,
        }
    ).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    cluster: FakeCluster  # set on a subclass per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is FakeCluster.requests

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        c = self.cluster
        c.requests.append(self.path)
        if c.stall > 0:
            c.stopping.wait(c.stall)  # bounded; returns at once at shutdown
            if c.stopping.is_set():
                return
        path = urllib.parse.urlsplit(self.path).path
        if c.status_override is not None:
            code = c.status_override
            self._send(code, _status(code, f"injected {code}"))
        elif path == "/version":
            self._send(
                200,
                json.dumps({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"}).encode(),
            )
        elif path == f"/api/v1/nodes/{c.node_name}":
            self._send(200, json.dumps(c.node()).encode())
        elif path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            self._send(404, _status(404, f'nodes "{name}" not found'))
        elif path == "/api/v1/namespaces/kube-system/pods":
            doc = {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": [p.document() for p in c.pods],
            }
            self._send(200, json.dumps(doc).encode())
        elif path == "/readyz":
            if c.readyz_status == 200:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            else:
                text = b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
                self._send(c.readyz_status, text, "text/plain; charset=utf-8")
        else:
            self._send(404, _status(404, "the server could not find the requested resource"))


@attrs.define
class FakeApiServer:
    """A running fake API server: its URL, its state, and a kubeconfig pointing at it."""

    cluster: FakeCluster
    url: str
    kubeconfig: Path


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig with one cluster at ``server`` and an anonymous user."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "anonymous"}}],
        "current-context": "fake",
    }
    # JSON is YAML: kubectl reads it as is.
    path.write_text(json.dumps(doc, indent=2))
    return path


@contextmanager
def fake_api(directory: Path, cluster: FakeCluster | None = None) -> Iterator[FakeApiServer]:
    """Serve ``cluster`` on 127.0.0.1 (a free port) until the block ends."""
    cluster = cluster or FakeCluster()
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield FakeApiServer(
            cluster=cluster, url=url, kubeconfig=write_kubeconfig(directory / "kubeconfig", url)
        )
    finally:
        cluster.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
