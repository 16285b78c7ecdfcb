"""The attack suite: one named test per attack TUF (and the agent) must stop.

Each test builds a real signed repository with kubesolo-release's code,
lets an attacker (a compromised mirror, a stolen key, a replay) change what
the box is served, and runs the real agent's ``apply``. Each asserts the
machine reason of the refusal and that the passive slot is byte for byte
what it was (the images are 3 MiB: more than the slot writer's held-back
1 MiB head, so an untouched slot is the chunk checks' doing). The box's
TUF metadata cache persists between agents, as it does across reboots.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, TargetFile
from tuf.api.serialization.json import JSONSerializer

from kubesolo_core.lifecycle import Phase
from kubesolo_core.refusals import REASONS, TrustRefused
from kubesolo_core.slots import Slot
from tests.contract.faultserver import Fault, FaultServer
from tests.contract.nginx import nginx_binary, nginx_serving
from tests.contract.test_fetch_faults import slow_guarded
from tests.contract.tufworld import TufWorld, now, padded_images
from tests.tools import require_tool

VERSIONS = ("0.9.0", "1.0.0", "1.1.0", "1.2.0")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tool("mkfs.ext2", "debugfs")
    return padded_images(tmp_path_factory.mktemp("images"), VERSIONS)


@pytest.fixture
def world(tmp_path: Path, images: dict[str, bytes]) -> TufWorld:
    w = TufWorld.create(tmp_path / "box", images)
    w.publish("1.1.0")
    return w


def refused(world: TufWorld, agent: Any, reason: str) -> TrustRefused:
    """Run apply; it must be refused for ``reason`` with slot B untouched and nothing staged."""
    assert reason in REASONS
    before = world.slot_digest(Slot.B)
    with pytest.raises(TrustRefused) as info:
        agent.apply()
    assert info.value.refusal.reason == reason, info.value
    assert info.value.refusal.message == REASONS[reason]
    assert world.slot_digest(Slot.B) == before, "bytes reached the passive slot"
    assert agent.status().state.phase is not Phase.STAGED
    return info.value


# --------------------------------------------------------------------------- forging helpers


def _md_path(served: Path, role: str, version: int | None = None) -> Path:
    return served / "metadata" / (f"{version}.{role}.json" if version else f"{role}.json")


def _write(served: Path, role: str, md: Metadata[Any]) -> bytes:
    data = md.to_bytes(JSONSerializer())
    if role != "timestamp":
        _md_path(served, role, md.signed.version).write_bytes(data)
    _md_path(served, role).write_bytes(data)
    return data


def _meta(md: Metadata[Any], data: bytes) -> MetaFile:
    import hashlib

    return MetaFile(
        version=md.signed.version,
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).digest().hex()},
    )


def _signers(world: TufWorld, role: str) -> list[Signer]:
    return world.repo._signers(role, world.repo.load("root").signed)


def _sign(md: Metadata[Any], signers: list[Signer]) -> None:
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)


def forge(
    world: TufWorld,
    served: Path,
    role: str,
    signers: list[Signer],
    change: Callable[[Any], None] = lambda signed: None,
) -> None:
    """Re-sign ``role`` in ``served`` (version + 1, ``change`` applied) with ``signers``.

    Snapshot and timestamp are then re-signed with the repository's own
    online keys (an attacker who stole them), naming the forged file.
    """
    md = Metadata.from_file(str(_md_path(served, role)))
    change(md.signed)
    md.signed.version += 1
    _sign(md, signers)
    data = _write(served, role, md)
    if role == "targets":
        snap = Metadata.from_file(str(_md_path(served, "snapshot")))
        snap.signed.meta["targets.json"] = _meta(md, data)
        snap.signed.version += 1
        _sign(snap, _signers(world, "snapshot"))
        md, data, role = snap, _write(served, "snapshot", snap), "snapshot"
    if role == "snapshot":
        ts = Metadata.from_file(str(_md_path(served, "timestamp")))
        ts.signed.snapshot_meta = _meta(md, data)
        ts.signed.version += 1
        _sign(ts, _signers(world, "timestamp"))
        _write(served, "timestamp", ts)


def _image_file(served: Path, version: str) -> Path:
    (found,) = (served / "targets" / "images").glob(f"*.kubesolo-os-{version}.img*")
    return found


# --------------------------------------------------------------------------- arbitrary content


def test_arbitrary_image(world: TufWorld) -> None:
    mirror = world.mirror()
    image = _image_file(mirror, "1.1.0")
    evil = bytearray(image.read_bytes())
    evil[len(evil) // 2] ^= 0xFF  # same length, one byte of the attacker's choosing
    image.write_bytes(bytes(evil))
    err = refused(world, world.agent(world.url(mirror)), "hash_mismatch")
    assert "nothing of it was written" in str(err)


def test_tampered_target(world: TufWorld) -> None:
    # the channel document itself: a later version number in the same length
    mirror = world.mirror()
    (doc,) = (mirror / "targets" / "channels").glob("*.stable.json")
    doc.write_text(doc.read_text().replace('"1.1.0"', '"9.1.0"'))
    refused(world, world.agent(world.url(mirror)), "hash_mismatch")


def test_tampered_chunk_never_reaches_the_slot(tmp_path: Path, images: dict[str, bytes]) -> None:
    # 12 chunks of 256 KiB; the attacker changes chunk 10. Chunks 0-9 (and their
    # bytes past the held-back head) may be written: TUF vouched for them.
    # No byte of chunk 10 or 11 may reach the slot.
    world = TufWorld.create(tmp_path / "box", images)
    with tempfile.TemporaryDirectory(dir=world.repo.root_dir) as tmp:
        raw = Path(tmp) / "img"
        raw.write_bytes(images["1.1.0"])
        # no chunk index: this attacks the full image's verified pieces (see test_tuf_adaptive)
        world.repo.add(raw, version="1.1.0", compress="none", chunk_size=256 << 10, chunks=False)
    mirror = world.mirror()
    image = _image_file(mirror, "1.1.0")
    data = bytearray(image.read_bytes())
    offset = 10 * (256 << 10) + 5
    data[offset] ^= 0xFF
    image.write_bytes(bytes(data))
    old = world.box.slot(Slot.B).read_bytes()
    agent = world.agent(world.url(mirror))
    with pytest.raises(TrustRefused) as info:
        agent.apply()
    assert info.value.refusal.reason == "hash_mismatch"
    assert "chunk 10" in str(info.value)
    after = world.box.slot(Slot.B).read_bytes()
    assert after[: 1 << 20] == old[: 1 << 20], "the head must never change"
    assert after[10 * (256 << 10) :] == old[10 * (256 << 10) :], "tampered chunk reached the slot"
    assert agent.status().state.phase is Phase.FAILED


def _signed_channel(world: TufWorld, change: Callable[[dict[str, Any]], None]) -> None:
    """Publish the stable channel document with ``change`` applied, signed by the real keys."""
    repo = world.repo
    doc = json.loads(next((repo.targets_dir / "channels").glob("*.stable.json")).read_text())
    change(doc)
    with tempfile.TemporaryDirectory(dir=repo.root_dir) as tmp:
        evil = Path(tmp) / "stable.json"
        evil.write_text(json.dumps(doc))
        info = repo._store_target(evil, "channels/stable.json")
    targets = repo.load("targets")
    targets.signed.targets["channels/stable.json"] = info
    repo._cascade(repo._resign("targets", targets))


def test_target_path_outside_the_repository(world: TufWorld) -> None:
    # Correctly signed by the publisher's keys, yet it names ../../etc/passwd.
    _signed_channel(world, lambda doc: doc["image"].update(target="../../../etc/passwd"))
    refused(world, world.agent(), "unsafe_target_path")


@pytest.mark.parametrize(
    "chunks",
    [
        {"index": "../../../etc/passwd", "store": "chunks"},
        {"index": "images/kubesolo-os-1.1.0.chunks", "store": "../../.."},
        {"index": "images/../../metadata/root.json"},
    ],
    ids=["index", "store", "index-inside"],
)
def test_chunk_index_path_outside_the_repository(world: TufWorld, chunks: dict[str, str]) -> None:
    # A correctly signed channel document whose chunk index or chunk store leaves the
    # repository: refused before any byte is fetched, whatever else the document says.
    _signed_channel(world, lambda doc: doc["image"].update(chunks=chunks))
    err = refused(world, world.agent(), "unsafe_target_path")
    assert "'..'" in str(err)


def test_swapped_image_of_another_channel(tmp_path: Path, images: dict[str, bytes]) -> None:
    world = TufWorld.create(tmp_path / "box", images)
    world.publish("1.1.0", channel="stable", compress="none")
    world.publish("1.2.0", channel="beta", compress="none")
    mirror = world.mirror()
    stable, beta = _image_file(mirror, "1.1.0"), _image_file(mirror, "1.2.0")
    assert stable.stat().st_size == beta.stat().st_size  # same length: only the hash tells
    shutil.copyfile(beta, stable)
    refused(world, world.agent(world.url(mirror)), "hash_mismatch")


# --------------------------------------------------------------------------- lengths and speed


def test_target_longer_than_declared(world: TufWorld) -> None:
    mirror = world.mirror()
    image = _image_file(mirror, "1.1.0")
    image.write_bytes(image.read_bytes() + b"\0" * 4096)
    refused(world, world.agent(world.url(mirror)), "length_mismatch")


def test_target_longer_than_declared_over_nginx(world: TufWorld) -> None:
    if nginx_binary() is None:
        require_tool("nginx")
    mirror = world.mirror()
    image = _image_file(mirror, "1.1.0")
    image.write_bytes(image.read_bytes() + b"\0" * (8 << 20))
    with nginx_serving(mirror, world.root / "nginx") as server:
        refused(world, world.agent(server.url()), "length_mismatch")
        assert any("images/" in line for line in server.access_log())


def _fault_server(world: TufWorld, served: Path) -> FaultServer:
    files = {
        "/" + str(p.relative_to(served)): p.read_bytes() for p in served.rglob("*") if p.is_file()
    }
    return FaultServer(files)


def test_endless_data_metadata(world: TufWorld) -> None:
    mirror = world.mirror()
    _md_path(mirror, "timestamp").write_bytes(b" " * (64 << 20))
    refused(world, world.agent(world.url(mirror)), "length_mismatch")


def test_endless_data_image(world: TufWorld) -> None:
    # no Content-Length, 16 MiB more than TUF declares: cut at the declared length
    with _fault_server(world, world.repo.served) as server:
        path = "/" + str(_image_file(world.repo.served, "1.1.0").relative_to(world.repo.served))
        server.fault_path(path, Fault("extra_unannounced", delta=16 << 20))
        refused(world, world.agent(server.url("")), "length_mismatch")


def test_slow_retrieval(world: TufWorld) -> None:
    slow = slow_guarded(retries=1, window=0.3)
    with _fault_server(world, world.repo.served) as server:
        path = "/" + str(_image_file(world.repo.served, "1.1.0").relative_to(world.repo.served))
        server.fault_path(path, Fault("trickle", at=1 << 20, delta=100, seconds=0.05))
        started = dt.datetime.now()
        refused(world, world.agent(server.url(""), http=slow), "slow_retrieval")
        assert (dt.datetime.now() - started).total_seconds() < 20


# --------------------------------------------------------------------------- rollback and freeze


def test_metadata_rollback(world: TufWorld) -> None:
    old = world.mirror("old")  # the repository as it was at 1.1.0
    world.publish("1.2.0")
    assert str(world.agent().check().available_version) == "1.2.0"  # the box has seen it
    refused(world, world.agent(world.url(old)), "metadata_rollback")


def test_mirror_serving_an_older_timestamp(world: TufWorld) -> None:
    old = world.mirror("old")
    world.publish("1.2.0")
    world.agent().check()
    mirror = world.mirror()
    shutil.copyfile(_md_path(old, "timestamp"), _md_path(mirror, "timestamp"))
    refused(world, world.agent(world.url(mirror)), "metadata_rollback")


def test_metadata_rolled_back_after_a_successful_update(world: TufWorld) -> None:
    before = world.mirror("before")  # 1.1.0 only
    world.publish("1.2.0")
    world.commit_cycle(world.agent())
    assert str(world.agent().status().state.floor_version) == "1.2.0"
    # after a reboot (a new agent, the cache on the data partition) the mirror replays
    # the older, still unexpired repository to put 1.1.0 back
    world.box.boot()
    before_a = world.slot_digest(Slot.A)
    refused(world, world.agent(world.url(before)), "metadata_rollback")
    assert world.slot_digest(Slot.A) == before_a


def test_mix_and_match(world: TufWorld) -> None:
    old = world.mirror("old")
    world.publish("1.2.0")
    mirror = world.mirror()
    # the current snapshot with the previous targets under the name it asks for
    current = Metadata.from_file(str(_md_path(mirror, "snapshot"))).signed.meta["targets.json"]
    previous = Metadata.from_file(str(_md_path(old, "targets"))).signed.version
    shutil.copyfile(
        _md_path(old, "targets", previous), _md_path(mirror, "targets", current.version)
    )
    refused(world, world.agent(world.url(mirror)), "length_mismatch")


def _age(world: TufWorld, days: float) -> None:
    world.repo.now = lambda: now() - dt.timedelta(days=days)


def test_freeze_expired_timestamp(world: TufWorld) -> None:
    _age(world, 2)
    world.repo.timestamp()  # the last timestamp a frozen mirror keeps serving
    refused(world, world.agent(), "expired_metadata")


def test_freeze_expired_snapshot(world: TufWorld) -> None:
    _age(world, 10)
    world.repo.resign("snapshot")
    world.repo.now = now
    world.repo._resign("timestamp", world.repo.load("timestamp"))
    err = refused(world, world.agent(), "expired_metadata")
    assert "snapshot" in str(err)


def test_freeze_expired_targets(world: TufWorld) -> None:
    _age(world, 100)
    world.repo.resign("targets")
    world.repo.now = now
    world.repo.resign("snapshot")
    err = refused(world, world.agent(), "expired_metadata")
    assert "targets" in str(err)


def test_expired_root(tmp_path: Path, images: dict[str, bytes]) -> None:
    world = TufWorld.create(tmp_path / "box", images, clock=lambda: now() - dt.timedelta(days=400))
    world.publish("1.1.0")  # fresh targets, snapshot, timestamp; root expired 35 days ago
    err = refused(world, world.agent(), "expired_metadata")
    assert "root" in str(err)


# --------------------------------------------------------------------------- keys


def test_wrong_key(world: TufWorld) -> None:
    mirror = world.mirror()
    forge(world, mirror, "timestamp", [CryptoSigner.generate_ed25519()])
    refused(world, world.agent(world.url(mirror)), "bad_signature")


def test_one_of_two_required_signatures(tmp_path: Path, images: dict[str, bytes]) -> None:
    world = TufWorld.create(tmp_path / "box", images, thresholds={"timestamp": 2})
    world.publish("1.1.0")
    mirror = world.mirror()
    forge(world, mirror, "timestamp", _signers(world, "timestamp")[:1])
    err = refused(world, world.agent(world.url(mirror)), "threshold_not_met")
    assert "1/2" in str(err)


def test_key_compromise_below_threshold(tmp_path: Path, images: dict[str, bytes]) -> None:
    # targets: 2 of 3 keys. The attacker holds one targets key and the online
    # snapshot and timestamp keys, and publishes an image of their own.
    world = TufWorld.create(
        tmp_path / "box", images, thresholds={"targets": 2}, key_counts={"targets": 3}
    )
    world.publish("1.1.0")
    mirror = world.mirror()
    stolen = _signers(world, "targets")[:1]

    def plant(signed: Any) -> None:
        signed.targets["images/evil.img"] = TargetFile.from_data("images/evil.img", b"evil")

    forge(world, mirror, "targets", stolen, plant)
    err = refused(world, world.agent(world.url(mirror)), "threshold_not_met")
    assert "1/2" in str(err)


def test_root_rotation_chain(world: TufWorld) -> None:
    # The box ships root v1. The publisher rotates root twice and the timestamp
    # keys once: the box follows the chain v1 -> v2 -> v3 -> v4 and updates.
    world.repo.rotate("root")
    world.repo.rotate("root")
    world.repo.rotate("timestamp", key_count=2, threshold=2)
    agent = world.agent()
    result = agent.apply()
    assert result.state.phase is Phase.STAGED
    assert (world.cache / "root_history" / "4.root.json").exists()


def test_repository_resigned_with_an_old_root_key_after_rotation(world: TufWorld) -> None:
    old_root_key = _signers(world, "root")
    world.repo.rotate("root")  # v2: the old key is retired
    world.agent().check()  # the box has followed the rotation
    mirror = world.mirror()
    attacker = CryptoSigner.generate_ed25519()

    def takeover(signed: Any) -> None:
        for keyid in list(signed.roles["timestamp"].keyids):
            signed.revoke_key(keyid, "timestamp")
        signed.add_key(attacker.public_key, "timestamp")

    md = Metadata.from_file(str(_md_path(mirror, "root")))
    takeover(md.signed)
    md.signed.version += 1
    _sign(md, [*old_root_key, attacker])
    _write(mirror, "root", md)
    refused(world, world.agent(world.url(mirror)), "bad_signature")


def test_slow_retrieval_of_metadata(world: TufWorld) -> None:
    slow = slow_guarded(retries=1, window=0.3)
    with _fault_server(world, world.repo.served) as server:
        server.fault_path(
            "/metadata/timestamp.json", Fault("trickle", at=1 << 20, delta=20, seconds=0.05)
        )
        refused(world, world.agent(server.url(""), http=slow), "slow_retrieval")


def test_a_signed_hash_prefix_cannot_leave_the_repository(world: TufWorld) -> None:
    # python-tuf builds consistent-snapshot URLs from the hash in signed metadata
    # without judging it; the agent judges the whole path.
    repo = world.repo
    targets = repo.load("targets")
    (path,) = [p for p in targets.signed.targets if p.startswith("images/")]
    targets.signed.targets[path].hashes["sha256"] = "../../../../etc/passwd#"
    repo._cascade(repo._resign("targets", targets))
    refused(world, world.agent(), "unsafe_target_path")
