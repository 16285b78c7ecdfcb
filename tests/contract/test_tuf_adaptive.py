"""Adaptive updates under TUF: a signed repository made by kubesolo-release, served by nginx
and by file://, with a chunk index as a TUF target and a content-addressed chunk store.

The images are two releases of a real ext4 filesystem (``mkfs.ext4 -d``; the second
rebuilt with three libraries replaced, so data moved), from test_adaptive_apply. The box
(TufWorld: slot files, a grubenv, state.json, the agent as bootstrap builds it) boots
1.0.0 from slot A and holds 1.0.0 in slot B; the channel offers 1.1.0. The faults are a
mirror's (a compromised CDN): the publisher's directory stays honest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata
from typer.testing import CliRunner

from kubesolo_core.chunks import Chunk, ChunkIndex, chunk_path, parse_index
from kubesolo_core.lifecycle import Phase
from kubesolo_core.refusals import TrustRefused
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.cli import app as agent_app
from kubesolo_entrypoints.invocation import Run
from kubesolo_entrypoints.publisher.cli import app as release_app
from tests.contract.nginx import Nginx, nginx_binary, nginx_serving
from tests.contract.test_adaptive_apply import IMAGE, SLOT, releases
from tests.contract.tufworld import TufWorld
from tests.tools import require_tool

__all__ = ["releases"]  # the module-scoped fixture, shared with test_adaptive_apply

runner = CliRunner()
BLOCK = 4096


@pytest.fixture
def world(tmp_path: Path, releases: tuple[bytes, bytes]) -> TufWorld:
    old, new = releases
    w = TufWorld.create(
        tmp_path / "box", {"0.9.0": old, "1.0.0": old, "1.1.0": new}, slot_size=SLOT
    )
    w.publish("1.0.0", compress="zstd", chunks=True)
    w.publish("1.1.0", compress="zstd", chunks=True)
    return w


# --------------------------------------------------------------------------- helpers


def _doc(served: Path, channel: str = "stable") -> dict[str, Any]:
    """The channel document the signed targets metadata names now."""
    targets = Metadata.from_file(str(served / "metadata" / "targets.json")).signed.targets
    sha = targets[f"channels/{channel}.json"].hashes["sha256"]
    doc: dict[str, Any] = json.loads(
        (served / "targets" / "channels" / f"{sha}.{channel}.json").read_text()
    )
    return doc


def _index_file(served: Path, version: str) -> Path:
    (path,) = (served / "targets" / "images").glob(f"*.kubesolo-os-{version}.chunks")
    return path


def _index(served: Path, version: str) -> ChunkIndex:
    return parse_index(_index_file(served, version).read_bytes())


def _image_file(served: Path, version: str) -> Path:
    (path,) = (served / "targets" / "images").glob(f"*.kubesolo-os-{version}.img*")
    return path


def _chunk_file(served: Path, chunk: Chunk) -> Path:
    return served / "targets" / "chunks" / chunk_path(chunk.sha256)


def _at_offset(world: TufWorld) -> dict[bytes, list[bool]]:
    """Per chunk hash of 1.1.0: whether 1.0.0 (both slots) holds it, at each of its offsets."""
    old = world.images["1.0.0"]
    out: dict[bytes, list[bool]] = {}
    for c in _index(world.repo.served, "1.1.0"):
        here = hashlib.sha256(old[c.offset : c.offset + c.length]).digest() == c.sha256
        out.setdefault(c.sha256, []).append(here)
    return out


def _fresh(world: TufWorld) -> list[Chunk]:
    """1.1.0's chunks no slot holds anywhere: in neither 1.0.0's chunking (what chunking a
    whole slot finds) nor at any of their own offsets. They must be downloaded."""
    have = {c.sha256 for c in _index(world.repo.served, "1.0.0")}
    where = _at_offset(world)
    chunks = {c.sha256: c for c in _index(world.repo.served, "1.1.0")}
    return [c for sha, c in chunks.items() if sha not in have and not any(where[sha])]


def _in_place(world: TufWorld) -> set[bytes]:
    """1.1.0's chunks that slot B (1.0.0) holds at every offset they have: never fetched."""
    return {sha for sha, here in _at_offset(world).items() if all(here)}


