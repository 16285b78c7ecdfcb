"""Adaptive updates: index format, chunking rule, plan, and apply over the memory box."""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesolo_adapters.chunker import chunk_bytes
from kubesolo_adapters.fakes import MemoryBox, make_image
from kubesolo_adapters.fakes.chunks import (
    SMALL_PARAMS,
    MemoryChunkSource,
    derive_image,
    enable_adaptive,
    index_for,
    publish_chunked,
)
from kubesolo_core.chunks import (
    DEFAULT_PARAMS,
    FULL_FILES,
    HEADER_SIZE,
    ChunkParams,
    InvalidChunkIndex,
    cheaper_in_full,
    encode_index,
    parse_index,
    plan_update,
    worth_a_full_scan,
)
from kubesolo_core.errors import InvalidRelease
from kubesolo_core.lifecycle import Phase
from kubesolo_core.release import parse_release, release_document
from kubesolo_core.slots import Slot

SHA = "ab" * 32


def _index(lengths: list[int], params: ChunkParams = SMALL_PARAMS) -> bytes:
    chunks = [(n, n, hashlib.sha256(str(i).encode()).digest()) for i, n in enumerate(lengths)]
    return encode_index(chunks, params=params, image_size=sum(lengths), raw_sha256=SHA)


# --------------------------------------------------------------------------- format


@given(
    st.lists(st.integers(1, SMALL_PARAMS.max_blocks), min_size=1, max_size=40),
    st.integers(1, 511),
)
def test_index_round_trip(blocks: list[int], tail: int) -> None:
    lengths = [b * 512 for b in blocks[:-1]] + [tail]
    index = parse_index(_index(lengths))
    assert index.lengths == tuple(lengths)
    assert index.image_size == sum(lengths)
    assert index.raw_sha256 == SHA
    assert index.params == SMALL_PARAMS
    offsets = [c.offset for c in index]
    assert offsets == [sum(lengths[:i]) for i in range(len(lengths))]


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda d: b"NOTANIDX" + d[8:], "magic"),
        (lambda d: d[:8] + struct.pack("<H", 2) + d[10:], "format version 2"),
        (lambda d: d[:-1], "bytes for"),
        (lambda d: d[: HEADER_SIZE - 1], "shorter than its header"),
        (lambda d: d[:32] + struct.pack("<Q", 1) + d[40:], "add up to"),
        (lambda d: d[:12] + struct.pack("<I", 1000) + d[16:], "power of two"),
        (lambda d: d[:16] + struct.pack("<I", 9) + d[20:], "out of range"),
        # chunk 0 of 700 bytes: not a whole number of 512-byte blocks
        (lambda d: d[:HEADER_SIZE] + struct.pack("<I", 700) + d[HEADER_SIZE + 4 :], "bad length"),
        (lambda d: d[: HEADER_SIZE + 4] + struct.pack("<I", 0) + d[HEADER_SIZE + 8 :], "stored"),
    ],
)
def test_index_rejects(mangle: Any, words: str) -> None:
    data = mangle(_index([1024, 512, 300]))
    with pytest.raises(InvalidChunkIndex, match=words):
        parse_index(data)


def test_release_chunks_field() -> None:
    doc: dict[str, Any] = {
        "schema": 1,
        "version": "1.2.0",
        "image": {
            "url": "os.img",
            "sha256": SHA,
            "size": 10,
            "chunks": {"index": "os.chunks", "sha256": "CD" * 32, "size": 72},
        },
    }
    release = parse_release(doc)
    assert release.image.chunks is not None
    assert release.image.chunks.store == "chunks/"
    assert release.image.chunks.sha256 == "cd" * 32
    assert parse_release(release_document(release)) == release
    del doc["image"]["chunks"]
    assert "chunks" not in release_document(parse_release(doc))["image"]
    for bad, words in (
        ({"index": "x", "sha256": "zz", "size": 1}, "chunks.sha256"),
        ({"index": "x", "sha256": SHA}, "chunks.size is missing"),
        ({"index": "", "sha256": SHA, "size": 1}, "index is empty"),
        ({"index": "x", "sha256": SHA, "size": 0}, "size must be > 0"),
        ("x", "must be an object"),
    ):
        doc["image"]["chunks"] = bad
        with pytest.raises(InvalidRelease, match=words):
            parse_release(doc)


# --------------------------------------------------------------------------- chunking rule


def test_cut_rule() -> None:
    p = ChunkParams(block_size=4096, min_blocks=4, avg_blocks=16, max_blocks=64)
    assert not p.cuts_after(3, 0, False)  # under min_blocks
    assert p.cuts_after(4, 32, False)  # a multiple of avg_blocks
    assert not p.cuts_after(4, 33, False)
    assert not p.cuts_after(10, 0, True)  # zero blocks never cut
    assert p.cuts_after(64, 33, True)  # ... except at max_blocks


def test_chunks_cover_the_image_and_resync_after_a_shift() -> None:
    rng = random.Random(7)  # noqa: S311  (test data)
    data = bytes(rng.getrandbits(8) for _ in range(512 * 400)) + bytes(512 * 50)
    chunks = list(chunk_bytes(data, SMALL_PARAMS))
    assert [c[0] for c in chunks] == [sum(c[1] for c in chunks[:i]) for i in range(len(chunks))]
    assert sum(c[1] for c in chunks) == len(data)
    assert all(c[1] <= SMALL_PARAMS.max_chunk for c in chunks)
    assert all(hashlib.sha256(data[o : o + n]).digest() == h for o, n, h in chunks)
    # A filesystem moves files by whole blocks: insert two blocks near the start.
    shifted = data[: 512 * 5] + bytes(rng.getrandbits(8) for _ in range(512 * 2)) + data[512 * 5 :]
    before = {h for _, _, h in chunks}
    after = [h for _, _, h in chunk_bytes(shifted, SMALL_PARAMS)]
    reused = sum(h in before for h in after) / len(after)
    assert reused > 0.9, reused
    # fixed-size chunks of the same size would find almost nothing after the shift
    fixed = {data[i : i + 1536] for i in range(0, len(data), 1536)}
    moved = [shifted[i : i + 1536] for i in range(0, len(shifted), 1536)]
    assert sum(m in fixed for m in moved) / len(moved) < 0.2


def _reference_cuts(data: bytes, params: ChunkParams) -> list[int]:
    """The rule of ChunkParams.cuts_after applied block by block, the slow obvious way."""
    import zlib

    ends = []
    blocks = 0
    bs = params.block_size
    for off in range(0, len(data), bs):
        block = data[off : off + bs]
        blocks += 1
        if params.cuts_after(blocks, zlib.crc32(block), block == bytes(bs)):
            ends.append(off + len(block))
            blocks = 0
    if not ends or ends[-1] != len(data):
        ends.append(len(data))
    return ends


@given(
    st.lists(
        st.sampled_from([b"\0" * 512, b"a" * 512, b"b" * 512, b"z" * 300])
        | st.binary(min_size=512, max_size=512),
        min_size=1,
        max_size=80,
    ),
    st.sampled_from(
        [SMALL_PARAMS, ChunkParams(block_size=512, min_blocks=2, avg_blocks=4, max_blocks=9)]
    ),
)
def test_the_fast_chunker_follows_the_core_rule(blocks: list[bytes], params: ChunkParams) -> None:
    data = b"".join(blocks)
    cut = list(chunk_bytes(data, params))
    assert [o + n for o, n, _ in cut] == _reference_cuts(data, params)


# --------------------------------------------------------------------------- plan


