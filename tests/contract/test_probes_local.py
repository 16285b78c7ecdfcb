"""The HealthProbes contract against LocalProbes: a real unix socket, HTTP server and disk.

containerd is stood in for by a unix socket server that answers the HTTP/2
preface the way grpc-go does (a SETTINGS frame first); one case runs the real
containerd daemon when it is installed. The probe URL is a real HTTP server on
127.0.0.1. The disk probe runs on real directories, and as root on a
read-only and on a full tmpfs.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from kubesolo_adapters.probes import PROBE_NAME, LocalProbes
from tests.contract.loopdev import fill_up, tmpfs
from tests.contract.probes_suite import ProbesContract, UrlKind
from tests.tools import require_root, require_tool

TIMEOUT = 1.0
#: a SETTINGS frame as grpc-go sends it first: one setting (MAX_FRAME_SIZE = 16384)
SETTINGS_FRAME = bytes.fromhex("000006040000000000") + bytes.fromhex("000500004000")

SocketMode = Literal["h2", "hung", "garbage", "close"]


class FakeContainerd:
    """A unix socket server on ``path`` behaving like containerd (or a broken one)."""

    def __init__(self, path: Path, mode: SocketMode = "h2") -> None:
        self.path = path
        self.mode = mode
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self._thread: threading.Thread | None = None
        if mode != "hung":  # hung: the kernel queues connections, nobody accepts
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                if self.mode == "h2":
                    conn.sendall(SETTINGS_FRAME)
                elif self.mode == "garbage":
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                # Read the client's preface before hanging up: closing with
                # unread data would reset the connection instead.
                with contextlib.suppress(OSError):
                    conn.recv(64)

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()
        self.path.unlink(missing_ok=True)


class _UrlHandler(http.server.BaseHTTPRequestHandler):
    release: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/stall":
            self.release.wait(30)  # until the test ends: far past the probe timeout
            return
        code = {"/ok": 200, "/error": 500, "/redirect": 302}.get(self.path, 404)
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving /ok, /error, /stall, /redirect."""
    release = threading.Event()
    handler = type("Handler", (_UrlHandler,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@attrs.define
class LocalProbesWorld:
    """Real sockets, a real HTTP server and real directories."""

    probes: LocalProbes
    sockdir: Path
    base_url: str
    tmp: Path
    containerd_server: FakeContainerd | None = None

    def set_containerd(self, up: bool) -> None:
        if up and self.containerd_server is None:
            self.containerd_server = FakeContainerd(self.probes.containerd_socket)
        elif not up and self.containerd_server is not None:
            self.containerd_server.close()
            self.containerd_server = None

    def url(self, kind: UrlKind) -> str:
        if kind == "refused":
            return f"http://127.0.0.1:{closed_port()}/ok"
        return f"{self.base_url}/{kind}"

    def set_disk(self, ok: bool) -> None:
        if ok:
            self.probes.data_dir = self.tmp / "data"
        else:
            # A data dir under a regular file: ENOTDIR, root or not.
            (self.tmp / "a-file").write_text("not a directory\n")
            self.probes.data_dir = self.tmp / "a-file" / "data"

    def close(self) -> None:
        self.set_containerd(False)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="ksu-sock-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def local_world(tmp_path: Path, sockdir: Path) -> Iterator[LocalProbesWorld]:
    (tmp_path / "data").mkdir()
    probes = LocalProbes(
        containerd_socket=sockdir / "containerd.sock",
        data_dir=tmp_path / "data",
        timeout=TIMEOUT,
    )
    with http_server() as base:
        world = LocalProbesWorld(probes=probes, sockdir=sockdir, base_url=base, tmp=tmp_path)
        try:
            yield world
        finally:
            world.close()


class TestLocalProbes(ProbesContract):
    """LocalProbes honours the HealthProbes contract."""

    @pytest.fixture
    def world(self, local_world: LocalProbesWorld) -> LocalProbesWorld:
        return local_world


# --------------------------------------------------------------------------- containerd


class TestContainerdSocket:
    """What a connect alone would miss, and the errors an operator sees."""

    @pytest.mark.parametrize(
        ("mode", "expect"),
        [
            ("hung", "no HTTP/2 answer within 1s"),
            ("garbage", "not an HTTP/2 SETTINGS frame"),
            ("close", "connection closed after 0 bytes"),
        ],
    )
    def test_listening_but_not_serving_fails(
        self, local_world: LocalProbesWorld, mode: SocketMode, expect: str
    ) -> None:
        server = FakeContainerd(local_world.probes.containerd_socket, mode)
        try:
            t = time.monotonic()
            result = local_world.probes.containerd()
            took = time.monotonic() - t
        finally:
            server.close()
        assert not result.ok
        assert expect in result.reason
        assert str(local_world.probes.containerd_socket) in result.reason
        assert took < TIMEOUT + 1.0

    def test_absent_socket_names_path_and_errno(self, local_world: LocalProbesWorld) -> None:
        result = local_world.probes.containerd()
        assert not result.ok
        assert str(local_world.probes.containerd_socket) in result.reason
        assert "ENOENT" in result.reason

    def test_stale_socket_file_is_refused(self, local_world: LocalProbesWorld) -> None:
        # containerd killed: its socket file stays, nobody listens.
        path = local_world.probes.containerd_socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
        result = local_world.probes.containerd()
        assert not result.ok
        assert "ECONNREFUSED" in result.reason

    def test_real_containerd(self, local_world: LocalProbesWorld, sockdir: Path) -> None:
        """The real daemon answers the preface; stopped (SIGSTOP) it fails as hung."""
        require_tool("containerd")
        require_root()
        sock = sockdir / "c.sock"
        config = sockdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{sockdir}/root"\nstate = "{sockdir}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{sock}"\n'
            f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        )
        log = (sockdir / "containerd.log").open("wb")
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            probes = attrs.evolve(local_world.probes, containerd_socket=sock)
            deadline = time.monotonic() + 20
            result = probes.containerd()
            while not result.ok and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
                result = probes.containerd()
            assert result.ok, result.reason
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                wait_stopped(proc.pid)
                hung = probes.containerd()
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            assert not hung.ok
            assert "no HTTP/2 answer" in hung.reason
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is stopped: kill(SIGSTOP) returns before that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            with contextlib.suppress(OSError):
                # the state follows the parenthesised command name
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        if states and all(s in "tT" for s in states):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} did not stop within {timeout}s")


