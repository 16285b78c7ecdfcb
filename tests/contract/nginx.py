"""A private nginx on 127.0.0.1 for tests and benchmarks.

Each instance has its own prefix directory (config, pid, logs, temp paths)
and a free port, runs in the foreground (``daemon off``) under
:class:`subprocess.Popen`, and is stopped by its own pid: nothing else on the
machine is touched. The access log records the status and the Range header
of every request, so tests can see that a resume really asked for a range.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_CONF = """\
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format ranges '$status "$http_range" $body_bytes_sent $request_uri';
    access_log {prefix}/access.log ranges;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {tls}
        root {root};
        location / {{ }}
        {extra}
    }}
}}
"""


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_binary() -> str | None:
    """The nginx executable (Debian puts it in /usr/sbin)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


@dataclass
class Nginx:
    """A running private nginx."""

    proc: subprocess.Popen[bytes]
    port: int
    prefix: Path
    root: Path
    scheme: str = "http"
    stopped: bool = field(default=False)

    def url(self, path: str = "") -> str:
        """The URL of ``path`` under the document root."""
        return f"{self.scheme}://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def access_log(self) -> list[str]:
        """The lines of the access log (status "range" bytes uri)."""
        log = self.prefix / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        """Stop this nginx (SIGTERM to its master's pid, SIGKILL after 5 s)."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_nginx(
    root: Path,
    prefix: Path,
    *,
    tls: tuple[Path, Path] | None = None,
    extra: str = "",
    timeout: float = 10.0,
) -> Nginx:
    """Start nginx serving ``root`` with its state under ``prefix``; wait until it listens.

    ``tls`` is (certificate, key) for https; ``extra`` is added to the server
    block (e.g. a location with ``limit_rate``).
    """
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx not found")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    last_error = ""
    for _ in range(5):  # a port taken between free_port() and bind: try another
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            _CONF.format(
                # Workers would run as nobody and could not read a 0700 pytest tmp dir.
                user="user root;" if os.geteuid() == 0 else "",
                prefix=prefix,
                port=port,
                ssl=" ssl" if tls else "",
                tls=f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else "",
                root=root,
                extra=extra,
            )
        )
        with (prefix / "stderr.log").open("wb") as err:
            proc = subprocess.Popen(
                [
                    binary,
                    "-p",
                    str(prefix),
                    "-c",
                    str(conf),
                    "-e",
                    str(prefix / "error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        server = Nginx(
            proc=proc, port=port, prefix=prefix, root=root, scheme="https" if tls else "http"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                return server
            time.sleep(0.05)
        server.stop()
        logs = [prefix / "stderr.log", prefix / "error.log"]
        last_error = "".join(log.read_text(errors="replace") for log in logs if log.exists())
        if "Address already in use" not in last_error:
            break
    raise RuntimeError(f"nginx did not start: {last_error.strip()}")


@contextlib.contextmanager
def nginx_serving(root: Path, prefix: Path, **kwargs: object) -> Iterator[Nginx]:
    """``start_nginx`` as a context manager that always stops it."""
    server = start_nginx(root, prefix, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