def _requests(server: Nginx) -> list[tuple[int, int, str]]:
    """(status, bytes sent, path) of each request nginx logged."""
    out = []
    for line in server.access_log():
        status, _, sent, uri = line.rsplit(" ", 3)
        out.append((int(status), int(sent), uri))
    return out


@contextlib.contextmanager
def _served(world: TufWorld, mirror: Path, transport: str) -> Iterator[str]:
    """The URL of ``mirror`` over file:// or a private nginx (stopped on leaving)."""
    if transport == "file":
        yield world.url(mirror)
        return
    if nginx_binary() is None:
        require_tool("nginx")
    with nginx_serving(mirror, world.root / "nginx") as server:
        yield server.url()


def _evil_chunk(length: int, stored: int) -> bytes:
    """A valid zstd frame of ``length`` bytes of the attacker's choosing, padded with a
    skippable frame to ``stored`` bytes: it downloads and decompresses like the real one,
    and only its SHA-256 tells."""
    import zstandard

    frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(b"\xee" * length)
    pad = stored - len(frame) - 8
    assert pad >= 0, "pick a chunk that compresses worse than a run of one byte"
    return frame + struct.pack("<II", 0x184D2A50, pad) + b"\0" * pad


def _blocks_old_or_new(world: TufWorld, after: bytes) -> None:
    """Every 4 KiB block of the slot is 1.0.0's or 1.1.0's at that offset: no other byte."""
    old, new = world.images["1.0.0"], world.images["1.1.0"]
    for at in range(0, IMAGE, BLOCK):
        block = after[at : at + BLOCK]
        assert block in (old[at : at + BLOCK], new[at : at + BLOCK]), f"foreign bytes at {at}"


# --------------------------------------------------------------------------- the publisher


