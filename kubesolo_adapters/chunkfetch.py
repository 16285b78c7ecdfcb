"""The chunk index and chunk store of a release over HTTP(S) and file://: the ChunkSource port.

Every request goes through :mod:`kubesolo_adapters.http` (its
:class:`~kubesolo_adapters.download.Download`),
so a chunk gets exactly what a full image gets: connect and read timeouts,
bounded retries with back-off and jitter, ``Retry-After``, the minimum speed
over a window, Range resume of a cut body, https verified by default, and
never more bytes than the index announces for the file.

Chunks are fetched by ``concurrency`` worker threads (4 by default) over one
shared httpx client, so the connections are kept alive and reused from one
chunk file to the next; the needs are taken in image order, and a chunk
needed at several offsets is fetched once. Results go through a short queue
(``depth``), which bounds the memory whatever the number of chunks: at most
``concurrency + depth`` chunks (256 KiB each at most) are held at a time.
A chunk that cannot be had (404, the retries spent) or does not decompress
raises FetchError from the iterator; the caller falls back to the full image.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from kubesolo_adapters.download import Download
from kubesolo_adapters.http import HttpFetcher, _check_scheme, _local_path
from kubesolo_adapters.inputs import InputTooLarge, read_input
from kubesolo_adapters.streams import hashed
from kubesolo_core.adaptive import Fetched
from kubesolo_core.chunks import INDEX_LIMIT, Need, chunk_path
from kubesolo_core.errors import FetchError
from kubesolo_core.release import ChunksSpec

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpChunkSource", "unpack_chunk"]

_DONE = object()


def unpack_chunk(data: bytes, length: int, what: str) -> bytes:
    """The raw bytes of one chunk file (a zstd frame), never more than ``length`` + 1 of them."""
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        raw = reader.read(length + 1)
        while len(raw) <= length:  # a reader may return less than asked: read to the bound
            more = reader.read(length + 1 - len(raw))
            if not more:
                break
            raw += more
    except zstandard.ZstdError as exc:
        raise FetchError(f"{what}: not a zstd chunk file: {exc}") from None
    if len(raw) != length:
        raise FetchError(
            f"{what}: decompresses to {'more than ' if len(raw) > length else ''}"
            f"{min(len(raw), length)} bytes, the index says {length}"
        )
    return raw


@attrs.define(kw_only=True)
class HttpChunkSource:
    """The ChunkSource port over HttpFetcher's downloads (http, https, file://, paths)."""

    fetcher: HttpFetcher = attrs.field(factory=HttpFetcher)
    concurrency: int = 4
    depth: int = 8

    def _read_local(self, url: str, path: str, size: int) -> bytes:
        try:  # a regular file only (never a FIFO that hangs the apply), never past size
            data = read_input(path, limit=size)
        except InputTooLarge:
            raise FetchError(f"{url}: the file has more than the {size} bytes indexed") from None
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror or exc}") from None
        if len(data) != size:
            raise FetchError(f"{url}: the file has {len(data)} bytes, the index says {size}")
        return data

    def _read(self, url: str, size: int, client: httpx.Client | None) -> bytes:
        path = _local_path(url)
        if path is not None:
            return self._read_local(url, path, size)
        _check_scheme(url)
        own = client is None
        client = client if client is not None else self.fetcher._client()
        try:
            dl = Download(fetcher=self.fetcher, client=client, url=url, size=size, own_client=own)
            first = dl.connect(0, whole_limit=size)
        except BaseException:
            if own:
                client.close()
            raise
        data = b"".join(dl.chunks(first, None))
        if len(data) != size:
            raise FetchError(f"{url}: got {len(data)} bytes, the index says {size}")
        return data

    def fetch_index(self, release_url: str, spec: ChunksSpec) -> bytes:
        """The index, checked against the size and SHA-256 the release names."""
        url = urllib.parse.urljoin(release_url, spec.index)
        if spec.size > INDEX_LIMIT:
            raise FetchError(f"{url}: {spec.size} bytes is over the {INDEX_LIMIT} bytes allowed")
        data = self._read(url, spec.size, None)
        return b"".join(hashed([data], size=spec.size, sha256=spec.sha256, what=url))

    def fetch_chunks(
        self, release_url: str, spec: ChunksSpec, needs: Sequence[Need]
    ) -> Iterator[Fetched]:
        """Start ``concurrency`` workers on ``needs`` now; iterate (need, raw, served bytes)."""
        store = urllib.parse.urljoin(release_url, spec.store.rstrip("/") + "/")
        remote = _local_path(store) is None
        client = self.fetcher._client() if remote and needs else None
        todo = iter(sorted(needs, key=lambda n: n.offsets[0]))
        lock = threading.Lock()
        stop = threading.Event()
        out: queue.Queue[object] = queue.Queue(maxsize=max(self.depth, 1))

        def work() -> None:
            try:
                while not stop.is_set():
                    with lock:
                        need = next(todo, None)
                    if need is None:
                        return
                    url = urllib.parse.urljoin(store, chunk_path(need.sha256))
                    data = self._read(url, need.stored, client)
                    out.put((need, unpack_chunk(data, need.length, url), len(data)))
            except BaseException as exc:  # handed to the consumer
                out.put(exc)
            finally:
                out.put(_DONE)

        workers = (
            [
                threading.Thread(target=work, name=f"kubesolo-chunk-{n}", daemon=True)
                for n in range(max(1, min(self.concurrency, len(needs))))
            ]
            if needs
            else []
        )
        for thread in workers:
            thread.start()

        return _Results(out, workers, stop, client)


class _Results:
    """The fetched chunks as they arrive; ``close()`` stops the workers, even before a first read.

    (A generator's ``finally`` would not run when it is closed before it
    started, leaving the workers and the client behind.)
    """

    def __init__(
        self,
        out: queue.Queue[object],
        workers: list[threading.Thread],
        stop: threading.Event,
        client: httpx.Client | None,
    ) -> None:
        self._out = out
        self._workers = workers
        self._stop = stop
        self._client = client
        self._finished = 0
        self._closed = False

    def __iter__(self) -> _Results:
        return self

    def __next__(self) -> Fetched:
        try:
            while self._finished < len(self._workers) and not self._closed:
                item = self._out.get()
                if item is _DONE:
                    self._finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    return item  # type: ignore[return-value]
        except BaseException:
            self.close()
            raise
        self.close()
        raise StopIteration

    def close(self) -> None:
        """Stop the workers (each ends its current request) and close the client."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        # Unblock workers waiting on a full queue, then let them go.
        for thread in self._workers:
            for _ in range(400):  # bounded: a worker ends its current request first
                if not thread.is_alive():
                    break
                with contextlib.suppress(queue.Empty):
                    self._out.get(timeout=0.05)
        if self._client is not None:
            self._client.close()
