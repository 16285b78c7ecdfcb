"""Adaptive updates in memory: a chunk store with faults, chunked slots with power cuts.

Ships in the package beside :mod:`kubesolo_adapters.fakes.memory` for the same
reasons (library users, the simulator, the unit tier). It keeps the real
adapters' rules: the same chunker (kubesolo_adapters.chunker) and index
format, a chunk checked before it is written, only differing blocks
written, the first ``head`` bytes written last, the slot read back against
``raw_sha256``. Each chunk write is one durable write on the box's
:class:`~kubesolo_adapters.fakes.power.Power` rail, so the crash-point tests can
cut the power between any two of them; a cut tears the chunk being written.

Faults: a chunk that is missing from the store or served corrupt, an index
that is not the one the release names, an index for another image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from kubesolo_adapters.chunker import chunk_bytes
from kubesolo_adapters.fakes.box import MemoryBox
from kubesolo_adapters.fakes.images import make_image
from kubesolo_adapters.fakes.memory import MemorySlotStore, _resolve
from kubesolo_adapters.fakes.power import PowerCut
from kubesolo_core.adaptive import (
    AdaptiveUpdater,
    ChunkWrite,
    FetchChunks,
    Fetched,
    Survey,
)
from kubesolo_core.chunks import (
    ChunkIndex,
    ChunkParams,
    Need,
    Plan,
    chunk_path,
    encode_index,
    worth_a_full_scan,
)
from kubesolo_core.errors import FetchError, SlotError, VerifyError
from kubesolo_core.ports import Progress
from kubesolo_core.release import ChunksSpec, ImageSpec
from kubesolo_core.slots import Slot

__all__ = [
    "SMALL_PARAMS",
    "MemoryChunkSource",
    "MemoryChunkedSlots",
    "derive_image",
    "enable_adaptive",
    "index_for",
    "publish_chunked",
]

#: chunking parameters that cut a few-KiB synthetic image into several chunks
SMALL_PARAMS = ChunkParams(block_size=512, min_blocks=1, avg_blocks=3, max_blocks=6)


@attrs.define
class MemoryChunkSource:
    """Chunk indexes and a chunk store in memory (raw chunks, served as they are)."""

    indexes: dict[str, bytes] = attrs.field(factory=dict)
    chunks: dict[str, bytes] = attrs.field(factory=dict)
    #: chunk hashes the store does not have (404) or serves with a flipped bit
    missing: set[bytes] = attrs.field(factory=set)
    corrupt: set[bytes] = attrs.field(factory=set)
    requests: int = 0

    def publish(self, release_url: str, spec: ChunksSpec, index: bytes, image: bytes) -> None:
        """Serve ``index`` and every chunk of ``image`` it lists."""
        from kubesolo_core.chunks import parse_index

        self.indexes[_resolve(release_url, spec.index)] = index
        store = _resolve(release_url, spec.store.rstrip("/") + "/x").rsplit("/", 1)[0]
        for chunk in parse_index(index):
            url = f"{store}/{chunk_path(chunk.sha256)}"
            self.chunks[url] = image[chunk.offset : chunk.offset + chunk.length]

    def fetch_index(self, release_url: str, spec: ChunksSpec) -> bytes:
        url = _resolve(release_url, spec.index)
        self.requests += 1
        if url not in self.indexes:
            raise FetchError(f"{url}: 404 not found")
        data = self.indexes[url]
        if len(data) != spec.size or hashlib.sha256(data).hexdigest() != spec.sha256:
            raise FetchError(f"{url}: size or SHA-256 is not what the release names")
        return data

    def fetch_chunks(
        self, release_url: str, spec: ChunksSpec, needs: Sequence[Need]
    ) -> Iterator[Fetched]:
        store = _resolve(release_url, spec.store.rstrip("/") + "/x").rsplit("/", 1)[0]

        def gen() -> Iterator[Fetched]:
            for need in sorted(needs, key=lambda n: n.offsets[0]):
                url = f"{store}/{chunk_path(need.sha256)}"
                self.requests += 1
                if need.sha256 in self.missing or url not in self.chunks:
                    raise FetchError(f"{url}: 404 not found")
                data = self.chunks[url]
                if need.sha256 in self.corrupt:
                    data = bytes([data[0] ^ 1]) + data[1:]
                yield need, data, len(data)

        return gen()


@attrs.define
class MemoryChunkedSlots:
    """The ChunkedSlots port over a :class:`MemorySlotStore` (shares its contents and power)."""

    slots: MemorySlotStore
    #: bytes at the start of an image written last (the real writer: 1 MiB)
    head: int = 512

    def survey(self, target: Slot, seed: Slot | None, index: ChunkIndex) -> Survey:
        passive = self.slots.contents.get(target) or b""
        in_place = tuple(
            hashlib.sha256(passive[c.offset : c.offset + c.length]).digest() == c.sha256
            and len(passive) >= c.offset + c.length
            for c in index
        )
        seeds: dict[bytes, int] = {}
        there = self.slots.contents.get(seed) if seed is not None and seed is not target else None
        if there:
            # as the real slots do: the same offsets first, the whole slot when the layout moved
            for c, kept in zip(index, in_place, strict=True):
                part = there[c.offset : c.offset + c.length]
                if not kept and hashlib.sha256(part).digest() == c.sha256:
                    seeds.setdefault(c.sha256, c.offset)
            if worth_a_full_scan(index, in_place, seeds):
                wanted = {c.sha256 for c in index}
                for offset, _, sha in chunk_bytes(there, index.params):
                    if sha in wanted:
                        seeds.setdefault(sha, offset)
        return Survey(in_place=in_place, seed=seeds)

    def write_plan(
        self,
        target: Slot,
        *,
        seed: Slot | None,
        index: ChunkIndex,
        plan: Plan,
        fetch: FetchChunks,
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> ChunkWrite:
        capacity = self.slots.capacities.get(target)
        if capacity is None:
            raise SlotError(f"slot {target.value} not found")
        if image.raw_size > capacity:
            raise SlotError(
                f"slot {target.value} holds {capacity} bytes, the image needs {image.raw_size}"
            )
        content = bytearray(self.slots.contents.get(target) or b"")
        if len(content) < image.raw_size:
            content += bytes(image.raw_size - len(content))
        source = (self.slots.contents.get(seed) or b"") if seed is not None else b""
        held: list[tuple[int, bytes]] = []
        written = 0
        block = index.params.block_size

        def put(offset: int, data: bytes, *, hold: bool = True) -> None:
            nonlocal written
            if hold and offset < self.head:
                cut = min(len(data), self.head - offset)
                held.append((offset, data[:cut]))
                offset, data = offset + cut, data[cut:]
            for b in range(0, len(data), block):
                part = data[b : b + block]
                at = offset + b
                if content[at : at + len(part)] == part:
                    continue
                try:
                    self.slots.power.durable(f"slot.chunk:{target.value}:{at}")
                except PowerCut:
                    half = len(part) // 2
                    content[at : at + half] = part[:half]  # torn
                    self.slots.contents[target] = bytes(content)
                    raise
                content[at : at + len(part)] = part
                written += len(part)

        copied = downloaded = requests = 0
        redo: list[Need] = []
        stream = fetch(plan.fetches) if plan.fetches else iter(())
        for need in plan.copies:
            assert need.seed_offset is not None  # noqa: S101  (copies always have one)
            data = source[need.seed_offset : need.seed_offset + need.length]
            if hashlib.sha256(data).digest() != need.sha256:
                redo.append(attrs.evolve(need, seed_offset=None))
                continue
            for offset in need.offsets:
                put(offset, data)
                copied += need.length
        for part in (stream, fetch(redo) if redo else iter(())):
            for need, data, served in part:
                if hashlib.sha256(data).digest() != need.sha256:
                    raise VerifyError(f"chunk {need.sha256.hex()} does not match its SHA-256")
                downloaded += served
                requests += 1
                for offset in need.offsets:
                    put(offset, data)
        for offset, data in sorted(held):
            put(offset, data, hold=False)
        self.slots.contents[target] = bytes(content[: image.raw_size])
        digest = hashlib.sha256(self.slots.contents[target]).hexdigest()
        if progress is not None:
            progress(image.raw_size, image.raw_size)
        if digest != image.raw_sha256:
            raise VerifyError(
                f"slot {target.value} reads back SHA-256 {digest} after the chunked write, "
                f"expected {image.raw_sha256}"
            )
        return ChunkWrite(
            raw_sha256=digest,
            copied=copied,
            downloaded=downloaded,
            written=written,
            requests=requests,
        )


def derive_image(
    base: bytes,
    version: str,
    *,
    size: int | None = None,
    changed_blocks: int = 2,
    block: int = 512,
    bootable: bool = True,
    healthy: bool = True,
) -> bytes:
    """A new synthetic image made from ``base`` the way a release changes a few blocks.

    The header (version, flags) is rewritten, ``changed_blocks`` blocks at
    places chosen by the version get new content, the rest stays as in ``base``.
    """
    fresh = make_image(version, size=size or len(base), bootable=bootable, healthy=healthy)
    out = bytearray(base[: len(fresh)].ljust(len(fresh), b"\0"))
    header_end = fresh.index(b"\n", len(b"KSOLO-IMAGE\n")) + 1
    out[:header_end] = fresh[:header_end]
    blocks = max(len(out) // block, 1)
    seed = hashlib.sha256(version.encode()).digest()
    for i in range(changed_blocks):
        n = 1 + (seed[i % 32] + 7 * i) % max(blocks - 1, 1)
        fill = hashlib.sha256(seed + bytes([i])).digest() * (block // 32 + 1)
        out[n * block : (n + 1) * block] = fill[: len(out[n * block : (n + 1) * block])]
    return bytes(out)


def index_for(image: bytes, params: ChunkParams = SMALL_PARAMS) -> bytes:
    """The chunk index of ``image`` for a store of raw (uncompressed) chunks."""
    return encode_index(
        [(length, length, digest) for _, length, digest in chunk_bytes(image, params)],
        params=params,
        image_size=len(image),
        raw_sha256=hashlib.sha256(image).hexdigest(),
    )


def enable_adaptive(box: MemoryBox[Any]) -> MemoryChunkSource:
    """Give ``box`` the adaptive ports (a chunk source and chunked slots over its own slots)."""
    source = MemoryChunkSource()
    box.adaptive = AdaptiveUpdater(source=source, slots=MemoryChunkedSlots(box.slots))
    return source


def publish_chunked(
    box: MemoryBox[Any],
    source: MemoryChunkSource,
    image: bytes,
    version: str,
    *,
    params: ChunkParams = SMALL_PARAMS,
    index_override: bytes | None = None,
) -> dict[str, Any]:
    """Publish ``image`` as release ``version`` with a chunk index and store; returns the doc."""
    sha = hashlib.sha256(image).hexdigest()
    index = index_for(image, params)
    served_index = index_override if index_override is not None else index
    spec = ChunksSpec(
        index=f"kubesolo-os-{version}.chunks",
        sha256=hashlib.sha256(served_index).hexdigest(),
        size=len(served_index),
        store="chunks/",
    )
    doc: dict[str, Any] = {
        "schema": 1,
        "version": version,
        "image": {
            "url": f"kubesolo-os-{version}.img",
            "sha256": sha,
            "size": len(image),
            "raw_size": len(image),
            "raw_sha256": sha,
            "chunks": attrs.asdict(spec),
        },
    }
    box.fetcher.publish(box.server, doc, image)
    source.publish(box.server, spec, index, image)
    source.indexes[_resolve(box.server, spec.index)] = served_index
    json.dumps(doc)  # a document a server could serve
    return doc