def test_add_publishes_the_index_as_a_target_and_releases_share_chunks(
    tmp_path: Path, releases: tuple[bytes, bytes]
) -> None:
    old, new = releases
    ws = tmp_path / "ws"
    served = ws / "repository"
    store = served / "targets" / "chunks"
    for name, data in (("1.img", old), ("2.img", new), ("3.img", new[::-1])):
        (tmp_path / name).write_bytes(data)
    assert runner.invoke(release_app, ["--dir", str(ws), "init"]).exit_code == 0

    def add(image: str, version: str, *more: str) -> Any:
        r = runner.invoke(
            release_app, ["--dir", str(ws), "add", str(tmp_path / image), "--version", version,
                          "--compress", "zstd", *more],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        return r

    r = add("1.img", "1.0.0")
    assert "chunk index images/kubesolo-os-1.0.0.chunks" in r.stdout
    first = {p.name for p in store.rglob("*.zst")}
    index1 = _index(served, "1.0.0")
    assert first == {chunk_path(c.sha256).split("/")[1] for c in index1}
    add("2.img", "1.1.0")
    second = {p.name for p in store.rglob("*.zst")}
    index2 = _index(served, "1.1.0")
    # the store gained exactly 1.1.0's chunks that 1.0.0 did not have
    added = {chunk_path(c.sha256).split("/")[1] for c in index2} - first
    assert second - first == added
    assert 0 < len(added) < len({c.sha256 for c in index2}) // 2
    # the index is a TUF target with its own length and hashes; the channel names it
    targets = Metadata.from_file(str(served / "metadata" / "targets.json")).signed.targets
    info = targets["images/kubesolo-os-1.1.0.chunks"]
    data = _index_file(served, "1.1.0").read_bytes()
    assert info.length == len(data)
    assert info.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert index2.raw_sha256 == hashlib.sha256(new).hexdigest() and index2.image_size == IMAGE
    image = _doc(served)["image"]
    assert image["chunks"] == {"index": "images/kubesolo-os-1.1.0.chunks", "store": "chunks"}
    assert not [p for p in targets if p.startswith("chunks/")]  # chunk files: not targets
    r = runner.invoke(release_app, ["--dir", str(ws), "verify", "--json"])
    assert r.exit_code == 0, r.output
    verified = json.loads(r.stdout)["stable"]
    assert verified["ok"] is True
    assert verified["distinct_chunks"] == len({c.sha256 for c in index2})
    status = json.loads(runner.invoke(release_app, ["--dir", str(ws), "status", "--json"]).stdout)
    assert status["channels"]["stable"]["chunk_index"] == "images/kubesolo-os-1.1.0.chunks"
    # --no-chunks: no index, no new chunk files, a channel document without chunks
    add("3.img", "1.2.0", "--no-chunks")
    assert {p.name for p in store.rglob("*.zst")} == second
    assert "chunks" not in _doc(served)["image"]
    targets = Metadata.from_file(str(served / "metadata" / "targets.json")).signed.targets
    assert "images/kubesolo-os-1.2.0.chunks" not in targets


def test_verify_fails_when_the_store_lacks_a_chunk(world: TufWorld) -> None:
    ws = str(world.repo.root_dir)
    assert runner.invoke(release_app, ["--dir", ws, "verify"]).exit_code == 0
    _chunk_file(world.repo.served, _fresh(world)[0]).unlink()
    r = runner.invoke(release_app, ["--dir", ws, "verify"])
    assert r.exit_code == 1
    assert "FAIL  stable: chunk_store: 1 of" in r.stdout and "full image" in r.stdout


# --------------------------------------------------------------------------- the agent


def test_signed_adaptive_apply_downloads_only_the_missing_chunks(world: TufWorld) -> None:
    if nginx_binary() is None:
        require_tool("nginx")
    served = world.repo.served
    new = world.images["1.1.0"]
    fresh, in_place = _fresh(world), _in_place(world)
    index_size = _index_file(served, "1.1.0").stat().st_size
    full = _image_file(served, "1.1.0").stat().st_size
    events: list[Any] = []
    with nginx_serving(served, world.root / "nginx") as server:
        result = world.agent(server.url(), events=lambda e, **f: events.append((e, f))).apply()
        log = _requests(server)
    assert result.state.phase is Phase.STAGED
    assert world.box.slot(Slot.B).read_bytes()[:IMAGE] == new
    assert world.box.slot(Slot.A).read_bytes()[:IMAGE] == world.images["1.0.0"]
    stats = result.stats
    assert stats is not None and stats.mode == "adaptive", events
    assert not [e for e in events if e[0] == "update.adaptive_fallback"]
    # (ngclient's probe for a next root version is the one 404)
    assert all(status == 200 for status, _, uri in log if uri.startswith("/targets/")), log
    # the image target was never asked for; the index once, by its hash-prefixed name
    assert not [uri for _, _, uri in log if ".kubesolo-os-1.1.0.img" in uri]
    (index_req,) = [(sent, uri) for _, sent, uri in log if uri.endswith(".chunks")]
    assert index_req[1].startswith("/targets/images/") and index_req[0] == index_size
    chunks = {
        uri.rsplit("/", 1)[1]: sent for _, sent, uri in log if uri.startswith("/targets/chunks/")
    }
    names = {c.sha256.hex() + ".zst": c for c in _index(served, "1.1.0")}
    # what nginx sent is what apply reports: the index and one request per chunk file
    assert stats.downloaded == index_size + sum(chunks.values())
    assert stats.requests == len(chunks)
    assert all(chunks[name] == names[name].stored for name in chunks)
    # every chunk no slot holds was fetched; none that slot B holds in place was
    assert {c.sha256.hex() + ".zst" for c in fresh} <= set(chunks)
    assert not {names[name].sha256 for name in chunks} & in_place
    assert stats.downloaded < full // 3, (stats.downloaded, full)
    # the same apply through the CLI (bootstrap builds the TUF fetcher and the
    # adaptive ports) over file:// on a second box reports the same figures
    twin = TufWorld.create(world.root.parent / "twin", world.images, slot_size=SLOT)
    run = Run(
        {**twin.flags(world.url()), "trust_root": str(world.shipped_root)},
        ports={"kube": twin.kube, "probes": twin.probes},
        environ={},
    )
    r = runner.invoke(agent_app, ["apply", "--json"], obj=run)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["stats"]
    assert doc["mode"] == "adaptive"
    assert (doc["downloaded_bytes"], doc["requests"], doc["in_place_bytes"]) == (
        stats.downloaded,
        stats.requests,
        stats.in_place,
    )
    assert twin.box.slot(Slot.B).read_bytes()[:IMAGE] == new


FAULTS = ("index-tampered", "chunk-tampered", "chunk-missing")


def _break(world: TufWorld, mirror: Path, fault: str) -> bytes | None:
    """Apply ``fault`` to the mirror; the attacker's raw chunk bytes for a tampered chunk."""
    if fault == "index-tampered":
        # still a well-formed index of the same length: one chunk hash changed
        path = _index_file(mirror, "1.1.0")
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
        parse_index(bytes(data))
        return None
    chunk = max(_fresh(world), key=lambda c: c.stored)
    path = _chunk_file(mirror, chunk)
    if fault == "chunk-missing":
        path.unlink()
        return None
    path.write_bytes(_evil_chunk(chunk.length, chunk.stored))
    return b"\xee" * chunk.length


REASONS = {
    ("index-tampered", "file"): "chunk index unusable",
    ("index-tampered", "nginx"): "chunk index unusable",
    ("chunk-tampered", "file"): "does not match its SHA-256",
    ("chunk-tampered", "nginx"): "does not match its SHA-256",
    ("chunk-missing", "file"): "No such file",
    ("chunk-missing", "nginx"): "404",
}


@pytest.mark.parametrize("transport", ["file", "nginx"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_bad_index_or_chunk_falls_back_to_the_full_image(
    world: TufWorld, fault: str, transport: str
) -> None:
    mirror = world.mirror()
    _break(world, mirror, fault)
    events: list[Any] = []
    with _served(world, mirror, transport) as url:
        result = world.agent(url, events=lambda e, **f: events.append((e, f))).apply()
    assert result.state.phase is Phase.STAGED
    assert world.box.slot(Slot.B).read_bytes()[:IMAGE] == world.images["1.1.0"]
    stats = result.stats
    assert stats is not None and stats.mode == "full"
    assert stats.downloaded == _image_file(mirror, "1.1.0").stat().st_size
    logged = [f["reason"] for e, f in events if e == "update.adaptive_fallback"]
    assert len(logged) == 1 and REASONS[fault, transport] in logged[0], logged
    if fault == "index-tampered":
        assert "SHA-256" in logged[0]  # the hash TUF vouched for, not the index's own content
    assert stats.fallback == logged[0]


@pytest.mark.parametrize("fault", FAULTS)
def test_nothing_unverified_reaches_the_slot(world: TufWorld, fault: str) -> None:
    # The mirror breaks the chunks and the image too: the adaptive path falls back, the
    # full download is refused, and the slot holds nothing but verified bytes.
    mirror = world.mirror()
    evil = _break(world, mirror, fault)
    image = _image_file(mirror, "1.1.0")
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    events: list[Any] = []
    agent = world.agent(world.url(mirror), events=lambda e, **f: events.append((e, f)))
    with pytest.raises(TrustRefused) as info:
        agent.apply()
    assert info.value.refusal.reason == "hash_mismatch"
    assert [f["reason"] for e, f in events if e == "update.adaptive_fallback"]
    after = world.box.slot(Slot.B).read_bytes()
    _blocks_old_or_new(world, after)
    if evil is not None:
        assert evil[:BLOCK] not in after
    assert agent.status().state.phase is Phase.FAILED


def test_an_index_that_is_not_a_target_is_refused(world: TufWorld) -> None:
    # Correctly signed, yet the channel names an index the signed metadata does not list.
    repo = world.repo
    targets = repo.load("targets")
    del targets.signed.targets["images/kubesolo-os-1.1.0.chunks"]
    repo._cascade(repo._resign("targets", targets))
    before = world.slot_digest(Slot.B)
    with pytest.raises(TrustRefused) as info:
        world.agent().apply()
    assert info.value.refusal.reason == "unknown_target"
    assert "chunk index" in str(info.value)
    assert world.slot_digest(Slot.B) == before
