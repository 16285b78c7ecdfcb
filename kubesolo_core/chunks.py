"""Adaptive updates, the pure part: the chunk index format, the chunking rule, the plan.

A release may publish, beside its image, a **chunk index** and a
**content-addressed chunk store** (DESIGN.md 5, "Adaptive updates"). The
agent then builds the new slot from chunks the passive slot already holds at
the right place (left alone), chunks the booted slot holds anywhere (copied),
and chunks fetched from the store, each verified by its SHA-256 before it is
written; the whole slot is still read back against ``raw_sha256`` at the end.

Chunking: block-aligned content-defined chunks. The image is cut only at
filesystem-block boundaries (``block_size``, 4 KiB), and a block ends a chunk
when its CRC-32 is a multiple of ``avg_blocks`` (after at least
``min_blocks``; never an all-zero block; always after ``max_blocks``). A
filesystem moves data in whole blocks, so cuts that depend on a block's own
content find the same chunks again after files moved (a rebuilt image),
while staying aligned with the blocks a slot is written in. bench/chunking.py
measured it against fixed-size and byte-level content-defined chunks (README,
"Adaptive updates").

Index format (binary, little-endian; ``ksochidx`` version 1)::

    offset  size   field
    0       8      magic b"KSOCHIDX"
    8       2      format version, 1
    10      2      reserved, 0
    12      4      block_size (bytes, a power of two, 512..1 MiB)
    16      4      min_blocks
    20      4      avg_blocks (the CRC-32 modulus)
    24      4      max_blocks
    28      4      n, the number of chunks
    32      8      image_size (raw bytes; the sum of the chunk lengths)
    40      32     SHA-256 of the raw image (the release's raw_sha256)
    72      40*n   per chunk, in image order: u32 length, u32 stored size,
                   32-byte SHA-256 of the raw chunk

A chunk's offset is the sum of the lengths before it. Every length is a
multiple of block_size (only the last may be shorter) and at most
max_blocks * block_size. The stored size is the size of the chunk's file in
the store (so a download is bounded and resumable like the full image's;
the file's bytes are trusted only through the raw chunk's SHA-256). The chunk
with SHA-256 ``h`` lives in the store at ``<store>/<hex(h)[:4]>/<hex(h)>.zst``:
one zstd frame of its raw bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence

import attrs

from kubesolo_core.errors import CorruptInput

MAGIC = b"KSOCHIDX"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHIIIIIQ32s")
_ENTRY = struct.Struct("<II32s")
HEADER_SIZE = _HEADER.size  # 72
ENTRY_SIZE = _ENTRY.size  # 40
#: a chunk index for a slot of up to 16 GiB stays under this (the agent reads no more)
INDEX_LIMIT = 64 << 20


class InvalidChunkIndex(CorruptInput):
    """A chunk index is malformed or does not describe the release's image."""


@attrs.frozen(kw_only=True)
class ChunkParams:
    """Where the chunker cuts (recorded in the index: agent and publisher must agree)."""

    block_size: int = 4096
    min_blocks: int = 4
    avg_blocks: int = 16
    max_blocks: int = 64

    def cuts_after(self, blocks: int, mix: int, zero: bool) -> bool:
        """True when the block just added (the ``blocks``-th of its chunk) ends the chunk.

        ``mix`` is the CRC-32 of the block, ``zero`` whether it is all zeros
        (free space: runs of zero blocks become max-size chunks).
        """
        if blocks >= self.max_blocks:
            return True
        return blocks >= self.min_blocks and not zero and mix % self.avg_blocks == 0

    @property
    def max_chunk(self) -> int:
        return self.block_size * self.max_blocks

    def check(self) -> None:
        """Raise InvalidChunkIndex when the parameters are out of range."""
        bs = self.block_size
        if bs < 512 or bs > 1 << 20 or bs & (bs - 1):
            raise InvalidChunkIndex(f"chunk index: block_size {bs} is not a power of two 512..1M")
        if not 1 <= self.min_blocks <= self.max_blocks <= 4096 or self.avg_blocks < 1:
            raise InvalidChunkIndex(
                f"chunk index: min/avg/max blocks {self.min_blocks}/{self.avg_blocks}/"
                f"{self.max_blocks} are out of range"
            )


DEFAULT_PARAMS = ChunkParams()


