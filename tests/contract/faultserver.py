"""A small threaded HTTP server on 127.0.0.1 that misbehaves on purpose.

nginx proves the happy path; this server proves the bad days. It serves
files from a dict (with ``Range: bytes=N-`` support) and, request by request,
injects faults taken from a queue or a standing ``always`` fault:

``status``           answer ``status`` (500, 503 + Retry-After, 404, 403, ...)
``reset``            send the headers and ``at`` bytes of the body, then a TCP reset
``truncate``         send the headers (full Content-Length) and ``at`` bytes, then close
``cut_at``           like truncate, but ``at`` is an absolute offset in the file:
                     a resume from there gets nothing more (no progress, ever)
``stall``            send ``at`` bytes, then go silent for ``seconds`` (read timeout)
``short_length``     announce ``delta`` bytes less than it sends
``long_length``      announce ``delta`` bytes more than it sends, then close
``ignore_range``     answer 200 with the whole file even when asked for a range
``extra``            send ``delta`` bytes more than the file, announced in Content-Length
``extra_unannounced`` send ``delta`` bytes more than the file, no Content-Length
``bad_range``        answer a range with a Content-Range that starts elsewhere
``redirect``         answer ``status`` (a 3xx) with ``Location: location``
``tls``              (whole server) wrap the socket in TLS with a given context

Every request is logged (path, Range header, fault) for the tests to check.
Stalls wait on an event that :meth:`FaultServer.stop` sets, so stopping is
always quick; the serving thread is joined with a timeout.
"""

from __future__ import annotations

import collections
import re
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour (see the module docstring)."""

    kind: str
    status: int = 500
    at: int = 0
    delta: int = 100
    seconds: float = 5.0
    retry_after: int | None = None
    location: str = ""


@dataclass(frozen=True)
class Logged:
    """One request as the server saw it."""

    path: str
    range: str | None
    fault: str | None


@dataclass
class _State:
    files: dict[str, bytes]
    queue: collections.deque[Fault] = field(default_factory=collections.deque)
    always: Fault | None = None
    #: standing faults for one path only (checked before the queue)
    by_path: dict[str, Fault] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def next_fault(self, path: str, range_header: str | None) -> Fault | None:
        with self.lock:
            if path in self.by_path:
                fault: Fault | None = self.by_path[path]
            else:
                fault = self.queue.popleft() if self.queue else self.always
            self.log.append(Logged(path, range_header, fault.kind if fault else None))
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read FaultServer.log instead

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        fault = state.next_fault(path, range_header)
        data = state.files.get(path)
        if fault is not None and fault.kind == "status":
            headers = {"Content-Length": "0"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._head(fault.status, headers)
            return
        if fault is not None and fault.kind == "redirect":
            self._head(fault.status, {"Location": fault.location, "Content-Length": "0"})
            return
        if data is None:
            self._head(404, {"Content-Length": "0"})
            return
        start = 0
        match = _RANGE.match(range_header or "")
        ranged = match is not None and not (fault and fault.kind == "ignore_range")
        if match is not None and ranged:
            start = int(match.group(1))
            if start >= len(data):
                self._head(416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
                return
        body = data[start:]
        status = 206 if ranged else 200
        headers = {"Content-Length": str(len(body))}
        if ranged:
            shown = start + 1 if fault and fault.kind == "bad_range" else start
            headers["Content-Range"] = f"bytes {shown}-{len(data) - 1}/{len(data)}"
        kind = fault.kind if fault else None
        if kind == "short_length":
            headers["Content-Length"] = str(max(len(body) - fault.delta, 0))  # type: ignore[union-attr]
        elif kind == "long_length":
            headers["Content-Length"] = str(len(body) + fault.delta)  # type: ignore[union-attr]
        elif kind == "extra":
            body += b"\xee" * fault.delta  # type: ignore[union-attr]
            headers["Content-Length"] = str(len(body))
        elif kind == "extra_unannounced":
            body += b"\xee" * fault.delta  # type: ignore[union-attr]
            del headers["Content-Length"]
        self._head(status, headers)
        if fault is None or kind in (
            "ignore_range",
            "bad_range",
            "short_length",
            "extra",
            "extra_unannounced",
            "long_length",
        ):
            self._send(body)
            return
        if kind == "reset":
            self._send(body[: fault.at])
            self._reset()
        elif kind == "truncate":
            self._send(body[: fault.at])
        elif kind == "cut_at":
            self._send(body[: max(fault.at - start, 0)])
        elif kind == "stall":
            if self._send(body[: fault.at]):
                state.stop.wait(fault.seconds)
        elif kind == "trickle":
            # `delta` bytes every `seconds`: never silent long enough for a read
            # timeout, never fast enough to finish. Bounded by `at` bytes.
            sent = 0
            while sent < min(fault.at, len(body)) and not state.stop.is_set():
                if not self._send(body[sent : sent + fault.delta]):
                    return
                sent += fault.delta
                state.stop.wait(fault.seconds)
        else:
            raise ValueError(f"unknown fault {kind!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock.settimeout(5)
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (or failed TLS) is part of the tests


class FaultServer:
    """The server: ``with FaultServer({"/img": data}) as srv: srv.url("/img")``."""

    def __init__(self, files: dict[str, bytes] | None = None, *, tls: ssl.SSLContext | None = None):
        self.state = _State(files=dict(files or {}))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.tls = tls
        self.scheme = "https" if tls else "http"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"{self.scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def publish(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.state.files["/" + path.lstrip("/")] = data
        return self.url(path)

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one per request, in order."""
        with self.state.lock:
            self.state.queue.extend(faults)

    def fault_path(self, path: str, fault: Fault | None) -> None:
        """Apply ``fault`` to every request for ``path`` (None: behave again)."""
        key = "/" + path.lstrip("/")
        with self.state.lock:
            if fault is None:
                self.state.by_path.pop(key, None)
            else:
                self.state.by_path[key] = fault

    def always(self, fault: Fault | None) -> None:
        """Apply ``fault`` to every request once the queue is empty (None: behave)."""
        self.state.always = fault

    @property
    def log(self) -> list[Logged]:
        """The requests so far."""
        with self.state.lock:
            return list(self.state.log)

    def stop(self) -> None:
        """Stop serving; ends any stall at once."""
        self.state.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
