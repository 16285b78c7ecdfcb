"""The local probes of the health check: containerd, the operator's URL, the data disk.

Each probe returns a :class:`ProbeResult`; a failure is a value with a reason
that names what was probed and the errno or status seen, never an exception.
Each is bounded in time by ``timeout`` seconds per blocking step.

containerd: we connect to its unix socket and do the first step of its gRPC
transport, the HTTP/2 connection preface: containerd (grpc-go) answers with a
SETTINGS frame at once. A bare ``connect()`` would not be enough, because the
kernel accepts connections into the listen backlog even when the daemon is
hung; the SETTINGS frame proves the daemon's own event loop is serving. A real
``Version`` call would need HPACK and protobuf (grpc libraries) for little more
assurance, so we stop at the handshake.

Probe URL: stdlib :mod:`urllib.request` (no heavy import on the health path),
no proxy from the environment (the URL is a local service), no redirects
followed: exactly status 200 passes.

Disk: 1 KiB of random bytes written to a probe file under the data dir,
fsynced, read back, compared and removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from kubesolo_core.policies import ProbeResult

if TYPE_CHECKING:
    import socket

__all__ = ["LocalProbes"]

#: the HTTP/2 client connection preface (RFC 9113, 3.4)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: an empty SETTINGS frame: length 0, type 4, flags 0, stream 0
H2_EMPTY_SETTINGS = struct.pack(">I", 0)[1:] + bytes([0x4, 0x0]) + struct.pack(">I", 0)
H2_FRAME_HEADER = 9
H2_SETTINGS = 0x4
PROBE_SIZE = 1024
PROBE_NAME = ".kubesolo-update-disk-probe"


def _errno_text(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


@attrs.define
class LocalProbes:
    """The HealthProbes port over this box: a unix socket, an HTTP GET and a file."""

    containerd_socket: Path = attrs.field(
        default=Path("/run/containerd/containerd.sock"), converter=Path, kw_only=True
    )
    data_dir: Path = attrs.field(default=Path("/var/lib/kubesolo"), converter=Path, kw_only=True)
    timeout: float = attrs.field(default=5.0, kw_only=True)

    # ------------------------------------------------------------------ containerd

    def containerd(self) -> ProbeResult:
        """containerd's socket accepts a connection and answers the HTTP/2 preface."""
        import socket  # only the health check needs it, not every command that builds probes

        path = self.containerd_socket
        what = f"containerd socket {path}"
        deadline = time.monotonic() + self.timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(path))
            except TimeoutError:
                return ProbeResult(ok=False, reason=f"{what}: connect timed out")
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    return ProbeResult(
                        ok=False, reason=f"{what}: nobody listens ({_errno_text(exc)})"
                    )
                return ProbeResult(ok=False, reason=f"{what}: {_errno_text(exc)}")
            try:
                sock.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
                header = _recv_exactly(sock, H2_FRAME_HEADER, deadline)
            except TimeoutError:
                return ProbeResult(
                    ok=False,
                    reason=f"{what}: connected, but no HTTP/2 answer within "
                    f"{self.timeout:g}s (containerd hung?)",
                )
            except OSError as exc:
                return ProbeResult(ok=False, reason=f"{what}: connected, then {_errno_text(exc)}")
        if len(header) < H2_FRAME_HEADER:
            return ProbeResult(
                ok=False, reason=f"{what}: connection closed after {len(header)} bytes"
            )
        if header[3] != H2_SETTINGS:
            return ProbeResult(
                ok=False,
                reason=f"{what}: answered {header.hex()}, not an HTTP/2 SETTINGS frame",
            )
        return ProbeResult(ok=True)

    # ------------------------------------------------------------------ probe URL

    def probe_url(self, url: str) -> ProbeResult:
        """GET ``url``; exactly 200 passes, anything else fails with the status or error."""
        # urllib.request pulls in http.client, email and ssl (~35 ms): only
        # the health check with a probe URL pays for it.
        import urllib.error
        import urllib.parse
        import urllib.request

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                # Returning None makes urllib raise the 3xx as an HTTPError.
                return None

        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            return ProbeResult(ok=False, reason=f"{url}: scheme {scheme!r} is not http or https")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        request = urllib.request.Request(url, method="GET")  # noqa: S310 (scheme checked)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except urllib.error.URLError as exc:
            return ProbeResult(ok=False, reason=f"{url}: {self._url_reason(exc.reason)}")
        except (TimeoutError, OSError) as exc:
            return ProbeResult(ok=False, reason=f"{url}: {self._url_reason(exc)}")
        except ValueError as exc:  # a malformed URL or response (http.client)
            return ProbeResult(ok=False, reason=f"{url}: {exc}")
        if status != 200:
            return ProbeResult(ok=False, reason=f"{url} answered {status}, not 200")
        return ProbeResult(ok=True)

    def _url_reason(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"timed out after {self.timeout:g}s"
        if isinstance(reason, ConnectionRefusedError):
            return f"connection refused ({_errno_text(reason)})"
        if isinstance(reason, OSError):
            return _errno_text(reason)
        return str(reason)

    # ------------------------------------------------------------------ disk

    def disk_writable(self) -> ProbeResult:
        """Write, fsync, read back and remove 1 KiB under the data dir."""
        path = self.data_dir / PROBE_NAME
        payload = os.urandom(PROBE_SIZE)
        step = "open"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                step = "write"
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                step = "fsync"
                os.fsync(fd)
                step = "read back"
                back = os.pread(fd, PROBE_SIZE + 1, 0)
            finally:
                os.close(fd)
            step = "remove"
            path.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            return ProbeResult(
                ok=False, reason=f"disk probe {path}: {step} failed: {_errno_text(exc)}"
            )
        if back != payload:
            return ProbeResult(
                ok=False,
                reason=f"disk probe {path}: read back {len(back)} bytes that differ "
                f"from the {PROBE_SIZE} written",
            )
        return ProbeResult(ok=True)


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes before ``deadline`` (fewer if the peer closes); TimeoutError after."""
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf
