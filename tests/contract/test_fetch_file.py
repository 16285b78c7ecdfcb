"""HttpFetcher on air-gapped media: file:// URLs and plain paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesolo_adapters.http import RELEASE_LIMIT, HttpFetcher
from kubesolo_core.errors import FetchError
from tests.contract.fetch_suite import FetcherContract, FetchRig, drain, payload, spec_for


def _rig(root: Path, as_url: bool) -> FetchRig:
    def publish(name: str, data: bytes) -> str:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path.as_uri() if as_url else str(path)

    def where(name: str) -> str:
        return (root / name).as_uri() if as_url else str(root / name)

    return FetchRig(
        fetcher=HttpFetcher(chunk_size=256 << 10),
        release_url=where("release.json"),
        publish=publish,
        missing_url=where("nothing-here.json"),
    )


class TestHttpFetcherOnFileUrls(FetcherContract):
    @pytest.fixture
    def rig(self, tmp_path: Path) -> FetchRig:
        return _rig(tmp_path / "media dir", as_url=True)  # a space: URL quoting matters


class TestHttpFetcherOnPlainPaths(FetcherContract):
    @pytest.fixture
    def rig(self, tmp_path: Path) -> FetchRig:
        return _rig(tmp_path / "usb", as_url=False)


def test_a_huge_document_on_media_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "release.json"
    doc.write_bytes(b" " * (RELEASE_LIMIT + 1))
    with pytest.raises(FetchError, match="bigger"):
        HttpFetcher().fetch_release(doc.as_uri())


def test_progress_on_media(tmp_path: Path) -> None:
    data = payload(1_000_000, b"media")
    (tmp_path / "os.img").write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    fetcher = HttpFetcher(chunk_size=100_000)
    got, chunks = drain(
        fetcher.open_image(
            (tmp_path / "release.json").as_uri(),
            spec_for(data, "os.img"),
            lambda d, t: seen.append((d, t)),
        )
    )
    assert got == data
    assert chunks == 10
    assert seen[-1] == (len(data), len(data))


def test_a_remote_host_in_a_file_url_is_refused() -> None:
    with pytest.raises(FetchError, match="another host"):
        HttpFetcher().fetch_release("file://server/share/release.json")
