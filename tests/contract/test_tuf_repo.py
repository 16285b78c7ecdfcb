"""The agent against signed repositories: kubesolo-release's over nginx and file://,
one made by python-tuf's bare Metadata API (other TUF tooling), and what the CLI
and the metrics say about trust and refusals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from typer.testing import CliRunner

from kubesolo_adapters import sandbox
from kubesolo_core.channel import ChannelDoc, ChannelImage, channel_document
from kubesolo_core.lifecycle import Phase
from kubesolo_entrypoints.cli import app
from kubesolo_entrypoints.exitcodes import ExitCode
from kubesolo_entrypoints.invocation import Run
from kubesolo_entrypoints.metrics import render
from tests.contract.nginx import nginx_binary, nginx_serving
from tests.contract.tufworld import TufWorld, now, padded_images
from tests.tools import require_tool

runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tool("mkfs.ext2", "debugfs")
    return padded_images(tmp_path_factory.mktemp("images"), ("0.9.0", "1.0.0", "1.1.0", "1.2.0"))


@pytest.fixture
def world(tmp_path: Path, images: dict[str, bytes]) -> TufWorld:
    w = TufWorld.create(tmp_path / "box", images)
    w.publish("1.1.0", compress="zstd")
    return w


def test_signed_update_over_nginx_commits_and_the_cache_stays_warm(world: TufWorld) -> None:
    if nginx_binary() is None:
        require_tool("nginx")
    with nginx_serving(world.repo.served, world.root / "nginx") as server:
        agent = world.agent(server.url())
        assert str(agent.check().available_version) == "1.1.0"
        world.commit_cycle(agent)
        assert agent.status().slots[1].version == "1.1.0"
        first = server.access_log()
        # consistent snapshot: versioned metadata, targets named by their hash
        assert any(" /metadata/2.snapshot.json" in line for line in first)
        assert any("/targets/images/" in line and ".kubesolo-os-1.1.0" in line for line in first)
        # a second run with the cache on the data partition fetches only what changes
        world.agent(server.url()).check()
        second = server.access_log()[len(first) :]
        fetched = {line.split()[-1] for line in second}
        assert "/metadata/timestamp.json" in fetched
        assert not any("snapshot" in p or "targets.json" in p for p in fetched), fetched


def test_signed_update_over_file_url(world: TufWorld) -> None:
    agent = world.agent(world.url())
    result = agent.apply()
    assert result.state.phase is Phase.STAGED and result.write is not None
    assert result.write.raw_sha256 == hashlib.sha256(world.images["1.1.0"]).hexdigest()


def test_a_repository_of_other_tuf_tooling_works(tmp_path: Path, images: dict[str, bytes]) -> None:
    """Plain python-tuf Metadata API: no consistent snapshot, no chunk list, no meta hashes."""
    world = TufWorld.create(tmp_path / "box", images)
    served = tmp_path / "other"
    (served / "metadata").mkdir(parents=True)
    (served / "targets" / "channels").mkdir(parents=True)
    (served / "targets" / "images").mkdir(parents=True)
    expires = now() + dt.timedelta(days=7)
    keys = {
        role: CryptoSigner.generate_ed25519()
        for role in ("root", "targets", "snapshot", "timestamp")
    }
    root = Root(expires=expires, consistent_snapshot=False)
    for role, signer in keys.items():
        root.add_key(signer.public_key, role)
    image = images["1.1.0"]
    (served / "targets" / "images" / "os.img").write_bytes(image)
    doc = channel_document(
        ChannelDoc(
            channel="stable",
            version="1.1.0",
            image=ChannelImage(
                target="images/os.img",
                compression="none",
                raw_size=len(image),
                raw_sha256=hashlib.sha256(image).hexdigest(),
            ),
        )
    )
    doc_bytes = json.dumps(doc).encode()
    (served / "targets" / "channels" / "stable.json").write_bytes(doc_bytes)
    targets = Targets(expires=expires)
    targets.targets["images/os.img"] = TargetFile.from_data("images/os.img", image)
    targets.targets["channels/stable.json"] = TargetFile.from_data(
        "channels/stable.json", doc_bytes
    )
    snapshot = Snapshot(expires=expires, meta={"targets.json": MetaFile(version=1)})
    timestamp = Timestamp(expires=expires, snapshot_meta=MetaFile(version=1))
    for role, signed in (
        ("root", root),
        ("targets", targets),
        ("snapshot", snapshot),
        ("timestamp", timestamp),
    ):
        md = Metadata(signed)
        md.sign(keys[role])
        md.to_file(str(served / "metadata" / f"{role}.json"))
    shutil.copyfile(served / "metadata" / "root.json", served / "metadata" / "1.root.json")
    shutil.copyfile(served / "metadata" / "root.json", world.shipped_root)
    result = world.agent(world.url(served)).apply()
    assert result.state.phase is Phase.STAGED and str(result.state.to_version) == "1.1.0"


# --------------------------------------------------------------------------- the CLI and metrics


def _invoke(world: TufWorld, *args: str, **flags: Any) -> Any:
    run = Run(
        {**world.flags(world.url()), **flags},
        ports={"kube": world.kube, "probes": world.probes},
        environ={},
    )
    return runner.invoke(app, list(args), obj=run)


def test_check_and_apply_json_explain_a_refusal_and_the_metric_shows_it(world: TufWorld) -> None:
    world.repo.now = lambda: now() - dt.timedelta(days=2)
    world.repo.timestamp()  # a frozen mirror's last timestamp: expired
    before = world.slot_digest()
    for command in (["check", "--json"], ["apply", "--json"]):
        r = _invoke(world, *command)
        assert r.exit_code == ExitCode.UNTRUSTED, r.output
        doc = json.loads(r.stdout)
        assert doc["ok"] is False and doc["trust"]["mode"] == "tuf"
        (refusal,) = doc["refusals"]
        assert refusal["reason"] == "expired_metadata"
        assert "expired" in refusal["message"] and "timestamp" in refusal["detail"]
    assert world.slot_digest() == before
    text = render(_invoke_settings(world))
    assert 'kubesolo_update_refusal{reason="expired_metadata"} 1.0' in text
    assert 'kubesolo_update_refusal{reason="bad_signature"} 0.0' in text
    assert "kubesolo_update_unsigned 0.0" in text


def _invoke_settings(world: TufWorld) -> Any:
    return world.settings(world.url())


def test_check_json_lists_preflight_reasons_held_back(world: TufWorld) -> None:
    world.kube.block()
    r = _invoke(world, "check", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["update_available"] is True
    assert [h["reason"] for h in doc["held_back"]] == ["blocked_node"]
    assert 'kubesolo_update_refusal{reason="blocked_node"} 1.0' in render(_invoke_settings(world))


def test_apply_json_explains_a_preflight_refusal(world: TufWorld) -> None:
    world.kube.block()
    before = world.slot_digest()
    r = _invoke(world, "apply", "--json")
    assert r.exit_code == ExitCode.REFUSED, r.output
    doc = json.loads(r.stdout)
    assert [x["reason"] for x in doc["refusals"]] == ["blocked_node"]
    assert "label that blocks updates" in doc["refusals"][0]["message"]
    assert world.slot_digest() == before
    world.kube.block(False)
    r = _invoke(world, "apply", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["ok"] is True and done["state"]["phase"] == "staged" and done["refusals"] == []


def test_status_says_how_releases_are_trusted(world: TufWorld) -> None:
    r = _invoke(world, "status")
    assert "Trust:       TUF, channel stable" in r.stdout
    doc = json.loads(_invoke(world, "status", "--json").stdout)
    assert doc["trust"]["mode"] == "tuf" and doc["trust"]["unsigned"] is False


def test_unsigned_mode_is_announced_on_every_run(world: TufWorld, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    sandbox.publish(www, "1.1.0", world.images["1.1.0"])
    flags = {
        "trust_root": None,
        "allow_unsigned": "true",
        "server": (www / "release.json").as_uri(),
    }
    status = _invoke(world, "status", **flags)
    assert "UNSIGNED" in status.stdout
    check = _invoke(world, "check", "--json", **flags)
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["trust"]["unsigned"] is True
    assert "UNSIGNED" in check.stderr
    settings = world.settings((www / "release.json").as_uri(), allow_unsigned="true")
    settings = attrs.evolve(settings, trust_root=None)
    assert "kubesolo_update_unsigned 1.0" in render(settings)


def test_no_trust_root_and_no_allow_unsigned_is_a_usage_error(world: TufWorld) -> None:
    r = _invoke(world, "check", trust_root=None)
    assert r.exit_code == ExitCode.USAGE
    assert "trust_root" in r.stderr and "allow_unsigned=true" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
