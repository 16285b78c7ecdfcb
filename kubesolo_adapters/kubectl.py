"""The Kube port through the kubectl binary.

Every question is one ``kubectl get --raw <API path>`` (argument lists, never a
shell), with ``--kubeconfig`` when one is configured and ``--request-timeout``;
the JSON it prints is parsed here. ``--raw`` rather than ``get node -o json``
on purpose: it is one HTTP request with no API discovery (``get node`` first
reads ``/api`` and ``/apis``, retrying five times against a server that
answers them badly, and wants a discovery cache under ``$HOME/.kube``). An
init script may run with no HOME, on a read-only root; ``--raw`` works there.
(Google Cloud SDK's kubectl dispatcher also asks ``/version`` to pick the
matching kubectl, and caches it when HOME is writable.) The paths read are:

* ``/api/v1/nodes/<node>``: labels and the Ready condition;
* ``/api/v1/namespaces/kube-system/pods``: phase, restarts, container start times;
* ``/readyz``: API server readiness.

Anything that prevents an answer is an :class:`Unavailable` value with the
reason, never an exception: no kubectl binary, no kubeconfig file, connection
refused, timeout (the subprocess is killed at ``timeout`` + a grace period),
credentials refused, the node not found, output that is not the expected JSON.
The preflight treats Unavailable as "bypass the label check"; the health check
treats it as a failed check. ``/readyz`` answering with an error status (the
server is up but not ready) is ``False``, not Unavailable.

With ``kubeconfig=None`` kubectl finds its own configuration (``$KUBECONFIG``,
``~/.kube/config``, or the in-cluster service account when run in a pod).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from kubesolo_core.policies import PodInfo, Unavailable

__all__ = ["KubectlKube"]

#: extra seconds the kubectl process gets beyond its request timeout (start-up, exit)
GRACE = 5.0
#: at most this much of kubectl's stderr goes into a reason
REASON_CHARS = 300


class _Answer:
    """What one kubectl run gave: its stdout, or why there is none."""

    def __init__(self, *, stdout: str = "", http_error: str = "", unavailable: str = "") -> None:
        self.stdout = stdout
        #: the server answered with an error status (kubectl's "Error from server")
        self.http_error = http_error
        self.unavailable = unavailable


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


Started = Callable[["subprocess.Popen[str]"], None]


class _Ahead:
    """One node query run on a thread; its kubectl is killed if the process ends first."""

    def __init__(self, ask: Callable[[Started], dict[str, Any] | Unavailable]) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._answer: dict[str, Any] | Unavailable | None = None
        self._thread = threading.Thread(
            target=self._work, args=(ask,), name="kubesolo-kubectl-ahead", daemon=True
        )
        atexit.register(self.stop)
        self._thread.start()

    def _work(self, ask: Callable[[Started], dict[str, Any] | Unavailable]) -> None:
        self._answer = ask(self._started)

    def _started(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def answer(self, limit: float) -> dict[str, Any] | Unavailable:
        # bounded: the query itself kills kubectl at its own deadline
        self._thread.join(limit)
        atexit.unregister(self.stop)
        if self._answer is None:
            self.stop()
            return Unavailable(reason=f"kubectl: no answer within {limit:g}s (killed)")
        return self._answer

    def stop(self) -> None:
        """Kill the query's kubectl (and its children) if it still runs."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@attrs.define