@attrs.frozen(kw_only=True)
class Chunk:
    """One chunk of an image: where it is and what it hashes to."""

    offset: int
    length: int
    sha256: bytes
    stored: int


@attrs.frozen(kw_only=True, eq=False)
class ChunkIndex:
    """A parsed chunk index. Compact: lengths as a tuple, hashes as one bytes object."""

    params: ChunkParams
    image_size: int
    raw_sha256: str
    lengths: tuple[int, ...]
    stored: tuple[int, ...]
    hashes: bytes

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[Chunk]:
        offset = 0
        for i, length in enumerate(self.lengths):
            sha = self.hashes[32 * i : 32 * i + 32]
            yield Chunk(offset=offset, length=length, sha256=sha, stored=self.stored[i])
            offset += length


def chunk_path(sha256: bytes) -> str:
    """The chunk's file in the store, relative to the store's URL."""
    text = sha256.hex()
    return f"{text[:4]}/{text}.zst"


def encode_index(
    chunks: Sequence[tuple[int, int, bytes]],
    *,
    params: ChunkParams,
    image_size: int,
    raw_sha256: str,
) -> bytes:
    """The index bytes for ``chunks`` (length, stored size, sha256) in image order."""
    head = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        0,
        params.block_size,
        params.min_blocks,
        params.avg_blocks,
        params.max_blocks,
        len(chunks),
        image_size,
        bytes.fromhex(raw_sha256),
    )
    return head + b"".join(_ENTRY.pack(length, stored, sha) for length, stored, sha in chunks)


def parse_index(data: bytes) -> ChunkIndex:
    """Parse and check an index; raise :class:`InvalidChunkIndex` naming what is wrong."""
    if len(data) < HEADER_SIZE:
        raise InvalidChunkIndex(f"chunk index: {len(data)} bytes, shorter than its header")
    magic, version, _, bs, lo, avg, hi, count, size, sha = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidChunkIndex("chunk index: bad magic (not a kubesolo chunk index)")
    if version != FORMAT_VERSION:
        raise InvalidChunkIndex(
            f"chunk index: format version {version} (this agent reads {FORMAT_VERSION})"
        )
    params = ChunkParams(block_size=bs, min_blocks=lo, avg_blocks=avg, max_blocks=hi)
    params.check()
    if len(data) != HEADER_SIZE + ENTRY_SIZE * count:
        raise InvalidChunkIndex(
            f"chunk index: {len(data)} bytes for {count} chunks "
            f"(expected {HEADER_SIZE + ENTRY_SIZE * count})"
        )
    lengths = []
    stored_sizes = []
    hashes = bytearray()
    total = 0
    for i, (length, stored, digest) in enumerate(
        _ENTRY.iter_unpack(memoryview(data)[HEADER_SIZE:])
    ):
        last = i == count - 1
        if length <= 0 or length > params.max_chunk or (length % bs and not last):
            raise InvalidChunkIndex(f"chunk index: chunk {i} has a bad length {length}")
        # zstd's worst case is a little over the input; anything far beyond is not a chunk file
        if stored <= 0 or stored > length + (length >> 7) + 1024:
            raise InvalidChunkIndex(f"chunk index: chunk {i} has a bad stored size {stored}")
        lengths.append(length)
        stored_sizes.append(stored)
        hashes += digest
        total += length
    if total != size:
        raise InvalidChunkIndex(f"chunk index: chunks add up to {total} bytes, header says {size}")
    return ChunkIndex(
        params=params,
        image_size=size,
        raw_sha256=sha.hex(),
        lengths=tuple(lengths),
        stored=tuple(stored_sizes),
        hashes=bytes(hashes),
    )


# --------------------------------------------------------------------------- the plan


#: chunk the whole booted slot when more than this share of the image is still missing
#: after the chunks found in place and at their own offset in the booted slot
SCAN_SHARE = 1 / 8


def worth_a_full_scan(
    index: ChunkIndex, in_place: Sequence[bool], seed: Mapping[bytes, int]
) -> bool:
    """Whether chunking the whole booted slot may find what its same offsets did not.

    The booted slot is first checked at each missing chunk's own offset:
    when the two releases share their layout (files replaced on a mounted
    filesystem), what is still missing then is new content that no scan can
    find, and reading and chunking the whole slot would only cost time.
    When a lot is still missing, the layout moved (an image rebuilt by
    ``mkfs -d``): then the data is likely elsewhere in the slot, and the scan
    pays for itself in bytes not downloaded. The cost of a wrong "no" is
    bounded by ``SCAN_SHARE`` of the image (before compression).
    """
    missing = sum(
        c.length
        for c, here in zip(index, in_place, strict=True)
        if not here and c.sha256 not in seed
    )
    return missing > index.image_size * SCAN_SHARE


