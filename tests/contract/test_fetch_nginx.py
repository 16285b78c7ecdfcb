"""HttpFetcher against a real nginx on 127.0.0.1: the happy path, real Range resume, real TLS.

nginx runs from a private prefix (its own config, pid, logs) on a free port
and is stopped by its pid when the module is done. A ``/slow/`` location
sends 200 KiB per request at full speed and then a byte a second
(``limit_rate_after``/``limit_rate``), so the fetcher's read timeout fires
and the download can only finish by resuming with Range requests.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from kubesolo_adapters.http import HttpFetcher
from kubesolo_core.errors import FetchError
from tests.contract.fetch_suite import FetcherContract, FetchRig, drain, payload, spec_for
from tests.contract.nginx import Nginx, nginx_binary, start_nginx
from tests.tools import require_tool

SLOW = "location /slow/ { limit_rate_after 200k; limit_rate 1; }"
_folders = count()


def _need_nginx() -> None:
    if nginx_binary() is None:
        require_tool("nginx")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    _need_nginx()
    root = tmp_path_factory.mktemp("www")
    server = start_nginx(root, tmp_path_factory.mktemp("nginx"), extra=SLOW)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def fetcher(sleeps: list[float]) -> HttpFetcher:
    return HttpFetcher(
        connect_timeout=2,
        read_timeout=0.5,
        retries=3,
        backoff=0.01,
        max_backoff=0.05,
        chunk_size=256 << 10,
        sleep=sleeps.append,
    )


def put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class TestHttpFetcherOnNginx(FetcherContract):
    @pytest.fixture
    def rig(self, nginx: Nginx, fetcher: HttpFetcher) -> FetchRig:
        folder = f"stable{next(_folders)}"

        def publish(name: str, data: bytes) -> str:
            put(nginx.root, f"{folder}/{name}", data)
            return nginx.url(f"{folder}/{name}")

        return FetchRig(
            fetcher=fetcher,
            release_url=nginx.url(f"{folder}/release.json"),
            publish=publish,
            missing_url=nginx.url(f"{folder}/nothing-here.json"),
        )


def test_a_throttled_download_finishes_by_range_resume(nginx: Nginx, fetcher: HttpFetcher) -> None:
    data = payload(700_000, b"slow")
    put(nginx.root, "slow/os.img", data)
    start = time.monotonic()
    got, _ = drain(fetcher.open_image(nginx.url("slow/release.json"), spec_for(data, "os.img")))
    assert got == data
    assert time.monotonic() - start < 15
    # nginx logs a request when it ends; the stalled ones end when it notices the hang-up
    deadline = time.monotonic() + 5
    ranged: list[str] = []
    while time.monotonic() < deadline:
        ranged = [
            line for line in nginx.access_log() if "/slow/os.img" in line and "bytes=" in line
        ]
        if len(ranged) >= 3:
            break
        time.sleep(0.1)
    assert len(ranged) >= 3, nginx.access_log()
    assert all(line.startswith("206 ") for line in ranged)


# --------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def tls_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Path]]:
    _need_nginx()
    require_tool("openssl")
    keys = tmp_path_factory.mktemp("tls")
    cert, key = keys / "cert.pem", keys / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    root = tmp_path_factory.mktemp("tlswww")
    put(root, "release.json", b'{"schema": 1}')
    server = start_nginx(root, tmp_path_factory.mktemp("tlsnginx"), tls=(cert, key))
    try:
        yield server, cert
    finally:
        server.stop()


def test_https_is_verified_by_default(tls_nginx: tuple[Nginx, Path], sleeps: list[float]) -> None:
    server, _ = tls_nginx
    fetcher = HttpFetcher(connect_timeout=2, read_timeout=2, retries=3, sleep=sleeps.append)
    with pytest.raises(FetchError, match="certificate"):
        fetcher.fetch_release(server.url("release.json"))
    assert sleeps == []  # a certificate failure is not worth a retry


def test_https_with_a_ca_bundle(tls_nginx: tuple[Nginx, Path]) -> None:
    server, cert = tls_nginx
    fetcher = HttpFetcher(connect_timeout=2, read_timeout=2, verify=str(cert))
    assert fetcher.fetch_release(server.url("release.json")) == b'{"schema": 1}'


def test_a_missing_ca_bundle_is_a_clear_error(
    tls_nginx: tuple[Nginx, Path], tmp_path: Path
) -> None:
    server, _ = tls_nginx
    fetcher = HttpFetcher(verify=str(tmp_path / "no-such-ca.pem"))
    with pytest.raises(FetchError, match="CA bundle"):
        fetcher.fetch_release(server.url("release.json"))