# --------------------------------------------------------------------------- probe URL


class TestProbeUrl:
    """The reasons an operator reads in the health report."""

    def test_error_status_is_named(self, local_world: LocalProbesWorld) -> None:
        result = local_world.probes.probe_url(local_world.url("error"))
        assert "answered 500" in result.reason

    def test_stall_times_out_in_bounded_time(self, local_world: LocalProbesWorld) -> None:
        t = time.monotonic()
        result = local_world.probes.probe_url(local_world.url("stall"))
        took = time.monotonic() - t
        assert not result.ok
        assert "timed out after 1s" in result.reason
        assert took < TIMEOUT + 1.0

    def test_refused_is_named(self, local_world: LocalProbesWorld) -> None:
        result = local_world.probes.probe_url(local_world.url("refused"))
        assert "refused" in result.reason
        assert "ECONNREFUSED" in result.reason

    def test_redirect_is_not_followed(self, local_world: LocalProbesWorld) -> None:
        result = local_world.probes.probe_url(f"{local_world.base_url}/redirect")
        assert not result.ok
        assert "answered 302" in result.reason

    def test_other_schemes_fail(self, local_world: LocalProbesWorld) -> None:
        result = local_world.probes.probe_url("file:///etc/hostname")
        assert not result.ok
        assert "scheme 'file'" in result.reason

    def test_proxy_environment_is_ignored(
        self, local_world: LocalProbesWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A fleet-wide http_proxy must not swallow a probe of a local service.
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("no_proxy", "")
        assert local_world.probes.probe_url(local_world.url("ok")).ok


# --------------------------------------------------------------------------- disk


class TestDiskProbe:
    """Failure reasons name the path and the errno; nothing is left behind."""

    def test_ok_leaves_nothing_behind(self, local_world: LocalProbesWorld) -> None:
        assert local_world.probes.disk_writable().ok
        assert list(local_world.probes.data_dir.iterdir()) == []

    def test_not_a_directory(self, local_world: LocalProbesWorld) -> None:
        local_world.set_disk(False)
        result = local_world.probes.disk_writable()
        assert str(local_world.probes.data_dir / PROBE_NAME) in result.reason
        assert "ENOTDIR" in result.reason

    def test_missing_data_dir(self, local_world: LocalProbesWorld) -> None:
        local_world.probes.data_dir = local_world.tmp / "gone"
        result = local_world.probes.disk_writable()
        assert not result.ok
        assert "ENOENT" in result.reason

    def test_read_only_file_system(self, tmp_path: Path, sockdir: Path) -> None:
        require_tool("mount")
        require_root()
        with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
            probes = LocalProbes(containerd_socket=sockdir / "x", data_dir=ro, timeout=TIMEOUT)
            result = probes.disk_writable()
        assert not result.ok
        assert str(ro / PROBE_NAME) in result.reason
        assert "EROFS" in result.reason

    def test_full_file_system(self, tmp_path: Path, sockdir: Path) -> None:
        require_tool("mount")
        require_root()
        with tmpfs(tmp_path / "full", "size=64k") as full:
            fill_up(full)  # 4 KiB blocks until ENOSPC
            probes = LocalProbes(containerd_socket=sockdir / "x", data_dir=full, timeout=TIMEOUT)
            result = probes.disk_writable()
            leftovers = sorted(p.name for p in full.iterdir())
        assert not result.ok
        assert str(full / PROBE_NAME) in result.reason
        assert "ENOSPC" in result.reason
        assert leftovers == ["filler"]