@attrs.frozen(kw_only=True)
class Need:
    """A chunk the slot needs at ``offsets``, and where it comes from."""

    sha256: bytes
    length: int
    stored: int
    offsets: tuple[int, ...]
    #: where the booted slot holds it, or None: fetch it from the store
    seed_offset: int | None = None


@attrs.frozen(kw_only=True)
class Plan:
    """Which chunks stay in place, which are copied from the booted slot, which are fetched."""

    chunks: int
    in_place: int
    in_place_bytes: int
    copies: tuple[Need, ...]
    fetches: tuple[Need, ...]

    @property
    def copy_bytes(self) -> int:
        return sum(n.length * len(n.offsets) for n in self.copies)

    @property
    def fetch_bytes(self) -> int:
        """Raw bytes of the distinct chunks to fetch."""
        return sum(n.length for n in self.fetches)

    @property
    def download_bytes(self) -> int:
        """Bytes the chunk files to fetch take on the server."""
        return sum(n.stored for n in self.fetches)


def plan_update(index: ChunkIndex, in_place: Sequence[bool], seed: Mapping[bytes, int]) -> Plan:
    """Decide each chunk's source.

    ``in_place[i]`` says the passive slot already holds chunk ``i`` at its
    offset; ``seed`` maps a chunk hash to an offset in the booted slot that
    holds it. A chunk needed at several offsets is copied or fetched once.
    """
    if len(in_place) != len(index):
        raise ValueError("in_place must have one entry per chunk")
    kept = 0
    kept_bytes = 0
    wanted: dict[bytes, list[int]] = {}
    sizes: dict[bytes, tuple[int, int]] = {}
    for chunk, here in zip(index, in_place, strict=True):
        if here:
            kept += 1
            kept_bytes += chunk.length
            continue
        wanted.setdefault(chunk.sha256, []).append(chunk.offset)
        sizes[chunk.sha256] = (chunk.length, chunk.stored)
    copies: list[Need] = []
    fetches: list[Need] = []
    for sha, offsets in wanted.items():
        length, stored = sizes[sha]
        need = Need(
            sha256=sha,
            length=length,
            stored=stored,
            offsets=tuple(offsets),
            seed_offset=seed.get(sha),
        )
        (copies if need.seed_offset is not None else fetches).append(need)
    return Plan(
        chunks=len(index),
        in_place=kept,
        in_place_bytes=kept_bytes,
        copies=tuple(copies),
        fetches=tuple(fetches),
    )


#: fetch the full image instead when the chunk files to fetch would carry more than this
#: share of the full image's served bytes, in at least FULL_FILES requests: one stream
#: beats thousands of small requests (bench/apply_vs_peers.py --signed, a 512 MiB image
#: served as zstd that the slots held nothing of: 10.2 s as chunk files, 4.2 s as one stream)
FULL_SHARE = 1 / 2
FULL_FILES = 256


def cheaper_in_full(plan: Plan, served_size: int) -> bool:
    """Whether fetching the full image (``served_size`` bytes) beats fetching ``plan``'s chunks.

    A few requests cost little whatever they carry (small images, a small
    change); many requests that carry most of the image cost more than it.
    """
    return len(plan.fetches) >= FULL_FILES and plan.download_bytes > served_size * FULL_SHARE


@attrs.frozen(kw_only=True)
class AdaptiveStats:
    """What an apply did, byte by byte (reported by ``apply`` and kept for the metrics)."""

    mode: str  # "adaptive" or "full"
    image_size: int
    #: bytes the passive slot already held in place (not written)
    in_place: int = 0
    #: bytes copied from the booted slot
    copied: int = 0
    #: bytes received from the server (compressed chunk files + the index, or the full image)
    downloaded: int = 0
    #: bytes actually written to the slot (after compare-before-write)
    written: int = 0
    chunks: int = 0
    #: chunk files fetched (one request each, retries not counted)
    requests: int = 0
    #: why the adaptive path was not used (or abandoned), None when it was used
    fallback: str | None = None
