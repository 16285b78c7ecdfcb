"""Measurement: fixed-size chunks vs content-defined chunks on two real ext4 releases.

Not a test: run it by hand (root: bench/ext4pair.py loop-mounts an image) and
read the table. It decided the chunking of the adaptive updates (README,
"Adaptive updates: why fixed 64 KiB chunks"):

    sudo .venv/bin/python bench/chunking.py [--workdir DIR]

For each chunker and each release pair (``inplace``: files replaced on the
mounted filesystem, the way an upgrade changes it; ``rebuilt``: mkfs.ext4 -d
run again over the changed tree) it chunks both images and reports, for a box
whose slots hold release 1:

* download: the zstd-compressed bytes of the release-2 chunks found nowhere in
  release 1 (each distinct chunk once) plus the compressed index;
* requests: how many chunks that is (one request each from a chunk store);
* index: the index size (36 bytes a chunk: length + SHA-256; zstd-compressed);
* write: bytes written to a passive slot holding release 1 (chunks whose bytes
  differ at their offset), and with a 4 KiB compare before each write;
* speed: chunking + SHA-256 of one 512 MiB image from the page cache.

Byte-level CDC uses pyfastcdc (FastCDC 2020, Cython) when it is installed
(``pip install pyfastcdc``); the project does not depend on it.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ext4pair import BLOCK, MIB, Pair, build_pair  # noqa: E402

Chunk = tuple[int, int, bytes]  # offset, length, sha256
Chunker = Callable[[memoryview], Iterator[tuple[int, int]]]


def fixed(size: int) -> Chunker:
    def cut(data: memoryview) -> Iterator[tuple[int, int]]:
        for off in range(0, len(data), size):
            yield off, min(size, len(data) - off)

    return cut


_ZERO = bytes(BLOCK)


def block_cdc(avg_blocks: int) -> Chunker:
    """Content-defined, but cut only at 4 KiB block boundaries, by a hash of the block."""
    lo, hi = max(avg_blocks // 4, 1), avg_blocks * 4

    def cut(data: memoryview) -> Iterator[tuple[int, int]]:
        start = 0
        blocks = 0
        for off in range(0, len(data), BLOCK):
            block = data[off : off + BLOCK]
            blocks += 1
            end = off + len(block)
            boundary = (
                blocks >= lo
                and block != _ZERO
                and (zlib.crc32(block) * 0x9E3779B1 >> 8) % avg_blocks == 0
            )
            if boundary or blocks >= hi:
                yield start, end - start
                start, blocks = end, 0
        if start < len(data):
            yield start, len(data) - start

    return cut


def byte_cdc(avg: int) -> Chunker | None:
    try:
        import pyfastcdc
    except ImportError:
        return None
    cdc = pyfastcdc.FastCDC(avg)

    def cut(data: memoryview) -> Iterator[tuple[int, int]]:
        for c in cdc.cut_buf(data):
            yield c.offset, c.length

    return cut


def chunk(data: memoryview, chunker: Chunker) -> tuple[list[Chunk], float]:
    t = time.perf_counter()
    out = [(o, n, hashlib.sha256(data[o : o + n]).digest()) for o, n in chunker(data)]
    return out, time.perf_counter() - t


def measure(pair: Pair, name: str, chunker: Chunker, level: int) -> dict[str, float]:
    old = memoryview(pair.old.read_bytes())
    new = memoryview(pair.new.read_bytes())
    old_chunks, _ = chunk(old, chunker)
    new_chunks, seconds = chunk(new, chunker)
    have = {h for _, _, h in old_chunks}
    need: dict[bytes, tuple[int, int]] = {}
    for o, n, h in new_chunks:
        if h not in have and h not in need:
            need[h] = (o, n)
    cctx_level = level
    import zstandard

    cctx = zstandard.ZstdCompressor(level=cctx_level)
    raw = sum(n for _, n in need.values())
    compressed = sum(len(cctx.compress(new[o : o + n])) for o, n in need.values())
    index = b"".join(struct.pack("<I", n) + h for _, n, h in new_chunks)
    index_z = len(zstandard.ZstdCompressor(level=19).compress(index))
    in_place_written = 0
    for o, n, _ in new_chunks:
        if old[o : o + n] != new[o : o + n]:
            in_place_written += n
    return {
        "chunks": len(new_chunks),
        "need_raw": raw,
        "download": compressed + index_z,
        "requests": len(need),
        "index": len(index),
        "index_z": index_z,
        "written": in_place_written,
        "mbps": len(new) / MIB / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--level", type=int, default=10, help="zstd level of the chunk files")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kubesolo-chunking-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = build_pair(work)
    chunkers: list[tuple[str, Chunker | None]] = [
        ("fixed 4 KiB", fixed(4096)),
        ("fixed 16 KiB", fixed(16384)),
        ("fixed 64 KiB", fixed(65536)),
        ("fixed 256 KiB", fixed(262144)),
        ("block-CDC avg 16 KiB", block_cdc(4)),
        ("block-CDC avg 64 KiB", block_cdc(16)),
        ("FastCDC avg 16 KiB", byte_cdc(16384)),
        ("FastCDC avg 64 KiB", byte_cdc(65536)),
    ]
    for pname, pair in pairs.items():
        size = pair.size
        cf = pair.changed_fraction
        print(
            f"\n{pname}: {pair.changed_blocks} of {pair.total_blocks} 4 KiB blocks changed "
            f"({cf:.2%} = {pair.changed_blocks * BLOCK / MIB:.1f} MiB); zstd -{args.level} chunks"
        )
        print(
            f"{'chunker':24} {'chunks':>7} {'needed MiB':>10} {'download MiB':>12} "
            f"{'x changed':>9} {'requests':>8} {'index KiB':>9} {'idx.zst KiB':>11} "
            f"{'written MiB':>11} {'MB/s':>6}"
        )
        for cname, chunker in chunkers:
            if chunker is None:
                print(f"{cname:24} (pyfastcdc not installed)")
                continue
            r = measure(pair, cname, chunker, args.level)
            print(
                f"{cname:24} {r['chunks']:7.0f} {r['need_raw'] / MIB:10.1f} "
                f"{r['download'] / MIB:12.2f} {r['download'] / size / cf:9.2f} "
                f"{r['requests']:8.0f} {r['index'] / 1024:9.0f} {r['index_z'] / 1024:11.0f} "
                f"{r['written'] / MIB:11.1f} {r['mbps']:6.0f}"
            )
        print(
            f"{'(compare 4 KiB, write)':24} {'':7} {'':10} {'':12} {'':9} {'':8} {'':9} {'':11} "
            f"{pair.changed_blocks * BLOCK / MIB:11.1f}"
        )


if __name__ == "__main__":
    main()