@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans()), min_size=1, max_size=30)
)
def test_plan_accounts_for_every_chunk_once(spec: list[tuple[int, bool, bool]]) -> None:
    # spec: (content id, in place?, the booted slot has it?)
    hashes = [hashlib.sha256(bytes([c])).digest() for c, _, _ in spec]
    index = parse_index(
        encode_index(
            [(512, 512, h) for h in hashes],
            params=SMALL_PARAMS,
            image_size=512 * len(spec),
            raw_sha256=SHA,
        )
    )
    seed = {hashes[i]: 4096 * i for i, (_, _, there) in enumerate(spec) if there}
    in_place = [here for _, here, _ in spec]
    plan = plan_update(index, in_place, seed)
    assert plan.in_place == sum(in_place)
    assert plan.in_place_bytes == 512 * sum(in_place)
    placed = [o for n in (*plan.copies, *plan.fetches) for o in n.offsets]
    assert sorted(placed) == [512 * i for i, here in enumerate(in_place) if not here]
    assert len({n.sha256 for n in (*plan.copies, *plan.fetches)}) == len(plan.copies) + len(
        plan.fetches
    )  # each distinct chunk once
    assert all(n.sha256 in seed for n in plan.copies)
    assert not any(n.sha256 in seed for n in plan.fetches)


def test_a_full_scan_only_when_much_is_still_missing() -> None:
    index = parse_index(_index([512] * 16))
    hashes = [c.sha256 for c in index]
    nothing = [False] * 16
    assert worth_a_full_scan(index, nothing, {})  # nothing found: the layout moved
    assert not worth_a_full_scan(index, nothing, dict.fromkeys(hashes[:15], 0))
    assert not worth_a_full_scan(index, [True] * 14 + [False] * 2, {})  # 1/8 missing: no
    assert worth_a_full_scan(index, [True] * 13 + [False] * 3, {})


# --------------------------------------------------------------------------- apply


def _adaptive_box(size: int = 16384) -> tuple[MemoryBox[Any], MemoryChunkSource, list[Any]]:
    """A box whose factory image (slot A) has a varied body, as a real filesystem does."""
    box = MemoryBox.create("grub", image_size=size, capacity=4 * size)
    rng = random.Random(size)  # noqa: S311  (test data)
    header = make_image("1.0.0", size=size)[:120]
    box.slots.contents[Slot.A] = header + bytes(rng.getrandbits(8) for _ in range(size - 120))
    source = enable_adaptive(box)
    return box, source, []


def _agent(box: MemoryBox[Any], events: list[Any]) -> Any:
    agent = box.agent()
    agent.events = lambda event, **fields: events.append((event, fields))
    return agent


def test_apply_builds_the_slot_from_chunks_and_reports_the_bytes() -> None:
    box, source, events = _adaptive_box()
    factory = box.slots.contents[Slot.A]
    image = derive_image(factory, "1.1.0", changed_blocks=3)
    publish_chunked(box, source, image, "1.1.0")
    result = _agent(box, events).apply()
    assert result.state.phase is Phase.STAGED
    assert box.slots.contents[Slot.B] == image
    stats = result.stats
    assert stats is not None and stats.mode == "adaptive" and stats.fallback is None
    # slot B was empty: nothing in place, most copied from A, the changed chunks fetched
    assert stats.in_place == 0
    assert 0 < stats.copied < len(image)
    assert 0 < stats.downloaded < len(image)
    assert stats.written == len(image)
    assert not [e for e in events if e[0] == "update.adaptive_fallback"]


