"""Adaptive apply for real: ext4 images made by mkfs.ext4, image-file and loop-device slots, nginx.

Two releases of a real ext4 filesystem (``mkfs.ext4 -d`` over a folder of
files; the second one rebuilt after replacing a few files, so some data
moved), published by the real publisher into a chunk store that a private
nginx on 127.0.0.1 serves. The agent (real slots, HttpFetcher,
HttpChunkSource, BlockChunkedSlots; the boot env and the node are the memory
fakes) applies release 2 with the passive slot holding release 1, nothing,
or foreign bytes, and falls back to the full image when a chunk is missing or
corrupt or the index is not the one the release names.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_adapters.chunkfetch import HttpChunkSource
from kubesolo_adapters.chunkstore import publish_chunks
from kubesolo_adapters.chunkwriter import BlockChunkedSlots, ext_size
from kubesolo_adapters.fakes import (
    MemoryBootEnv,
    MemoryClock,
    MemoryKube,
    MemoryProbes,
    MemoryStateStore,
)
from kubesolo_adapters.slotwriter import HEAD_BYTES
from kubesolo_core.adaptive import AdaptiveUpdater
from kubesolo_core.bootmodel import GrubModel
from kubesolo_core.chunks import chunk_path, parse_index, plan_update
from kubesolo_core.errors import FetchError, SlotConflict, SlotError
from kubesolo_core.lifecycle import Phase
from kubesolo_core.release import parse_release
from kubesolo_core.services import Agent
from kubesolo_core.slots import Slot
from tests.contract.loopdev import attached, mounted
from tests.contract.nginx import Nginx, nginx_binary, start_nginx
from tests.contract.test_chunks_real import fast_fetcher
from tests.tools import require_root, require_tool

MIB = 1 << 20
IMAGE = 16 * MIB
SLOT = 20 * MIB
_folders = count()


def _tree(root: Path, version: str, replaced: int) -> None:
    root.mkdir(parents=True)
    (root / "version").write_text(version + "\n")
    lib = root / "usr" / "lib"
    lib.mkdir(parents=True)
    for n in range(40):
        seed = f"{n}-{version}" if n < replaced else str(n)
        block = hashlib.sha256(seed.encode()).digest()
        size = 40_000 + 7_000 * n
        data = (block * (size // 32 + 1))[:size]
        # varied, half compressible, like binaries and text
        data = bytes(b ^ (i * 7 % 251) for i, b in enumerate(data[: size // 2])) + data[size // 2 :]
        (lib / f"lib{n:02d}.so").write_bytes(data)


def _mkfs(tree: Path, image: Path) -> bytes:
    with image.open("wb") as fh:
        fh.truncate(IMAGE)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "KSOLOROOT",
         "-U", "6b1f3c2e-5a4d-4e8f-9c1b-2d3e4f5a6b7c",
         "-E", "hash_seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0,root_owner=0:0",
         "-d", str(tree), str(image)],
        check=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1767225600"},
    )  # fmt: skip
    return image.read_bytes()


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    require_tool("mkfs.ext4", "debugfs")
    work = tmp_path_factory.mktemp("releases")
    _tree(work / "t1", "1.0.0", 0)
    _tree(work / "t2", "1.1.0", 3)  # three libraries upgraded, the rest moved or kept
    return _mkfs(work / "t1", work / "1.img"), _mkfs(work / "t2", work / "2.img")


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if nginx_binary() is None:
        require_tool("nginx")
    server = start_nginx(tmp_path_factory.mktemp("www"), tmp_path_factory.mktemp("nginx"))
    try:
        yield server
    finally:
        server.stop()


def _publish(nginx: Nginx, releases: tuple[bytes, bytes]) -> tuple[Path, str]:
    """Both releases into one store; release.json names release 2. Returns (folder, its URL)."""
    folder = nginx.root / f"stable{next(_folders)}"
    folder.mkdir()
    for version, image in (("1.0.0", releases[0]), ("1.1.0", releases[1])):
        path = folder / f"os-{version}.img"
        path.write_bytes(image)
        done = publish_chunks(path, folder, level=3)
    sha = hashlib.sha256(releases[1]).hexdigest()
    doc = {
        "schema": 1,
        "version": "1.1.0",
        "image": {"url": "os-1.1.0.img", "sha256": sha, "size": IMAGE, "chunks": done.spec(folder)},
    }
    (folder / "release.json").write_text(json.dumps(doc))
    return folder, nginx.url(f"{folder.name}/release.json")


def _slots(tmp_path: Path, releases: tuple[bytes, bytes], passive: bytes) -> BlockSlotStore:
    for slot, content in ((Slot.A, releases[0]), (Slot.B, passive)):
        with (tmp_path / f"{slot.value}.img").open("wb") as fh:
            fh.truncate(SLOT)
            fh.write(content)
    return BlockSlotStore({s: str(tmp_path / f"{s.value}.img") for s in Slot})


def _agent(slots: BlockSlotStore, url: str, events: list[Any]) -> Agent:
    model = GrubModel()
    return Agent(
        boot_env=MemoryBootEnv(model=model, env=model.initial(Slot.A)),
        slots=slots,
        fetcher=fast_fetcher(),
        kube=MemoryKube(),
        probes=MemoryProbes(),
        clock=MemoryClock(),
        store=MemoryStateStore(),
        server=url,
        adaptive=AdaptiveUpdater(
            source=HttpChunkSource(fetcher=fast_fetcher()), slots=BlockChunkedSlots(slots)
        ),
        events=lambda event, **fields: events.append((event, fields)),
    )


def _changed(a: bytes, b: bytes) -> int:
    return sum(a[i : i + 4096] != b[i : i + 4096] for i in range(0, len(b), 4096)) * 4096


@pytest.mark.parametrize("passive", ["previous", "empty", "foreign"])
def test_apply_builds_the_slot_from_chunks(
    tmp_path: Path, nginx: Nginx, releases: tuple[bytes, bytes], passive: str
) -> None:
    old, new = releases
    content = {"previous": old, "empty": b"", "foreign": os.urandom(IMAGE)}[passive]
    slots = _slots(tmp_path, releases, content)
    _, url = _publish(nginx, releases)
    events: list[Any] = []
    result = _agent(slots, url, events).apply()
    assert result.state.phase is Phase.STAGED
    assert (tmp_path / "B.img").read_bytes()[:IMAGE] == new
    assert (tmp_path / "A.img").read_bytes()[:IMAGE] == old  # the booted slot: only read
    stats = result.stats
    assert stats is not None and stats.mode == "adaptive", events
    assert stats.in_place + stats.copied <= IMAGE
    # what release 1 lacks is all that travels (compressed), with the index
    assert 0 < stats.downloaded < _changed(old, new)
    if passive == "previous":
        assert stats.written <= _changed(old, new)  # only the blocks that differ
        assert stats.in_place > IMAGE // 2
    else:
        assert stats.copied > IMAGE // 4  # moved and kept data found in the booted slot
    assert not [e for e in events if e[0] == "update.adaptive_fallback"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("missing", "404"),
        ("corrupt", "chunk"),
        ("index-hash", "chunk index unusable"),
        ("index-gone", "chunk index unusable"),
    ],
)
def test_anything_wrong_falls_back_to_the_full_image(
    tmp_path: Path, nginx: Nginx, releases: tuple[bytes, bytes], fault: str, reason: str
) -> None:
    old, new = releases
    slots = _slots(tmp_path, releases, old)
    folder, url = _publish(nginx, releases)
    doc = json.loads((folder / "release.json").read_text())
    index = parse_index((folder / doc["image"]["chunks"]["index"]).read_bytes())
    if fault in ("missing", "corrupt"):
        # a chunk release 1 does not have: the box has to fetch it
        have = {c.sha256 for c in parse_index((folder / "os-1.0.0.img.chunks").read_bytes())}
        fresh = [c for c in index if c.sha256 not in have]
        path = folder / "chunks" / chunk_path(fresh[-1].sha256)
        if fault == "missing":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x10
            path.write_bytes(bytes(data))
    elif fault == "index-hash":
        doc["image"]["chunks"]["sha256"] = "0" * 64
    else:
        (folder / doc["image"]["chunks"]["index"]).unlink()
    (folder / "release.json").write_text(json.dumps(doc))
    events: list[Any] = []
    result = _agent(slots, url, events).apply()
    assert result.state.phase is Phase.STAGED
    assert (tmp_path / "B.img").read_bytes()[:IMAGE] == new
    assert result.stats is not None and result.stats.mode == "full"
    logged = [f["reason"] for e, f in events if e == "update.adaptive_fallback"]
    assert len(logged) == 1 and reason in logged[0], logged


def test_a_cut_chunked_write_leaves_the_first_mib_alone(
    tmp_path: Path, releases: tuple[bytes, bytes]
) -> None:
    """The head (superblocks, label) is written last: a write that fails mid-way never has."""
    old, new = releases
    # mkfs.ext4 -d may or may not lay the head out alike for both releases: make it differ
    new = new[:0x30000] + os.urandom(4096) + new[0x31000:]
    slots = _slots(tmp_path, releases, old)
    folder = tmp_path / "pub"
    folder.mkdir()
    (folder / "2.img").write_bytes(new)
    index = parse_index(publish_chunks(folder / "2.img", folder, level=3).index.read_bytes())
    writer = BlockChunkedSlots(slots)
    survey = writer.survey(
        Slot.B, None, index
    )  # no booted slot: everything not in place is fetched
    plan = plan_update(index, survey.in_place, survey.seed)
    assert any(o < HEAD_BYTES for n in plan.fetches for o in n.offsets)  # the head differs
    image = parse_release(
        {"schema": 1, "version": "1.1.0",
         "image": {"url": "x", "sha256": hashlib.sha256(new).hexdigest(), "size": IMAGE}}
    ).image  # fmt: skip
    source = HttpChunkSource()

    def fetch(needs: Any) -> Iterator[Any]:
        # every chunk, then the connection dies for good
        yield from source.fetch_chunks(
            (folder / "r.json").as_uri(),
            parse_release({"schema": 1, "version": "1.1.0", "image": {
                "url": "x", "sha256": "a" * 64, "size": 1,
                "chunks": {"index": "2.img.chunks", "sha256": "a" * 64, "size": 1}}}).image.chunks,  # type: ignore[arg-type]
            needs,
        )  # fmt: skip
        raise FetchError("the link went down")

    with pytest.raises(FetchError, match="link went down"):
        writer.write_plan(Slot.B, seed=None, index=index, plan=plan, fetch=fetch, image=image)
    after = (tmp_path / "B.img").read_bytes()
    assert after[:HEAD_BYTES] == old[:HEAD_BYTES]  # the old superblock and label are intact
    assert after[HEAD_BYTES:IMAGE] == new[HEAD_BYTES:]  # the body was written


def test_survey_reads_the_filesystem_size_of_the_booted_slot(releases: tuple[bytes, bytes]) -> None:
    assert ext_size(releases[0][:4096]) == IMAGE
    assert ext_size(os.urandom(4096)) is None


def test_a_mounted_passive_slot_is_refused_by_the_slot_guard(
    tmp_path: Path, nginx: Nginx, releases: tuple[bytes, bytes]
) -> None:
    """The identity guard (issue 8) covers the chunked writer: before apply, and on its open."""
    require_root()
    require_tool("losetup", "mount")
    old, new = releases
    _slots(tmp_path, releases, old)
    folder, url = _publish(nginx, releases)
    doc = json.loads((folder / "release.json").read_text())
    index = parse_index((folder / doc["image"]["chunks"]["index"]).read_bytes())
    image = parse_release(doc).image
    with (
        attached(tmp_path / "A.img") as dev_a,
        attached(tmp_path / "B.img") as dev_b,
        mounted(dev_b, tmp_path / "mnt"),
    ):
        slots = BlockSlotStore({Slot.A: dev_a, Slot.B: dev_b})
        before = Path(dev_b).read_bytes()[:IMAGE]
        with pytest.raises(SlotConflict, match="mounted"):
            _agent(slots, url, []).apply()
        # and the writer itself, called past apply's check, opens only through the guard
        writer = BlockChunkedSlots(slots)
        survey = writer.survey(Slot.B, Slot.A, index)
        plan = plan_update(index, survey.in_place, survey.seed)
        assert plan.copies or plan.fetches
        with pytest.raises(SlotError, match="mounted"):
            writer.write_plan(
                Slot.B, seed=Slot.A, index=index, plan=plan, fetch=lambda _: iter(()), image=image
            )
        assert Path(dev_b).read_bytes()[:IMAGE] == before
        assert new != before


def test_apply_on_loop_devices_and_the_cli_figures(
    tmp_path: Path, nginx: Nginx, releases: tuple[bytes, bytes]
) -> None:
    """The real CLI (apply --json) on loop-device slots; last-apply.json feeds the metrics."""
    require_root()
    require_tool("losetup")
    old, new = releases
    _slots(tmp_path, releases, old)
    _, url = _publish(nginx, releases)
    from kubesolo_adapters.grubenvfile import PythonBackend
    from kubesolo_entrypoints import metrics
    from kubesolo_entrypoints.config import Settings

    grubenv = tmp_path / "grubenv"
    PythonBackend(grubenv).set({"active_slot": "A", "boot_counter": "3", "boot_success": "1"})
    (tmp_path / "cmdline").write_text("ro kubesolo.slot=A\n")
    state = tmp_path / "var" / "state.json"
    with attached(tmp_path / "A.img") as dev_a, attached(tmp_path / "B.img") as dev_b:
        proc = subprocess.run(
            [sys.executable, "-m", "kubesolo_entrypoints",
             "--config", "/dev/null", "--state", str(state), "--server", url,
             "--bootloader", "grub", "--grubenv", str(grubenv),
             "--slot-a", dev_a, "--slot-b", dev_b, "--cmdline", str(tmp_path / "cmdline"),
             "apply", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
            env={
                **os.environ,
                "KUBESOLO_UPDATE_BOOT_ID": str(tmp_path / "cmdline"),
                "KUBESOLO_UPDATE_ALLOW_UNSIGNED": "true",  # a plain release document
            },
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert Path(dev_b).read_bytes()[:IMAGE] == new
    doc = json.loads(proc.stdout)
    assert doc["stats"]["mode"] == "adaptive"
    assert 0 < doc["stats"]["written_bytes"] <= _changed(old, new)
    assert doc["stats"]["in_place_bytes"] > IMAGE // 2
    record = json.loads((state.parent / "last-apply.json").read_text())
    assert record["downloaded_bytes"] == doc["stats"]["downloaded_bytes"]
    text = metrics.render(Settings(state=state, grubenv=grubenv, bootloader="grub"))
    assert (
        f'kubesolo_update_last_apply_bytes{{kind="written"}} {float(record["written_bytes"])}'
        in text
    )
    assert "kubesolo_update_last_apply_adaptive 1.0" in text


def _survey_of(
    tmp_path: Path, old: bytes, new: bytes, passive: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any, list[int]]:
    for name, content in (("A", old), ("B", passive)):
        with (tmp_path / f"{name}.img").open("wb") as fh:
            fh.truncate(SLOT)
            fh.write(content)
    slots = BlockSlotStore({s: str(tmp_path / f"{s.value}.img") for s in Slot})
    (tmp_path / "new.img").write_bytes(new)
    index = parse_index(publish_chunks(tmp_path / "new.img", tmp_path, level=1).index.read_bytes())
    scans: list[int] = []
    whole = BlockChunkedSlots._seed

    def counted(self: BlockChunkedSlots, *args: Any) -> dict[bytes, int]:
        scans.append(1)
        return whole(self, *args)

    monkeypatch.setattr(BlockChunkedSlots, "_seed", counted)
    return index, BlockChunkedSlots(slots).survey(Slot.B, Slot.A, index), scans


def test_a_moved_layout_is_found_by_chunking_the_whole_booted_slot(
    tmp_path: Path, releases: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _ = releases
    # everything moved by three blocks (a rebuilt filesystem): nothing lines up
    new = os.urandom(3 * 4096) + old[: -3 * 4096]
    index, survey, scans = _survey_of(tmp_path, old, new, b"", monkeypatch)
    assert scans == [1]
    found = sum(c.length for c in index if c.sha256 in survey.seed)
    assert found > IMAGE // 2
    assert any(survey.seed[c.sha256] != c.offset for c in index if c.sha256 in survey.seed)


def test_a_shared_layout_is_not_scanned_whole(
    tmp_path: Path, releases: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, _ = releases
    new = bytearray(old)
    new[5 * MIB : 5 * MIB + 3 * 4096] = os.urandom(3 * 4096)  # a few blocks replaced in place
    index, survey, scans = _survey_of(tmp_path, old, bytes(new), b"", monkeypatch)
    assert scans == []
    # the booted slot held everything else at the same offsets: found there, no scan needed
    where: dict[bytes, set[int]] = {}
    for c in index:
        where.setdefault(c.sha256, set()).add(c.offset)
    assert all(offset in where[sha] for sha, offset in survey.seed.items())
    missing = [c for c, here in zip(index, survey.in_place, strict=True)
               if not here and c.sha256 not in survey.seed]  # fmt: skip
    assert 1 <= len(missing) <= 2