class KubectlKube:
    """The Kube port for the node ``node_name``, asked through kubectl."""

    node_name: str = attrs.field(kw_only=True)
    kubeconfig: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path), kw_only=True
    )
    kubectl: str = attrs.field(default="kubectl", kw_only=True)
    timeout: float = attrs.field(default=10.0, kw_only=True)
    #: seconds kubectl gets beyond ``timeout`` to start and exit before it is killed
    grace: float = attrs.field(default=GRACE, kw_only=True)
    _ahead: _Ahead | None = attrs.field(default=None, init=False, repr=False, eq=False)

    def prefetch_node(self) -> None:
        """Start asking for this node now, on a thread; the next node read takes that answer.

        ``apply`` reads the node's labels (preflight) after it fetched the
        release document: asked first, kubectl's round trip runs while the
        release is fetched. The answer serves one read only; a query never
        taken is killed when the process exits.
        """
        if self._ahead is None:
            self._ahead = _Ahead(self._node_now)

    # ------------------------------------------------------------------ the port

    def node_labels(self) -> Mapping[str, str] | Unavailable:
        """Labels of this node."""
        node = self._node()
        if isinstance(node, Unavailable):
            return node
        labels = _mapping(node.get("metadata")).get("labels") or {}
        if not isinstance(labels, dict):
            return Unavailable(reason=f"node {self.node_name}: labels are not a mapping")
        return {str(k): str(v) for k, v in labels.items()}

    def node_ready(self) -> bool | Unavailable:
        """True when the node's Ready condition has status "True"."""
        node = self._node()
        if isinstance(node, Unavailable):
            return node
        conditions = _mapping(node.get("status")).get("conditions") or []
        for cond in conditions if isinstance(conditions, list) else []:
            if isinstance(cond, dict) and cond.get("type") == "Ready":
                return cond.get("status") == "True"
        # A node the kubelet has not reported on yet has no Ready condition.
        return False

    def kube_system_pods(self) -> Sequence[PodInfo] | Unavailable:
        """Pods of kube-system: phase, total restarts, latest container start if Running.

        A pod whose phase is Running while one of its containers is not (a
        crash loop) is reported with that container's reason as its phase
        (``CrashLoopBackOff``), as ``kubectl get pods`` shows it, and no
        running_since: it has not been held running.
        """
        doc = self._get_json("/api/v1/namespaces/kube-system/pods", "kube-system pods")
        if isinstance(doc, Unavailable):
            return doc
        items = doc.get("items")
        if not isinstance(items, list):
            return Unavailable(reason="kube-system pods: the answer has no items list")
        try:
            return [self._pod(item) for item in items]
        except (AttributeError, TypeError, ValueError) as exc:
            return Unavailable(reason=f"kube-system pods: unexpected pod document ({exc})")

    def apiserver_ready(self) -> bool | Unavailable:
        """``/readyz``: True on "ok", False when the server answers with an error status."""
        answer = self._run("/readyz")
        if answer.unavailable:
            return Unavailable(reason=answer.unavailable)
        if answer.http_error:
            return False
        if answer.stdout.strip() != "ok":
            # A 200 from /readyz is always "ok"; anything else is not an API server.
            return Unavailable(reason=f"/readyz answered {_short(answer.stdout)!r}, not 'ok'")
        return True

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _pod(item: dict[str, Any]) -> PodInfo:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        phase = str(status.get("phase") or "Unknown")
        restarts = 0
        started: list[dt.datetime] = []
        not_running: list[str] = []
        for cs in status.get("containerStatuses") or []:
            restarts += int(cs.get("restartCount") or 0)
            state = cs.get("state") or {}
            running = state.get("running")
            when = _parse_time(running.get("startedAt")) if isinstance(running, dict) else None
            if when is not None:
                started.append(when)
                continue
            # Like kubectl's STATUS column: the reason a container is not running.
            other = state.get("waiting") or state.get("terminated") or {}
            not_running.append(str(other.get("reason") or "ContainerNotRunning"))
        if phase == "Running" and (not_running or not started):
            # A pod stays "Running" while a container crash-loops; it has not
            # been held running, so report the container's state instead.
            return PodInfo(
                name=str(meta.get("name") or "?"),
                phase=not_running[0] if not_running else "ContainerNotRunning",
                running_since=None,
                restarts=restarts,
            )
        # Held running since the most recent container (re)start.
        since = max(started) if phase == "Running" else None
        return PodInfo(
            name=str(meta.get("name") or "?"),
            phase=phase,
            running_since=since,
            restarts=restarts,
        )

    def _node(self) -> dict[str, Any] | Unavailable:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            return ahead.answer(self.timeout + self.grace + 1.0)
        return self._node_now()

    def _node_now(self, on_start: Started | None = None) -> dict[str, Any] | Unavailable:
        # quoted: a node name is one path segment, whatever the config holds
        name = urllib.parse.quote(self.node_name, safe="")
        return self._get_json(f"/api/v1/nodes/{name}", f"node {self.node_name}", on_start)

    def _get_json(
        self, path: str, what: str, on_start: Started | None = None
    ) -> dict[str, Any] | Unavailable:
        answer = self._run(path, on_start)
        if answer.unavailable:
            return Unavailable(reason=answer.unavailable)
        if answer.http_error:
            return Unavailable(reason=f"{what}: {answer.http_error}")
        try:
            doc = json.loads(answer.stdout)
        except ValueError:
            return Unavailable(
                reason=f"{what}: kubectl printed something that is not JSON: "
                f"{_short(answer.stdout)!r}"
            )
        if not isinstance(doc, dict):
            return Unavailable(reason=f"{what}: expected a JSON object from the API")
        return doc

    def _argv(self, path: str) -> list[str]:
        argv = [self.kubectl]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        return [*argv, f"--request-timeout={self.timeout:g}s", "get", "--raw", path]

    def _run(self, path: str, on_start: Started | None = None) -> _Answer:
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            return _Answer(unavailable=f"kubeconfig {self.kubeconfig} not found")
        exe = shutil.which(self.kubectl)
        if exe is None or not os.access(exe, os.X_OK):
            return _Answer(unavailable=f"kubectl binary {self.kubectl!r} not found")
        started = time.monotonic()
        limit = self.timeout + self.grace
        try:
            # A session of its own: on timeout the whole group goes (a kubectl
            # wrapper's child would otherwise keep our pipes open).
            proc = subprocess.Popen(
                self._argv(path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            return _Answer(unavailable=f"kubectl {self.kubectl!r} could not run: {exc}")
        if on_start is not None:
            on_start(proc)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return _Answer(
                unavailable=f"kubectl get --raw {path}: no answer within {limit:g}s (killed)"
            )
        if proc.returncode == 0:
            return _Answer(stdout=stdout)
        err = _short(stderr) or f"kubectl exited {proc.returncode}"
        if time.monotonic() - started >= self.timeout:
            err += f" (request timeout {self.timeout:g}s reached)"
        # "Error from server (X)" means the API answered with a status; but
        # credentials refused (401 prints "You must be logged in", 403 is
        # Forbidden) and a missing resource mean we could not ask, not "no".
        answered = "Error from server" in err and not any(
            r in err for r in ("(Forbidden)", "(Unauthorized)", "(NotFound)")
        )
        if answered:
            return _Answer(http_error=err)
        return _Answer(unavailable=f"kubectl get --raw {path}: {err}")
