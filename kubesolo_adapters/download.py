"""One URL's attempts over httpx: connect with Range, count failures, back off, resume.

The mechanics behind :class:`~kubesolo_adapters.http.HttpFetcher` (whose
docstring says what a box on a bad link can expect): :class:`Download` owns
one URL's attempts and the retry budget, :class:`SpeedGuard` the minimum
speed. httpx and ssl are imported in the functions that use them.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import attrs

from kubesolo_core.errors import FetchError
from kubesolo_core.ports import Progress

if TYPE_CHECKING:
    import httpx

    from kubesolo_adapters.http import HttpFetcher

__all__ = [
    "Download",
    "FetchStatusError",
    "FetchTooLong",
    "SpeedGuard",
    "TooSlow",
    "is_cert_failure",
    "transport_cause",
]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class FetchStatusError(FetchError):
    """The server answered with an HTTP error status (a missing local file counts as 404)."""

    def __init__(self, message: str, *, status: int, way_out: str = "") -> None:
        super().__init__(message, way_out=way_out)
        self.status = status


class FetchTooLong(FetchError):
    """A document was longer than the limit it was fetched with (never read past it)."""


class TooSlow(Exception):
    """The transfer stayed under the minimum speed for a whole window."""


@attrs.define
class SpeedGuard:
    """Raise TooSlow when fewer than ``min_speed`` bytes/s arrive over a whole window."""

    fetcher: HttpFetcher
    start: float = 0.0
    got: int = 0

    def __attrs_post_init__(self) -> None:
        self.start = self.fetcher.monotonic()

    def feed(self, count: int) -> None:
        self.got += count
        now = self.fetcher.monotonic()
        if now - self.start >= self.fetcher.speed_window:
            if self.got < self.fetcher.min_speed * (now - self.start):
                raise TooSlow(
                    f"slower than {self.fetcher.min_speed:.0f} bytes/s for "
                    f"{now - self.start:.0f} s ({self.got} bytes)"
                )
            self.start, self.got = now, 0


class _Retry(Exception):
    """A failed attempt worth another try."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def transport_cause(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def is_cert_failure(exc: BaseException) -> bool:
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain is short; bound it anyway
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@attrs.define(kw_only=True)
class Download:
    """One URL's attempts: connecting with Range, counting failures, backing off."""

    fetcher: HttpFetcher
    client: httpx.Client
    url: str
    size: int
    attempts: int = 0
    failures: int = 0
    #: close the client when the stream ends (False: a client shared by many downloads)
    own_client: bool = True

    @property
    def _max_attempts(self) -> int:
        return 10 * (self.fetcher.retries + 1)

    def _give_up(self, cause: str, *, retried: bool = True) -> NoReturn:
        if retried:
            raise FetchError(
                f"{self.url}: gave up after {self.attempts} attempt(s): {cause}",
                way_out="check the network and the server, then run apply again",
            )
        raise FetchError(f"{self.url}: {cause} (attempt {self.attempts}, not retried)")

    def failed(self, cause: str, retry_after: float | None = None) -> None:
        """Count a failed attempt; back off, or raise FetchError when the budget is spent."""
        self.failures += 1
        if self.failures > self.fetcher.retries or self.attempts >= self._max_attempts:
            self._give_up(cause)
        self.fetcher.sleep(self.fetcher.backoff_delay(self.failures, retry_after))

    def transport_failed(self, exc: httpx.HTTPError) -> None:
        """A connection-level failure: fatal for certificates and protocol misuse, else retried."""
        import httpx

        if is_cert_failure(exc):
            raise FetchError(
                f"{self.url}: TLS certificate verification failed: {exc}",
                way_out="install the server's CA in the system store or pass a CA bundle",
            ) from None
        if not isinstance(exc, httpx.TransportError) or isinstance(
            exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError
        ):
            self._give_up(transport_cause(exc), retried=False)
        self.failed(transport_cause(exc))

    def connect(self, got: int, *, whole_limit: int) -> tuple[httpx.Response, int]:
        """A response positioned at byte ``got``, and how many leading bytes to skip."""
        import httpx

        while True:
            self.attempts += 1
            headers = {"Range": f"bytes={got}-"} if got else {}
            try:
                request = self.client.build_request("GET", self.url, headers=headers)
                response = self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                self.transport_failed(exc)
                continue
            try:
                return response, self._accept(response, got, whole_limit)
            except _Retry as retry:
                response.close()
                self.failed(retry.cause, retry.retry_after)
            except BaseException:
                response.close()
                raise

    def _accept(self, response: httpx.Response, got: int, whole_limit: int) -> int:
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise _Retry(f"HTTP {status} {response.reason_phrase}", _retry_after(response))
        if urllib.parse.urlsplit(self.url).scheme == "https" and response.url.scheme != "https":
            self._give_up(f"redirected from https to {response.url}", retried=False)
        length = _content_length(response)
        if status == 200:
            # From the start: a server that ignores Range repeats what we already have.
            if length is not None and length > whole_limit:
                raise FetchTooLong(
                    f"{self.url}: the server announces {length} bytes, more than the "
                    f"{whole_limit} expected (attempt {self.attempts}, not retried)"
                )
            return got
        if status == 206 and got:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != got:
                self._give_up(
                    f"asked for bytes {got}-, got Content-Range "
                    f"{response.headers.get('content-range')!r}",
                    retried=False,
                )
            total = match.group(3)
            if total != "*" and int(total) != self.size:
                self._give_up(
                    f"the server's file has {total} bytes, the release says {self.size}",
                    retried=False,
                )
            if length is not None and length > self.size - got:
                self._give_up(
                    f"the server announces {length} more bytes after byte {got}, "
                    f"the release says {self.size - got}",
                    retried=False,
                )
            return 0
        if status == 416:
            self._give_up(
                f"the server has fewer than {got} bytes (416 for Range bytes={got}-); "
                f"the release says {self.size}",
                retried=False,
            )
        raise FetchStatusError(
            f"{self.url}: HTTP {status} {response.reason_phrase} (attempt {self.attempts}, "
            "not retried)",
            status=status,
        )

    def chunks(
        self, first: tuple[httpx.Response, int], progress: Progress | None
    ) -> Iterator[bytes]:
        """The image's bytes from the first response on, resuming after failures.

        Each network read is passed on as it comes (httpx reads 64 KiB at a
        time): gathering them into larger chunks would cost two copies of
        every byte, and the slot writer batches its writes itself. Whatever
        was yielded counts, so a resume starts exactly after it.
        """
        import httpx

        response: httpx.Response | None = first[0]
        skip = first[1]
        got = 0
        try:
            while True:
                if response is None:
                    response, skip = self.connect(got, whole_limit=self.size)
                start = got
                speed = SpeedGuard(fetcher=self.fetcher)
                try:
                    for part in response.iter_raw():
                        speed.feed(len(part))
                        chunk = part
                        if skip:
                            drop = min(skip, len(chunk))
                            skip -= drop
                            chunk = chunk[drop:]
                            if not chunk:
                                continue
                        if got + len(chunk) > self.size:
                            self._give_up(
                                f"the server sent more than the {self.size} bytes announced",
                                retried=False,
                            )
                        got += len(chunk)
                        yield chunk
                        if progress is not None:
                            progress(got, self.size)
                    cause = f"the body ended after {got} of {self.size} bytes"
                except TooSlow as slow:
                    cause = str(slow)
                    start = got  # a crawl is no progress: it must not refill the budget
                except httpx.HTTPError as exc:
                    cause = transport_cause(exc)
                    if is_cert_failure(exc) or not isinstance(exc, httpx.TransportError):
                        self.transport_failed(exc)
                finally:
                    response.close()
                    response = None
                if got == self.size and not skip:
                    return
                if got > start:
                    self.failures = 0  # progress: the budget counts failures in a row
                self.failed(cause)
        finally:
            if response is not None:
                response.close()
            if self.own_client:
                self.client.close()