def test_passive_slot_holding_the_previous_release_is_left_in_place() -> None:
    box, source, events = _adaptive_box()
    factory = box.slots.contents[Slot.A]
    box.slots.contents[Slot.B] = factory  # both slots hold 1.0.0, as after a factory flash
    image = derive_image(factory, "1.1.0", changed_blocks=2)
    publish_chunked(box, source, image, "1.1.0")
    before = source.requests
    stats = _agent(box, events).apply().stats
    assert stats is not None and stats.mode == "adaptive"
    changed = sum(factory[i : i + 512] != image[i : i + 512] for i in range(0, len(image), 512))
    assert stats.written == 512 * changed  # only the blocks that differ
    assert stats.in_place > len(image) // 2
    assert box.slots.contents[Slot.B] == image
    assert source.requests - before >= 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("missing", "404"),
        ("corrupt", "does not match its SHA-256"),
        ("index", "chunk index unusable"),
        ("other-image", "describes another image"),
        ("no-index", None),
    ],
)
def test_anything_wrong_falls_back_to_the_full_image(fault: str, reason: str | None) -> None:
    box, source, events = _adaptive_box()
    factory = box.slots.contents[Slot.A]
    image = derive_image(factory, "1.1.0", changed_blocks=3)
    override = None
    if fault == "index":
        override = b"garbage"
    elif fault == "other-image":
        override = index_for(derive_image(factory, "9.9.9", changed_blocks=1))
    doc = publish_chunked(box, source, image, "1.1.0", index_override=override)
    if fault == "no-index":
        del doc["image"]["chunks"]
        box.fetcher.publish(box.server, doc, image)
    if fault in ("missing", "corrupt"):
        cut = chunk_bytes(image, SMALL_PARAMS)
        changed = [h for o, n, h in cut if factory[o : o + n] != image[o : o + n]]
        (source.missing if fault == "missing" else source.corrupt).add(changed[-1])
    result = _agent(box, events).apply()
    assert result.state.phase is Phase.STAGED
    assert box.slots.contents[Slot.B] == image
    stats = result.stats
    assert stats is not None and stats.mode == "full"
    assert stats.downloaded == len(image)
    logged = [f["reason"] for e, f in events if e == "update.adaptive_fallback"]
    if reason is None:
        assert not logged and stats.fallback == "the release offers no chunk index"
    else:
        assert len(logged) == 1 and reason in logged[0] and stats.fallback == logged[0]


def test_many_chunk_files_carrying_most_of_the_image_fetch_it_whole() -> None:
    many = parse_index(_index([512] * FULL_FILES))
    few = parse_index(_index([512] * (FULL_FILES - 1)))
    size = 512 * FULL_FILES
    nothing = plan_update(many, [False] * FULL_FILES, {})
    assert cheaper_in_full(nothing, size)
    # the full image served compressed to under twice what the chunk files carry: chunks
    assert not cheaper_in_full(nothing, 2 * nothing.download_bytes)
    # fewer requests: chunks, whatever they carry
    assert not cheaper_in_full(plan_update(few, [False] * (FULL_FILES - 1), {}), size)
    # half of it copied from the booted slot: chunks
    hashes = [c.sha256 for c in many]
    half = plan_update(many, [False] * FULL_FILES, dict.fromkeys(hashes[::2], 0))
    assert len(half.fetches) < FULL_FILES and not cheaper_in_full(half, size)


def test_slots_holding_nothing_of_a_large_release_take_the_full_image() -> None:
    size = 1 << 19  # about 340 chunks of SMALL_PARAMS
    box, source, events = _adaptive_box(size)
    rng = random.Random(7)  # noqa: S311  (test data)
    other = make_image("1.0.9", size=size)[:120] + rng.randbytes(size - 120)
    image = derive_image(other, "1.1.0", changed_blocks=1)  # shares nothing with slot A
    publish_chunked(box, source, image, "1.1.0")
    before = source.requests
    result = _agent(box, events).apply()
    assert box.slots.contents[Slot.B] == image
    stats = result.stats
    assert stats is not None and stats.mode == "full"
    assert stats.fallback is not None and "hold too little" in stats.fallback
    assert [f["reason"] for e, f in events if e == "update.adaptive_fallback"] == [stats.fallback]
    assert source.requests - before == 1, "more than the index was fetched before falling back"


def test_full_apply_reports_its_bytes_too() -> None:
    box = MemoryBox.create("grub")
    image = box.publish("1.1.0")
    stats = box.agent().apply().stats
    assert stats is not None
    assert (stats.mode, stats.downloaded, stats.written, stats.fallback) == (
        "full",
        len(image),
        len(image),
        "the release offers no chunk index",
    )


def test_default_params_are_the_documented_ones() -> None:
    assert (DEFAULT_PARAMS.block_size, DEFAULT_PARAMS.max_chunk) == (4096, 256 << 10)
    cast("Any", DEFAULT_PARAMS).check()
