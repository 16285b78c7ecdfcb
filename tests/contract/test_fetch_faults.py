"""HttpFetcher against our own fault-injecting server on 127.0.0.1.

The contract suite (with persistent faults) runs here, then the bad days one
by one: each transient fault must be survived with the exact bytes, each
lie of the server must end in a FetchError without wasting retries.
Timeouts are small and sleeping is recorded, not done, so every case is quick.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest

from kubesolo_adapters.http import RELEASE_LIMIT, HttpFetcher
from kubesolo_core.errors import FetchError
from tests.contract.faultserver import Fault, FaultServer
from tests.contract.fetch_suite import (
    FetcherFaultContract,
    FetchRig,
    bytes_before_error,
    drain,
    payload,
    spec_for,
)
from tests.contract.nginx import free_port

RETRIES = 3


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def fetcher(sleeps: list[float]) -> HttpFetcher:
    return HttpFetcher(
        connect_timeout=2,
        read_timeout=0.3,
        retries=RETRIES,
        backoff=0.01,
        max_backoff=0.08,
        chunk_size=64 << 10,
        sleep=sleeps.append,
    )


class TestHttpFetcherOnFaultServer(FetcherFaultContract):
    @pytest.fixture
    def rig(self, server: FaultServer, fetcher: HttpFetcher) -> FetchRig:
        def inject(kind: str, size: int) -> None:
            if kind == "fail":
                server.always(Fault("status", status=503))
            elif kind == "truncate":
                server.always(Fault("cut_at", at=size // 2))
            elif kind == "stall":
                server.always(Fault("stall", at=0, seconds=5))
            else:
                raise ValueError(kind)

        return FetchRig(
            fetcher=fetcher,
            release_url=server.url("stable/release.json"),
            publish=lambda name, data: server.publish("stable/" + name, data),
            missing_url=server.url("stable/nothing-here.json"),
            inject=inject,
        )


# --------------------------------------------------------------------------- transient faults


def fetch(server: FaultServer, fetcher: HttpFetcher, data: bytes) -> bytes:
    server.publish("img", data)
    got, _ = drain(fetcher.open_image(server.url("release.json"), spec_for(data, "img")))
    return got


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=500),
        Fault("status", status=502),
        Fault("status", status=429),
        Fault("reset", at=0),
        Fault("truncate", at=0),
        Fault("stall", at=0, seconds=5),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind == "status" else f.kind,
)
def test_a_failed_first_request_is_retried(
    server: FaultServer, fetcher: HttpFetcher, sleeps: list[float], fault: Fault
) -> None:
    data = payload(300_000, b"retry")
    server.inject(fault, fault)
    assert fetch(server, fetcher, data) == data
    assert len(server.log) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault("reset", at=150_000),
        Fault("truncate", at=150_000),
        Fault("stall", at=150_000, seconds=5),
        Fault("short_length", delta=100_000),
    ],
    ids=lambda f: f.kind,
)
def test_a_cut_body_resumes_with_range(
    server: FaultServer, fetcher: HttpFetcher, fault: Fault
) -> None:
    data = payload(400_000, b"resume")
    server.inject(fault)
    assert fetch(server, fetcher, data) == data
    log = server.log
    assert len(log) == 2
    assert log[0].range is None
    assert log[1].range is not None
    start = int(log[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(data)


def test_several_cuts_in_a_row_each_resume(server: FaultServer, fetcher: HttpFetcher) -> None:
    data = payload(600_000, b"cuts")
    # more cuts than retries: each one made progress, so the count starts again
    server.inject(*[Fault("cut_at", at=n * 100_000) for n in range(1, 6)])
    assert fetch(server, fetcher, data) == data
    assert [entry.range for entry in server.log[1:]] == [
        f"bytes={n * 100_000}-" for n in range(1, 6)
    ]


def test_a_server_that_ignores_range_is_skipped_forward(
    server: FaultServer, fetcher: HttpFetcher
) -> None:
    data = payload(400_000, b"ignore")
    server.inject(Fault("truncate", at=123_456), Fault("ignore_range"))
    assert fetch(server, fetcher, data) == data
    assert server.log[1].range == "bytes=123456-"


def test_ignored_range_on_the_first_request_just_streams(
    server: FaultServer, fetcher: HttpFetcher
) -> None:
    data = payload(100_000, b"first")
    server.inject(Fault("ignore_range"))
    assert fetch(server, fetcher, data) == data


def test_retry_after_is_honoured_up_to_max_backoff(
    server: FaultServer, fetcher: HttpFetcher, sleeps: list[float]
) -> None:
    data = payload(10_000, b"later")
    server.inject(Fault("status", status=503, retry_after=60))
    assert fetch(server, fetcher, data) == data
    assert sleeps == [fetcher.max_backoff]


def test_a_document_is_retried_too(
    server: FaultServer, fetcher: HttpFetcher, sleeps: list[float]
) -> None:
    url = server.publish("release.json", b'{"schema": 1}')
    server.inject(Fault("status", status=500), Fault("reset", at=0))
    assert fetcher.fetch_release(url) == b'{"schema": 1}'
    assert len(sleeps) == 2


# ------------------------------------------------------------------- bounded, and not retried


def test_retries_are_bounded_with_exponential_backoff(
    server: FaultServer, fetcher: HttpFetcher, sleeps: list[float]
) -> None:
    server.publish("img", b"x" * 100)
    server.always(Fault("status", status=500))
    with pytest.raises(FetchError) as info:
        fetcher.open_image(server.url("release.json"), spec_for(b"x" * 100, "img"))
    message = str(info.value)
    assert server.url("img") in message
    assert f"{RETRIES + 1} attempt" in message
    assert "HTTP 500" in message
    assert len(server.log) == RETRIES + 1
    assert len(sleeps) == RETRIES
    # exponential with jitter in [0.5, 1]: 0.01, 0.02, 0.04 (capped at 0.08)
    for n, delay in enumerate(sleeps):
        assert 0.01 * 2**n * 0.5 <= delay <= min(0.01 * 2**n, fetcher.max_backoff)


@pytest.mark.parametrize("status", [404, 403, 401, 410])
def test_client_errors_are_not_retried(
    server: FaultServer, fetcher: HttpFetcher, status: int
) -> None:
    server.publish("img", b"x" * 100)
    server.always(Fault("status", status=status))
    with pytest.raises(FetchError, match=f"HTTP {status}"):
        fetcher.open_image(server.url("release.json"), spec_for(b"x" * 100, "img"))
    with pytest.raises(FetchError, match="not retried"):
        fetcher.fetch_release(server.url("img"))
    assert len(server.log) == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault("extra", delta=100),
        Fault("extra_unannounced", delta=100),
        # announces more than the release's size (and sends less): refused up front
        Fault("long_length", delta=5000),
    ],
    ids=lambda f: f.kind,
)
def test_more_bytes_than_announced_is_refused_without_retry(
    server: FaultServer, fetcher: HttpFetcher, fault: Fault
) -> None:
    data = payload(200_000, b"extra")
    server.publish("img", data)
    server.always(fault)
    got, error = bytes_before_error(
        lambda: fetcher.open_image(server.url("release.json"), spec_for(data, "img"))
    )
    assert "more" in str(error)
    assert got <= len(data)
    assert len(server.log) == 1


def test_a_wrong_content_range_is_refused(server: FaultServer, fetcher: HttpFetcher) -> None:
    data = payload(200_000, b"badrange")
    server.inject(Fault("truncate", at=50_000), Fault("bad_range"))
    with pytest.raises(FetchError, match="Content-Range"):
        fetch(server, fetcher, data)


def test_a_file_shorter_than_the_release_says(server: FaultServer, fetcher: HttpFetcher) -> None:
    data = payload(200_000, b"short")
    server.publish("img", data)
    spec = spec_for(data + b"more", "img")
    with pytest.raises(FetchError, match=r"416|fewer"):
        drain(fetcher.open_image(server.url("release.json"), spec))


def test_nothing_listening_is_retried_then_fails(sleeps: list[float]) -> None:
    fetcher = HttpFetcher(
        connect_timeout=1, read_timeout=0.3, retries=2, backoff=0.01, sleep=sleeps.append
    )
    url = f"http://127.0.0.1:{free_port()}/release.json"
    start = time.monotonic()
    with pytest.raises(FetchError, match="3 attempt") as info:
        fetcher.fetch_release(url)
    assert url in str(info.value)
    assert len(sleeps) == 2
    assert time.monotonic() - start < 10


def test_a_huge_document_is_refused(server: FaultServer, fetcher: HttpFetcher) -> None:
    url = server.publish("release.json", b" " * (RELEASE_LIMIT + 1))
    with pytest.raises(FetchError, match=r"bigger|more than"):
        fetcher.fetch_release(url)
    server.always(Fault("extra_unannounced", delta=RELEASE_LIMIT))
    url = server.publish("small.json", b"{}")
    with pytest.raises(FetchError, match="bigger"):
        fetcher.fetch_release(url)


def test_unsupported_scheme(fetcher: HttpFetcher) -> None:
    with pytest.raises(FetchError, match="scheme"):
        fetcher.fetch_release("ftp://example.invalid/release.json")


def test_progress_is_reported_in_served_bytes(server: FaultServer, fetcher: HttpFetcher) -> None:
    data = payload(500_000, b"progress")
    server.publish("img", data)
    server.inject(Fault("reset", at=200_000))
    seen: list[tuple[int, int | None]] = []
    spec = spec_for(data, "img")
    got, _ = drain(
        fetcher.open_image(server.url("release.json"), spec, lambda d, t: seen.append((d, t)))
    )
    assert got == data
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (len(data), len(data))
    assert hashlib.sha256(got).hexdigest() == spec.sha256


def slow_guarded(*, retries: int, window: float) -> HttpFetcher:
    """A fetcher that gives up on anything under 100 kB/s over ``window`` seconds."""
    return HttpFetcher(
        connect_timeout=2,
        read_timeout=0.3,
        retries=retries,
        backoff=0.01,
        max_backoff=0.05,
        min_speed=100_000,
        speed_window=window,
    )


def test_a_trickling_server_is_cut_off_and_resumed(server: FaultServer) -> None:
    # 200 bytes every 0.05 s: never silent for the 0.3 s read timeout, yet far
    # below 100 kB/s. Each attempt is abandoned after its 0.4 s window and
    # resumed with Range from where it stopped; the healthy retry finishes.
    fetcher = slow_guarded(retries=3, window=0.4)
    data = payload(200_000, b"trickle")
    server.inject(Fault("trickle", at=10_000, delta=200, seconds=0.05))
    started = time.monotonic()
    assert fetch(server, fetcher, data) == data
    assert time.monotonic() - started < 5
    log = server.log
    assert len(log) == 2 and log[0].fault == "trickle"
    assert log[1].range is not None and log[1].range != "bytes=0-"


def test_a_server_that_only_trickles_is_given_up(server: FaultServer) -> None:
    fetcher = slow_guarded(retries=2, window=0.3)
    data = payload(200_000, b"trickle")
    server.always(Fault("trickle", at=200_000, delta=100, seconds=0.05))
    started = time.monotonic()
    with pytest.raises(FetchError, match="slower than 100000 bytes/s"):
        fetch(server, fetcher, data)
    assert time.monotonic() - started < 5


def test_a_trickling_release_document_is_given_up(server: FaultServer) -> None:
    # Small documents (a release document, TUF metadata) get the same minimum
    # speed as images: a byte now and then must not hold the box.
    fetcher = slow_guarded(retries=1, window=0.3)
    url = server.publish("/release.json", b"{" + b" " * 4000 + b"}")
    server.always(Fault("trickle", at=4002, delta=20, seconds=0.05))
    started = time.monotonic()
    with pytest.raises(FetchError, match="slower than 100000 bytes/s"):
        fetcher.fetch_release(url)
    assert time.monotonic() - started < 5
    assert len(server.log) == 2  # one try, one retry
