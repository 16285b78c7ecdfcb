"""The release server over HTTP(S) (httpx) and file:// URLs: the Fetcher port for real.

Importing this module is cheap: httpx and ssl are imported by the methods
that fetch (only check and apply do), so the composition root can build the
fetcher for every command and ``status`` still never loads them.

What a box on a bad link can expect:

* connect and read timeouts on every request; bounded retries with
  exponential back-off and jitter (so a fleet does not hammer a server that
  just came back), honouring ``Retry-After`` up to ``max_backoff``;
* retried: connection errors, read timeouts, resets, bodies cut short, 408,
  429 and 5xx. Not retried: other 4xx, certificate failures, a server whose
  file is not the release's (wrong total size, more bytes than announced);
* an image download resumes a cut connection with ``Range: bytes=N-``. A 206
  must carry a matching ``Content-Range``; a 200 (a server that ignores
  Range) is read from the start and its first N bytes are skipped;
* ``retries`` counts failures in a row: an attempt that delivered new bytes
  starts the count again, so a long download over a flaky link finishes,
  while ``10 * (retries + 1)`` attempts in all is a hard bound;
* never more than ``image.size`` bytes are read, the SHA-256 is computed on
  the fly (:func:`kubesolo_adapters.streams.hashed`), and https is verified
  against the system's CA store by default (or a CA bundle file given as
  ``verify``);
* ``file://`` URLs and plain paths read air-gapped media, streamed too.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import attrs

from kubesolo_adapters.streams import hashed
from kubesolo_core.errors import FetchError
from kubesolo_core.ports import Progress
from kubesolo_core.release import ImageSpec

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["RELEASE_LIMIT", "HttpFetcher"]

#: a release document is a few hundred bytes; anything over this is not one
RELEASE_LIMIT = 1 << 20

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_USER_AGENT = "kubesolo-update"


class _TooSlow(Exception):
    """The transfer stayed under the minimum speed for a whole window."""


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


def _transport_cause(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _is_cert_failure(exc: BaseException) -> bool:
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


def _local_path(url: str) -> str | None:
    """The file system path of a file:// URL or a plain path; None for other schemes."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "":
        return url
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{url}: file:// URLs on another host are not supported")
    # urllib.request costs ~25 ms to import; only file:// URLs need it, and only here.
    from urllib.request import url2pathname

    return url2pathname(parts.path)


@attrs.define(kw_only=True)
class HttpFetcher:
    """The Fetcher port over httpx (http, https) and the local file system (file://)."""

    connect_timeout: float = 10
    read_timeout: float = 30
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30
    verify: bool | str = True
    chunk_size: int = 1 << 20
    #: abort (and resume) a transfer slower than ``min_speed`` bytes/s over a
    #: whole ``speed_window`` (curl's --speed-limit/--speed-time): read timeouts
    #: alone let a server that trickles a byte now and then hold a box forever
    min_speed: float = 1024
    speed_window: float = 60
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    # ----------------------------------------------------------------- plumbing

    def _ssl(self) -> ssl.SSLContext | bool:
        import ssl

        if self.verify is False:
            return False
        if isinstance(self.verify, str):
            try:
                return ssl.create_default_context(cafile=self.verify)
            except (OSError, ssl.SSLError) as exc:
                raise FetchError(
                    f"CA bundle {self.verify} could not be loaded: {exc}",
                    way_out="point verify at a PEM file of CA certificates",
                ) from None
        # The OS image's trust store first (operators add their CA there); certifi
        # (a dependency of httpx) only when the system store is empty.
        ctx = ssl.create_default_context()
        if not ctx.cert_store_stats().get("x509_ca"):
            with contextlib.suppress(ImportError, OSError):
                import certifi

                ctx.load_verify_locations(certifi.where())
        return ctx

    def _client(self) -> httpx.Client:
        import httpx

        return httpx.Client(
            timeout=httpx.Timeout(
                connect=self.connect_timeout,
                read=self.read_timeout,
                write=self.read_timeout,
                pool=self.connect_timeout,
            ),
            verify=self._ssl(),
            follow_redirects=True,
            # identity: sizes, hashes and Range offsets are about the bytes as stored.
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
        )

    def _delay(self, failures: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** max(failures - 1, 0))
        delay *= random.uniform(0.5, 1.0)  # noqa: S311  (jitter, not cryptography)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return float(delay)

    # ----------------------------------------------------------------- release document

    def fetch_release(self, url: str) -> bytes:
        """The release document at ``url`` (http, https, file:// or a path); at most 1 MiB."""
        import httpx

        path = _local_path(url)
        if path is not None:
            try:
                with Path(path).open("rb") as fh:
                    data = fh.read(RELEASE_LIMIT + 1)
            except OSError as exc:
                raise FetchError(f"{url}: {exc.strerror or exc}") from None
            if len(data) > RELEASE_LIMIT:
                raise FetchError(
                    f"{url}: bigger than {RELEASE_LIMIT} bytes: not a release document"
                )
            return data
        _check_scheme(url)
        with self._client() as client:
            dl = _Download(fetcher=self, client=client, url=url, size=RELEASE_LIMIT)
            while True:
                response, _ = dl.connect(0, whole_limit=RELEASE_LIMIT)
                try:
                    body = bytearray()
                    for part in response.iter_raw(self.chunk_size):
                        body += part
                        if len(body) > RELEASE_LIMIT:
                            raise FetchError(
                                f"{url}: bigger than {RELEASE_LIMIT} bytes: not a release document"
                            )
                    return bytes(body)
                except httpx.TransportError as exc:
                    dl.transport_failed(exc)
                finally:
                    response.close()

    # ----------------------------------------------------------------- image

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        """Open the image (eagerly: a 404 raises here) and stream its served bytes.

        The stream resumes cut connections, never yields more than
        ``image.size`` bytes and raises FetchError at its end unless size and
        SHA-256 are the release's.
        """
        url = urllib.parse.urljoin(release_url, image.url)
        path = _local_path(url)
        if path is not None:
            chunks = self._file_chunks(url, path, image, progress)
        else:
            _check_scheme(url)
            client = self._client()
            try:
                dl = _Download(fetcher=self, client=client, url=url, size=image.size)
                first = dl.connect(0, whole_limit=image.size)
            except BaseException:
                client.close()
                raise
            chunks = dl.chunks(first, progress)
        return hashed(chunks, size=image.size, sha256=image.sha256, what=url)

    def _file_chunks(
        self, url: str, path: str, image: ImageSpec, progress: Progress | None
    ) -> Iterator[bytes]:
        try:
            fh = Path(path).open("rb")  # noqa: SIM115  (closed by the generator below)
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror or exc}") from None
        size = Path(path).stat().st_size
        if size != image.size:
            fh.close()
            raise FetchError(
                f"{url}: the file has {size} bytes, the release says {image.size}",
                way_out="the medium holds another image than the release document names",
            )

        def gen() -> Iterator[bytes]:
            got = 0
            with fh:
                while True:
                    try:
                        chunk = fh.read(self.chunk_size)
                    except OSError as exc:
                        raise FetchError(
                            f"{url}: read failed after {got} bytes: {exc.strerror}"
                        ) from None
                    if not chunk:
                        return
                    if got + len(chunk) > image.size:
                        raise FetchError(f"{url}: longer than the {image.size} bytes announced")
                    got += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(got, image.size)

        return gen()


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise FetchError(
            f"{url}: unsupported URL scheme {scheme!r}",
            way_out="use an https://, http:// or file:// URL",
        )


