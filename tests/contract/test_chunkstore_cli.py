"""``python -m kubesolo_entrypoints.chunkstore``: the unsigned publisher's chunk step, as a process.

Real files, a real zstd store; each run is a subprocess with a timeout, so an
input that would block (a FIFO) fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kubesolo_adapters.sandbox import build_release
from kubesolo_core.release import release_document


def chunkstore(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubesolo_entrypoints.chunkstore", *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "os-1.1.0.img"
    path.write_bytes(random.Random(1101).randbytes(3 << 20))  # noqa: S311  (test data)
    return path


def _no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_publish_then_a_second_release_shares_the_store(tmp_path: Path, image: Path) -> None:
    out = tmp_path / "www"
    r = chunkstore(image, out, "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["image_size"] == 3 << 20
    assert first["new_chunks"] == first["distinct_chunks"] > 0
    assert (out / "os-1.1.0.img.chunks").is_file()
    # the same bytes again under another name: every chunk is already stored
    again = tmp_path / "os-1.1.1.img"
    again.write_bytes(image.read_bytes())
    second = json.loads(chunkstore(again, out, "--json").stdout)
    assert second["new_chunks"] == 0 and second["chunk_count"] == first["chunk_count"]


def test_release_document_gets_its_chunks_field(tmp_path: Path, image: Path) -> None:
    release, _ = build_release("1.1.0", image.read_bytes(), url="os-1.1.0.img.gz")
    doc = tmp_path / "release.json"
    doc.write_text(json.dumps(release_document(release)))
    r = chunkstore(image, tmp_path, "--release", doc)
    assert r.returncode == 0, r.stderr
    assert json.loads(doc.read_text())["image"]["chunks"]["index"] == "os-1.1.0.img.chunks"


def test_release_document_of_another_image_is_left_alone(tmp_path: Path, image: Path) -> None:
    release, _ = build_release("1.1.0", b"another image" * 1000)
    doc = tmp_path / "release.json"
    doc.write_text(json.dumps(release_document(release)))
    before = doc.read_bytes()
    r = chunkstore(image, tmp_path / "www", "--release", doc)
    assert r.returncode == 5, r.stderr
    assert "another image" in r.stderr
    _no_traceback(r)
    assert doc.read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "endless-device", "directory", "missing"])
def test_release_that_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, image: Path, kind: str
) -> None:
    release = tmp_path / "release.json"
    if kind == "fifo":
        os.mkfifo(release)
    elif kind == "endless-device":
        release = Path("/dev/zero")
    elif kind == "directory":
        release = tmp_path
    r = chunkstore(image, tmp_path / "www", "--release", release)
    assert r.returncode == 2, r.stderr
    assert f"--release {release}" in r.stderr
    _no_traceback(r)
    assert not (tmp_path / "www").exists(), "the store was written before the input was checked"


@pytest.mark.parametrize("image_arg", ["missing.img", "."])
def test_image_that_is_not_a_file_is_a_usage_error(tmp_path: Path, image_arg: str) -> None:
    r = chunkstore(tmp_path / image_arg, tmp_path / "www")
    assert r.returncode == 2, r.stderr
    assert "IMAGE" in r.stderr
    _no_traceback(r)
