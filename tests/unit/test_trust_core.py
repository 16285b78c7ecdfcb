"""The pure parts of trusted releases: target paths, the channel document, the downgrade floor."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubesolo_adapters.fakes import MemoryBox
from kubesolo_core.channel import (
    ChannelDoc,
    ChannelImage,
    InvalidChannel,
    UnsafeTargetPath,
    channel_document,
    channel_target,
    chunk_count,
    parse_channel,
    safe_target_path,
)
from kubesolo_core.codec import loads_state
from kubesolo_core.errors import PreflightRefused
from kubesolo_core.lifecycle import Phase
from kubesolo_core.policies import preflight
from kubesolo_core.refusals import REASONS, Refusal, TrustRefused
from kubesolo_core.release import parse_release
from kubesolo_core.versions import Version

HEX = "a" * 64


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "images/../../x",
        "/etc/passwd",
        "images//x",
        "images/./x",
        "images\\x",
        "images/x?y=1",
        "images/%2e%2e/x",
        "images/x#frag",
        "",
        "images/ x",
        "..",
        "images/x\0",
    ],
)
def test_unsafe_target_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafeTargetPath):
        safe_target_path(path)


@pytest.mark.parametrize(
    "path", ["images/kubesolo-os-1.3.0.img.zst", "channels/stable.json", "a/b_c/d-e+f.1"]
)
def test_plain_target_paths_pass(path: str) -> None:
    assert safe_target_path(path) == path


def _doc(**image: Any) -> dict[str, Any]:
    base = ChannelDoc(
        channel="stable",
        version="1.3.0",
        image=ChannelImage(
            target="images/kubesolo-os-1.3.0.img.zst",
            compression="zstd",
            raw_size=100,
            raw_sha256=HEX,
            chunk_size=4096,
            chunk_sha256=(HEX, HEX),
        ),
        min_from_version="1.0.0",
    )
    doc = channel_document(base)
    doc["image"].update(image)
    return doc


def test_channel_document_round_trips() -> None:
    doc = parse_channel(json.dumps(_doc()), channel="stable")
    assert str(doc.version) == "1.3.0" and doc.image.chunk_sha256 == (HEX, HEX)
    assert channel_document(doc) == _doc()
    assert channel_target("stable") == "channels/stable.json"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"target": "../x"}, "segment"),
        ({"compression": "xz"}, "compression"),
        ({"raw_size": 0}, "raw_size"),
        ({"raw_sha256": "z" * 64}, "raw_sha256"),
        ({"chunk_size": 10}, "chunk_size"),
        ({"chunk_sha256": []}, "chunk_sha256"),
        ({"chunks": ["images/x.chunks"]}, "image.chunks must be an object"),
        ({"chunks": {"store": "chunks"}}, "None"),
        ({"chunks": {"index": "images/x.chunks", "store": "chunks/"}}, "segment ''"),
        ({"chunks": {"index": "images/x.chunks", "store": "/srv/chunks"}}, "absolute"),
    ],
)
def test_bad_channel_documents_name_the_field(change: dict[str, Any], match: str) -> None:
    with pytest.raises((InvalidChannel, UnsafeTargetPath), match=match):
        parse_channel(json.dumps(_doc(**change)), channel="stable")


def test_a_chunk_index_round_trips_and_the_store_defaults_to_chunks() -> None:
    chunks = {"index": "images/kubesolo-os-1.3.0.chunks", "store": "store/v1"}
    doc = parse_channel(json.dumps(_doc(chunks=chunks)), channel="stable")
    assert doc.image.chunks is not None
    assert (doc.image.chunks.index, doc.image.chunks.store) == (chunks["index"], "store/v1")
    assert channel_document(doc) == _doc(chunks=chunks)
    only = parse_channel(json.dumps(_doc(chunks={"index": "i.chunks"})), channel="stable")
    assert only.image.chunks is not None and only.image.chunks.store == "chunks"
    assert parse_channel(json.dumps(_doc()), channel="stable").image.chunks is None
    assert (
        "chunks"
        not in channel_document(parse_channel(json.dumps(_doc()), channel="stable"))["image"]
    )


def test_a_document_of_another_channel_is_refused() -> None:
    with pytest.raises(InvalidChannel, match="beta"):
        parse_channel(json.dumps(_doc()), channel="beta")


def test_chunk_count() -> None:
    assert chunk_count(1, 4096) == 1
    assert chunk_count(4096, 4096) == 1
    assert chunk_count(4097, 4096) == 2


def test_every_refusal_has_a_sentence() -> None:
    for reason, text in REASONS.items():
        assert (
            reason.islower()
            and " " not in reason
            and text.endswith(tuple("abcdefghijklmnopqrstuvwxyz)"))
        )
    err = TrustRefused("expired_metadata", "timestamp.json is expired")
    assert err.refusal == Refusal.of("expired_metadata", "timestamp.json is expired")
    assert "expired_metadata" in str(err)


# --------------------------------------------------------------------------- the floor


def _release(version: str, min_from: str | None = None) -> Any:
    doc: dict[str, Any] = {
        "schema": 1,
        "version": version,
        "image": {"url": "i", "sha256": HEX, "size": 10},
    }
    if min_from:
        doc["min_from_version"] = min_from
    return parse_release(doc)


def test_preflight_codes_follow_the_refusals() -> None:
    report = preflight(
        release=_release("1.0.5", min_from="1.0.2"),
        current_version=Version.parse("1.0.0"),
        slot_capacity=5,
        node_labels={"updates.kubesolo.io/block": "true"},
        floor_version=Version.parse("1.1.0"),
    )
    assert report.codes == ("no_space", "blocked_node", "min_from_version", "downgrade")
    assert len(report.refusals) == len(report.codes)


def test_floor_refuses_below_the_highest_commit_even_above_the_running_version() -> None:
    args: dict[str, Any] = {
        "current_version": Version.parse("1.0.0"),
        "slot_capacity": 100,
        "node_labels": {},
        "floor_version": Version.parse("1.1.0"),
    }
    refused = preflight(release=_release("1.0.5"), **args)
    assert refused.codes == ("downgrade",) and "1.1.0" in refused.refusals[0]
    assert preflight(release=_release("1.1.0"), **args).ok
    assert preflight(release=_release("1.0.5"), allow_downgrade=True, **args).ok


def test_floor_only_rises_and_an_allowed_downgrade_is_recorded() -> None:
    box = MemoryBox.create("grub")
    agent = box.agent()

    def commit(version: str, **apply: Any) -> None:
        box.publish(version)
        result = agent.apply(**apply)
        assert result.state.phase is Phase.STAGED
        agent.activate()
        box.reboot()
        assert agent.healthcheck().state.phase is Phase.SUCCESS

    commit("1.2.0")
    assert str(agent.status().state.floor_version) == "1.2.0"
    agent.rollback()
    box.reboot()  # back on 1.0.0, the floor stays 1.2.0
    box.publish("1.1.0")
    with pytest.raises(PreflightRefused) as info:
        agent.apply()
    assert info.value.codes == ("downgrade",)
    events: list[tuple[str, dict[str, object]]] = []
    agent.events = lambda name, **fields: events.append((name, fields))
    staged = agent.apply(allow_downgrade=True)
    assert staged.state.downgrade_allowed is True
    assert (
        "update.downgrade_allowed",
        {
            "to_version": Version.parse("1.1.0"),
            "running": Version.parse("1.0.0"),
            "floor": Version.parse("1.2.0"),
        },
    ) in events
    agent.activate()
    box.reboot()
    done = agent.healthcheck().state
    assert done.phase is Phase.SUCCESS and str(done.floor_version) == "1.2.0"  # never lowered


def test_check_says_why_an_update_is_held_back() -> None:
    box = MemoryBox.create("grub")
    box.publish("1.1.0")
    box.kube.block()
    result = box.agent().check()
    assert result.update_available
    assert [r.reason for r in result.held_back] == ["blocked_node"]
    assert "held back" in result.reason


def test_schema_2_state_migrates_with_its_commit_as_the_floor() -> None:
    text = json.dumps(
        {"schema_version": 2, "phase": "success", "to_version": "1.4.0", "from_version": "1.3.0"}
    )
    state = loads_state(text)
    assert str(state.floor_version) == "1.4.0" and state.downgrade_allowed is False
    idle = loads_state(json.dumps({"schema_version": 2, "phase": "failed", "to_version": "2.0.0",
                                   "last_error": "x"}))  # fmt: skip
    assert idle.floor_version is None
