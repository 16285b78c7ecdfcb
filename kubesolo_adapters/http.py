"""The release server over HTTP(S) (httpx) and file:// URLs: the Fetcher port for real.

Importing this module is cheap: httpx and ssl, and the download machinery
(:mod:`kubesolo_adapters.download`, the hashing stream), are imported by the
methods that fetch (only check and apply do), so the composition root can
build the fetcher for every command and ``status`` still never loads them.

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
* ``file://`` URLs and plain paths read air-gapped media, streamed too;
  only regular files are opened (a FIFO or a device is refused, never read);
* every URL is checked with :func:`kubesolo_core.urls.check_url` before
  urllib or httpx sees it, and an image URL, once resolved against its
  document, must keep the document's scheme (or go from http to https): a
  document from a server never makes the agent read a local file.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from kubesolo_adapters.inputs import InputTooLarge, open_input, read_input
from kubesolo_core.errors import FetchError, InvalidRelease, InvalidUrl
from kubesolo_core.urls import check_image_url, check_url, scheme_of

if TYPE_CHECKING:
    import ssl

    import httpx

    from kubesolo_adapters.download import FetchStatusError, FetchTooLong
    from kubesolo_core.ports import Progress
    from kubesolo_core.release import ImageSpec

__all__ = ["RELEASE_LIMIT", "FetchStatusError", "FetchTooLong", "HttpFetcher"]

#: a release document is a few hundred bytes; anything over this is not one
RELEASE_LIMIT = 1 << 20


def __getattr__(name: str) -> Any:
    # The errors of a fetch live with the download machinery, loaded on first use.
    if name in ("FetchStatusError", "FetchTooLong"):
        from kubesolo_adapters import download

        return getattr(download, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_USER_AGENT = "kubesolo-update"


def _local_path(url: str) -> str | None:
    """The file system path of a file:// URL or a plain path; None for other schemes."""
    from kubesolo_core.release import IMAGE_SCHEMES

    if scheme_of(url) is not None:
        try:  # urllib must never see a malformed URL (it raises ValueError)
            check_url(url, schemes=IMAGE_SCHEMES)
        except InvalidUrl as exc:
            raise FetchError(f"{url[:200]}: {exc.message}", way_out=exc.way_out) from None
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
    #: the TLS context, built once: loading the CA store costs tens of ms, and a
    #: TUF refresh makes several requests
    _context: ssl.SSLContext | bool | None = attrs.field(default=None, init=False, repr=False)

    # ----------------------------------------------------------------- plumbing

    def _ssl(self) -> ssl.SSLContext | bool:
        if self._context is None:
            self._context = self._new_ssl()
        return self._context

    def _new_ssl(self) -> ssl.SSLContext | bool:
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

    def backoff_delay(self, failures: int, retry_after: float | None) -> float:
        """How long to wait after ``failures`` failures in a row (jittered, capped)."""
        import random

        delay = min(self.max_backoff, self.backoff * 2 ** max(failures - 1, 0))
        delay *= random.uniform(0.5, 1.0)  # noqa: S311  (jitter, not cryptography)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return float(delay)

    # ----------------------------------------------------------------- release document

    def fetch_release(self, url: str, *, limit: int = RELEASE_LIMIT) -> bytes:
        """The document at ``url`` (http, https, file:// or a path); at most ``limit`` bytes.

        Raises FetchTooLong past ``limit`` and FetchStatusError for an HTTP
        error status or a missing file (404), so that TUF can tell "no newer
        root" from a failure.
        """
        import httpx

        from kubesolo_adapters.download import (
            Download,
            FetchStatusError,
            FetchTooLong,
            SpeedGuard,
            TooSlow,
        )

        path = _local_path(url)
        if path is not None:
            try:
                return read_input(path, limit=limit)
            except FileNotFoundError:
                raise FetchStatusError(f"{url}: no such file", status=404) from None
            except InputTooLarge:
                raise FetchTooLong(
                    f"{url}: bigger than {limit} bytes: not a release document"
                ) from None
            except OSError as exc:
                raise FetchError(f"{url}: {exc.strerror or exc}") from None
        _check_scheme(url)
        with self._client() as client:
            dl = Download(fetcher=self, client=client, url=url, size=limit)
            while True:
                response, _ = dl.connect(0, whole_limit=limit)
                try:
                    body = bytearray()
                    # metadata is small, but a trickle must not hold the box either
                    speed = SpeedGuard(fetcher=self)
                    for part in response.iter_raw():  # as it arrives: the guard sees the pace
                        body += part
                        if len(body) > limit:
                            raise FetchTooLong(
                                f"{url}: bigger than {limit} bytes: not a release document"
                            )
                        speed.feed(len(part))
                    return bytes(body)
                except TooSlow as slow:
                    dl.failed(str(slow))
                except httpx.TransportError as exc:
                    dl.transport_failed(exc)
                finally:
                    response.close()

    # ----------------------------------------------------------------- image

    def open_image(
        self,
        release_url: str,
        image: ImageSpec,
        progress: Progress | None = None,
        *,
        check_hash: bool = True,
    ) -> Iterator[bytes]:
        """Open the image (eagerly: a 404 raises here) and stream its served bytes.

        The stream resumes cut connections, never yields more than
        ``image.size`` bytes and raises FetchError at its end unless size and
        SHA-256 are the release's (``check_hash=False``: the size only, for a
        caller that checks each piece against signed chunk hashes).
        """
        from kubesolo_adapters.download import Download
        from kubesolo_adapters.streams import hashed
        from kubesolo_core.release import IMAGE_SCHEMES

        try:
            check_url(image.url, schemes=IMAGE_SCHEMES, relative=True)
            if scheme_of(release_url) is not None:
                check_url(release_url, schemes=IMAGE_SCHEMES)
            url = urllib.parse.urljoin(release_url, image.url)
            if scheme_of(url) is not None:  # else a plain path next to a local document
                check_url(url, schemes=IMAGE_SCHEMES)
            check_image_url(release_url, url)
        except InvalidUrl as exc:
            raise InvalidRelease(
                f"release document: image.url {image.url[:80]!r}: {exc.message}",
                way_out=exc.way_out,
            ) from None
        path = _local_path(url)
        if path is not None:
            chunks = self._file_chunks(url, path, image, progress)
        else:
            _check_scheme(url)
            client = self._client()
            try:
                dl = Download(fetcher=self, client=client, url=url, size=image.size)
                first = dl.connect(0, whole_limit=image.size)
            except BaseException:
                client.close()
                raise
            chunks = dl.chunks(first, progress)
        return hashed(
            chunks, size=image.size, sha256=image.sha256 if check_hash else None, what=url
        )

    def _file_chunks(
        self, url: str, path: str, image: ImageSpec, progress: Progress | None
    ) -> Iterator[bytes]:
        try:
            fh = open_input(path)
            size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror or exc}") from None
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