@attrs.define(kw_only=True)
class _Download:
    """One URL's attempts: connecting with Range, counting failures, backing off."""

    fetcher: HttpFetcher
    client: httpx.Client
    url: str
    size: int
    attempts: int = 0
    failures: int = 0

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
        self.fetcher.sleep(self.fetcher._delay(self.failures, retry_after))

    def transport_failed(self, exc: httpx.HTTPError) -> None:
        """A connection-level failure: fatal for certificates and protocol misuse, else retried."""
        import httpx

        if _is_cert_failure(exc):
            raise FetchError(
                f"{self.url}: TLS certificate verification failed: {exc}",
                way_out="install the server's CA in the system store or pass a CA bundle",
            ) from None
        if not isinstance(exc, httpx.TransportError) or isinstance(
            exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError
        ):
            self._give_up(_transport_cause(exc), retried=False)
        self.failed(_transport_cause(exc))

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
                self._give_up(
                    f"the server announces {length} bytes, more than the {whole_limit} expected",
                    retried=False,
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
        return self._give_up(f"HTTP {status} {response.reason_phrase}", retried=False)

    def chunks(
        self, first: tuple[httpx.Response, int], progress: Progress | None
    ) -> Iterator[bytes]:
        """The image's bytes from the first response on, resuming after failures.

        Network reads are gathered into chunks of ``chunk_size`` (fewer, larger
        writes downstream); what was gathered when a connection breaks is
        still yielded, so the resume starts exactly after it.
        """
        import httpx

        response: httpx.Response | None = first[0]
        skip = first[1]
        got = 0
        buf = bytearray()
        limit = self.fetcher.chunk_size
        try:
            while True:
                if response is None:
                    response, skip = self.connect(got, whole_limit=self.size)
                start = got
                window_start = self.fetcher.monotonic()
                window_bytes = 0
                try:
                    for part in response.iter_raw():
                        window_bytes += len(part)
                        now = self.fetcher.monotonic()
                        if now - window_start >= self.fetcher.speed_window:
                            if window_bytes < self.fetcher.min_speed * (now - window_start):
                                raise _TooSlow(
                                    f"slower than {self.fetcher.min_speed:.0f} bytes/s for "
                                    f"{now - window_start:.0f} s ({window_bytes} bytes)"
                                )
                            window_start, window_bytes = now, 0
                        chunk = part
                        if skip:
                            drop = min(skip, len(chunk))
                            skip -= drop
                            chunk = chunk[drop:]
                        if got + len(chunk) > self.size:
                            self._give_up(
                                f"the server sent more than the {self.size} bytes announced",
                                retried=False,
                            )
                        got += len(chunk)
                        buf += chunk
                        if len(buf) >= limit:
                            out = bytes(buf)
                            buf.clear()
                            yield out
                            if progress is not None:
                                progress(got, self.size)
                    cause = f"the body ended after {got} of {self.size} bytes"
                except _TooSlow as slow:
                    cause = str(slow)
                    start = got  # a crawl is no progress: it must not refill the budget
                except httpx.HTTPError as exc:
                    cause = _transport_cause(exc)
                    if _is_cert_failure(exc) or not isinstance(exc, httpx.TransportError):
                        self.transport_failed(exc)
                finally:
                    response.close()
                    response = None
                if buf:
                    out = bytes(buf)
                    buf.clear()
                    yield out
                    if progress is not None:
                        progress(got, self.size)
                if got == self.size and not skip:
                    return
                if got > start:
                    self.failures = 0  # progress: the budget counts failures in a row
                self.failed(cause)
        finally:
            if response is not None:
                response.close()
            self.client.close()
