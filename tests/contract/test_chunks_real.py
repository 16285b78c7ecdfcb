"""Adaptive updates for real: the chunk store served by nginx and from file://, the publisher.

The ChunkSource contract runs against HttpChunkSource over a private nginx on
127.0.0.1 and over file:// URLs, with stores written by the real publisher
(kubesolo_adapters.chunkstore: zstd files named by their hash). Beside it,
what only a real server shows: one request per distinct chunk, a chunk cut
short resumed with Range (nginx's ``limit_rate``), a store shared by two
releases gaining only the new chunks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from kubesolo_adapters.chunkfetch import HttpChunkSource
from kubesolo_adapters.chunkstore import publish_chunks
from kubesolo_adapters.http import HttpFetcher
from kubesolo_core.chunks import ChunkIndex, chunk_path, parse_index
from kubesolo_core.errors import FetchError
from kubesolo_core.release import ChunksSpec
from tests.contract.chunks_suite import ChunkRig, ChunkSourceContract, image_bytes, needs_of
from tests.contract.nginx import Nginx, nginx_binary, start_nginx
from tests.tools import require_tool

SLOW = "location /slow/ { limit_rate_after 100k; limit_rate 1; }"
_folders = count()


def fast_fetcher() -> HttpFetcher:
    return HttpFetcher(
        connect_timeout=2,
        read_timeout=0.5,
        retries=3,
        backoff=0.01,
        max_backoff=0.05,
        sleep=lambda _: None,
    )


def _publisher(folder: Path) -> tuple[object, object]:
    def publish(image: bytes, name: str) -> tuple[ChunksSpec, ChunkIndex]:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(image)
        done = publish_chunks(path, folder, level=3)
        spec = done.spec(folder)
        chunks = ChunksSpec(
            index=str(spec["index"]),
            sha256=str(spec["sha256"]),
            size=int(str(spec["size"])),
            store=str(spec["store"]),
        )
        return chunks, parse_index(done.index.read_bytes())

    def damage(sha: bytes, how: str) -> None:
        path = folder / "chunks" / chunk_path(sha)
        if how == "missing":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x40
            path.write_bytes(bytes(data))

    return publish, damage


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if nginx_binary() is None:
        require_tool("nginx")
    server = start_nginx(
        tmp_path_factory.mktemp("www"), tmp_path_factory.mktemp("nginx"), extra=SLOW
    )
    try:
        yield server
    finally:
        server.stop()


class TestChunkSourceOnNginx(ChunkSourceContract):
    @pytest.fixture
    def rig(self, nginx: Nginx) -> ChunkRig:
        name = f"stable{next(_folders)}"
        publish, damage = _publisher(nginx.root / name)
        return ChunkRig(
            source=HttpChunkSource(fetcher=fast_fetcher()),
            release_url=nginx.url(f"{name}/release.json"),
            publish=publish,  # type: ignore[arg-type]
            damage=damage,  # type: ignore[arg-type]
        )


class TestChunkSourceOnFileUrls(ChunkSourceContract):
    @pytest.fixture
    def rig(self, tmp_path: Path) -> ChunkRig:
        folder = tmp_path / "usb media"  # a space: URL quoting matters
        publish, damage = _publisher(folder)
        return ChunkRig(
            source=HttpChunkSource(fetcher=fast_fetcher()),
            release_url=(folder / "release.json").as_uri(),
            publish=publish,  # type: ignore[arg-type]
            damage=damage,  # type: ignore[arg-type]
        )


def test_one_request_per_distinct_chunk_over_kept_alive_connections(nginx: Nginx) -> None:
    name = f"stable{next(_folders)}"
    publish, _ = _publisher(nginx.root / name)
    image = image_bytes(seed=b"count") + bytes(1 << 20)
    spec, index = publish(image, "os.img")  # type: ignore[operator]
    needs = needs_of(index)
    assert len(needs) < len(index)  # the run of zeros repeats one chunk
    source = HttpChunkSource(fetcher=fast_fetcher(), concurrency=3)
    got = list(source.fetch_chunks(nginx.url(f"{name}/release.json"), spec, needs))
    assert len(got) == len(needs)
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in nginx.access_log() if f"/{name}/chunks/" in line]
        if len(lines) >= len(needs):
            break
        time.sleep(0.05)
    assert len(lines) == len(needs), lines
    assert all(line.startswith("200 ") for line in lines)


def test_a_chunk_cut_short_is_resumed_with_range(nginx: Nginx) -> None:
    # Incompressible chunks bigger than the 100 KiB nginx sends before it crawls.
    publish, _ = _publisher(nginx.root / "slow")
    # fixed bytes: os.urandom gave, now and then, no chunk over 150 KB (a CI run failed so)
    data = random.Random(29).randbytes(1 << 20)  # noqa: S311  (two chunks over 150 KB)
    spec, index = publish(data, "os.img")  # type: ignore[operator]
    big = [n for n in needs_of(index) if n.stored > 150_000][:2]
    assert big
    source = HttpChunkSource(fetcher=fast_fetcher(), concurrency=2)
    got = list(source.fetch_chunks(nginx.url("slow/release.json"), spec, big))
    assert {n.sha256 for n, _, _ in got} == {n.sha256 for n in big}
    deadline = time.monotonic() + 5
    ranged: list[str] = []
    while time.monotonic() < deadline:
        ranged = [ln for ln in nginx.access_log() if "/slow/chunks/" in ln and "bytes=" in ln]
        if len(ranged) >= len(big):
            break
        time.sleep(0.1)
    assert len(ranged) >= len(big), nginx.access_log()
    assert all(line.startswith("206 ") for line in ranged)


def test_a_chunk_file_shorter_than_the_index_says(tmp_path: Path) -> None:
    publish, _ = _publisher(tmp_path)
    spec, index = publish(image_bytes(seed=b"short"), "os.img")  # type: ignore[operator]
    need = needs_of(index)[0]
    path = tmp_path / "chunks" / chunk_path(need.sha256)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FetchError, match="index says"):
        list(HttpChunkSource().fetch_chunks((tmp_path / "r.json").as_uri(), spec, [need]))


def test_consecutive_releases_share_the_store(tmp_path: Path) -> None:
    one = bytearray(image_bytes(seed=b"rel"))
    (tmp_path / "1.img").write_bytes(one)
    first = publish_chunks(tmp_path / "1.img", tmp_path, level=3)
    two = bytearray(one)
    # two 4 KiB blocks change (fixed bytes: random ones made this flaky, ~1 run in 8,
    # when a cut point fell inside the change and split it into one chunk more)
    two[100_000:108_192] = random.Random(8192).randbytes(8192)  # noqa: S311  (test data)
    (tmp_path / "2.img").write_bytes(two)
    second = publish_chunks(tmp_path / "2.img", tmp_path, level=3)
    assert first.new_chunks == first.distinct
    # the chunks the change overlaps, plus one where a cut point inside it splits one
    assert 1 <= second.new_chunks <= 3, second.new_chunks
    files = list((tmp_path / "chunks").rglob("*.zst"))
    assert len(files) == first.distinct + second.new_chunks
    # publishing the same image again adds nothing
    assert publish_chunks(tmp_path / "2.img", tmp_path, level=3).new_chunks == 0
