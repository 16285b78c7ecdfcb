"""The adaptive half of the block-device and image-file slots: the ChunkedSlots port for real.

It works on the slots :class:`~kubesolo_adapters.blockdev.BlockSlotStore`
resolves, and opens the passive slot for writing only through
:func:`kubesolo_adapters.slotguard.open_slot_for_write`, as the full writer
(:mod:`kubesolo_adapters.slotwriter`) does: the slot is proven, on the open
descriptor, not to be the other slot, a mounted filesystem or a disk holding
them, and a block device is opened with O_EXCL.

* ``survey`` reads the passive slot at each chunk's range and hashes it (a
  chunk that already matches stays in place), then reads the booted slot at
  the offsets of the chunks still missing, and, when much is still missing
  (a rebuilt layout), chunks the whole booted slot with the index's own
  rule to find data that moved. The booted slot is only read, never opened
  for writing. A torn or foreign slot simply matches fewer chunks.
* ``write_plan`` starts the chunk downloads, copies the chunks the booted
  slot holds, then writes what arrives. Every chunk is checked against its
  SHA-256 right before it is written; a booted-slot chunk that no longer
  matches is fetched instead. Only the blocks that differ from what the
  slot holds are written (an SD card wears by writes; the reads are cheap),
  and everything in the first MiB (superblocks, labels) is held back and
  written last, after an fsync of the rest, as the full writer does. Then
  fsync and a read-back of ``raw_size`` bytes from the medium
  (:func:`kubesolo_adapters.slotverify.read_back`: O_DIRECT where allowed,
  else after a cache drop), judged against ``raw_sha256`` as a full write's.

Memory: one chunk per step plus the first MiB held back, plus what the
chunk source queues; flat in the image size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator

import attrs

from kubesolo_adapters import slotguard
from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_adapters.chunker import chunk_fd, read_ahead, read_exact
from kubesolo_adapters.fsversion import read_head
from kubesolo_adapters.slotfind import Target, size_of
from kubesolo_adapters.slotverify import read_back
from kubesolo_adapters.slotwriter import HEAD_BYTES
from kubesolo_core.adaptive import ChunkWrite, FetchChunks, Fetched, Survey
from kubesolo_core.chunks import ChunkIndex, Need, Plan, worth_a_full_scan
from kubesolo_core.errors import SlotError, VerifyError
from kubesolo_core.ports import Progress
from kubesolo_core.release import ImageSpec, verify_written
from kubesolo_core.slots import Slot

__all__ = ["BlockChunkedSlots", "ext_size"]

#: bytes per read while surveying a slot
_SURVEY_READ = 4 << 20


def ext_size(head: bytes) -> int | None:
    """The size of the ext2/3/4 filesystem whose first 4 KiB are ``head``, None if it is not one."""
    if len(head) < 1024 + 0x158 or head[1024 + 0x38 : 1024 + 0x3A] != b"\x53\xef":
        return None
    sb = head[1024:]
    lo = struct.unpack_from("<I", sb, 0x04)[0]
    log = struct.unpack_from("<I", sb, 0x18)[0]
    incompat = struct.unpack_from("<I", sb, 0x60)[0]
    hi = struct.unpack_from("<I", sb, 0x150)[0] if incompat & 0x80 else 0  # INCOMPAT_64BIT
    if log > 6:
        return None
    return int(((hi << 32) | lo) * (1024 << log))


class _Writer:
    """Writes chunks at their offsets: only blocks that differ, the head held back to the end."""

    def __init__(self, wfd: int, rfd: int, path: str, *, head_len: int, block: int) -> None:
        self.wfd = wfd
        self.rfd = rfd
        self.path = path
        self.head_len = head_len
        self.block = block
        self.head: list[tuple[int, bytes]] = []
        self.written = 0

    def put(self, offset: int, data: bytes) -> None:
        if offset < self.head_len:
            cut = min(len(data), self.head_len - offset)
            self.head.append((offset, data[:cut]))
            data = data[cut:]
            offset += cut
        if data:
            self._differing(offset, data)

    def _differing(self, offset: int, data: bytes) -> None:
        bs = self.block
        current = bytearray(len(data))
        try:
            have = read_exact(self.rfd, memoryview(current), offset)
        except OSError:
            have = 0  # unreadable: write it all
        view = memoryview(data)
        run_start: int | None = None
        for b in range(0, len(data) + bs, bs):
            end = min(b + bs, len(data))
            differs = b < len(data) and (end > have or current[b:end] != view[b:end])
            if differs and run_start is None:
                run_start = b
            elif not differs and run_start is not None:
                self._pwrite(offset + run_start, view[run_start:b])
                run_start = None

    def _pwrite(self, offset: int, data: memoryview) -> None:
        done = 0
        try:
            while done < len(data):
                done += os.pwrite(self.wfd, data[done:], offset + done)
        except OSError as exc:
            raise SlotError(
                f"{self.path}: write at byte {offset + done} failed: {exc.strerror}"
            ) from None
        self.written += len(data)

    def fsync(self) -> None:
        try:
            os.fsync(self.wfd)
        except OSError as exc:
            raise SlotError(f"{self.path}: fsync failed: {exc.strerror}") from None

    def finish(self) -> None:
        """fsync the body, then write the held-back head and fsync again."""
        self.fsync()
        for offset, data in sorted(self.head):
            self._differing(offset, data)
        self.fsync()


@attrs.define
class BlockChunkedSlots:
    """The ChunkedSlots port over a :class:`BlockSlotStore`'s slots."""

    store: BlockSlotStore

    # ----------------------------------------------------------------- survey

    def survey(self, target: Slot, seed: Slot | None, index: ChunkIndex) -> Survey:
        """Which chunks the target holds in place, and where the seed slot holds the others.

        The seed (booted) slot is read at the missing chunks' own offsets
        first; only when a large share is still missing (the layout moved,
        :func:`~kubesolo_core.chunks.worth_a_full_scan`) is the whole slot
        chunked with the index's rule.
        """
        dest = self.store._resolve(target)
        src = self.store._resolve(seed) if seed is not None and seed is not target else None
        in_place = self._in_place(dest, index)
        seeds = self._positional(src, index, in_place)
        if worth_a_full_scan(index, in_place, seeds):
            seeds = {**self._seed(src, index), **seeds}
        return Survey(in_place=in_place, seed=seeds)

    @staticmethod
    def _positional(
        src: Target | None, index: ChunkIndex, in_place: tuple[bool, ...]
    ) -> dict[bytes, int]:
        """Chunks the seed slot holds at the same offset as the new image (not in place)."""
        seeds: dict[bytes, int] = {}
        if src is None or src.kind is None or src.path is None:
            return seeds
        try:
            fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return seeds
        buf = bytearray(index.params.max_chunk)
        view = memoryview(buf)
        try:
            for chunk, here in zip(index, in_place, strict=True):
                if here or chunk.sha256 in seeds:
                    continue
                part = view[: chunk.length]
                if read_exact(fd, part, chunk.offset) != chunk.length:
                    break
                if hashlib.sha256(part).digest() == chunk.sha256:
                    seeds[chunk.sha256] = chunk.offset
        except OSError:
            pass
        finally:
            os.close(fd)
        return seeds

    @staticmethod
    def _in_place(dest: Target, index: ChunkIndex) -> tuple[bool, ...]:
        found = [False] * len(index)
        if dest.kind is None or dest.path is None:
            return tuple(found)
        try:
            fd = os.open(dest.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return tuple(found)
        # Large sequential reads, the next one running while this one is hashed
        # (one pread per 16-256 KiB chunk would be many small device requests);
        # a chunk spanning two reads is hashed in two steps.
        chunks = iter(enumerate(index))
        try:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            current = next(chunks, None)
            digest = hashlib.sha256()
            left = current[1].length if current else 0
            for piece in read_ahead(fd, index.image_size, _SURVEY_READ):
                at = 0
                while current is not None and at < len(piece):
                    take = min(left, len(piece) - at)
                    digest.update(piece[at : at + take])
                    at += take
                    left -= take
                    if left == 0:
                        found[current[0]] = digest.digest() == current[1].sha256
                        current = next(chunks, None)
                        digest = hashlib.sha256()
                        left = current[1].length if current else 0
        except OSError:
            pass  # an unreadable stretch: what is left is written
        finally:
            os.close(fd)
        return tuple(found)

    def _seed(self, src: Target | None, index: ChunkIndex) -> dict[bytes, int]:
        if src is None or src.kind is None or src.path is None:
            return {}
        capacity = size_of(src) or 0
        head = read_head(src.path) or b""
        # The booted slot's image ends where its filesystem ends; a partition may be larger.
        size = min(capacity, ext_size(head) or index.image_size)
        wanted = {index.hashes[i : i + 32] for i in range(0, len(index.hashes), 32)}
        seeds: dict[bytes, int] = {}
        try:
            fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return {}
        try:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            for offset, _, sha in chunk_fd(fd, size, index.params):
                if sha in wanted and sha not in seeds:
                    seeds[sha] = offset
        except OSError:
            pass  # what was found before the bad stretch still counts (each copy is verified)
        finally:
            os.close(fd)
        return seeds

    # ----------------------------------------------------------------- write

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
        """Carry out ``plan`` on ``target``, then read the slot back against ``raw_sha256``."""
        dest = self.store._resolve(target)
        if dest.kind is None or dest.path is None:
            raise SlotError(
                f"slot {target.value} ({dest.spec or 'no spec'}) not found: {dest.problem}",
                way_out="check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
            )
        path = dest.path
        capacity = size_of(dest)
        if capacity is None or image.raw_size > capacity:
            raise SlotError(
                f"slot {target.value} ({path}) holds {capacity} bytes, the image needs "
                f"{image.raw_size}; nothing was written"
            )
        src = self.store._resolve(seed) if seed is not None and plan.copies else None
        # The one open-for-write of a slot, guarded as the full writer's is.
        wfd = slotguard.open_slot_for_write(
            path,
            target_name=f"slot {target.value}",
            survivors=self.store._survivors(target),
            exclusive=dest.kind == "block",
        )
        rfd = -1
        sfd = -1
        fetched: Iterator[Fetched] = iter(())
        try:
            rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            if src is not None and src.path is not None:
                with contextlib.suppress(OSError):
                    sfd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC)
            writer = _Writer(
                wfd,
                rfd,
                path,
                head_len=min(HEAD_BYTES, image.raw_size),
                block=index.params.block_size,
            )
            done = plan.in_place_bytes
            # Downloads run while the booted slot's chunks are copied.
            fetched = fetch(plan.fetches) if plan.fetches else iter(())
            copied = 0
            redo: list[Need] = []
            for need in plan.copies:
                data = _read_seed(sfd, need)
                if data is None:
                    redo.append(attrs.evolve(need, seed_offset=None))
                    continue
                for offset in need.offsets:
                    writer.put(offset, data)
                copied += need.length * len(need.offsets)
                done += need.length * len(need.offsets)
                if progress is not None:
                    progress(done, image.raw_size)
            downloaded = 0
            requests = 0
            for stream in (fetched, fetch(redo) if redo else iter(())):
                for need, data, served in stream:
                    if hashlib.sha256(data).digest() != need.sha256:
                        raise VerifyError(
                            f"chunk {need.sha256.hex()} from the store does not match its "
                            "SHA-256; nothing of it was written"
                        )
                    downloaded += served
                    requests += 1
                    for offset in need.offsets:
                        writer.put(offset, data)
                    done += need.length * len(need.offsets)
                    if progress is not None:
                        progress(done, image.raw_size)
            writer.finish()
            # From the medium: O_DIRECT where allowed, else after dropping the cache.
            digest = read_back(
                path,
                image.raw_size,
                block=dest.kind == "block",
                read_size=self.store.chunk_size,
                direct=self.store.direct_io,
            )
        finally:
            close = getattr(fetched, "close", None)
            if close is not None:
                close()
            for fd in (sfd, rfd, wfd):
                if fd >= 0:
                    os.close(fd)
        # read_back reads exactly raw_size bytes or raises: the length is the image's.
        verify_written(
            image, length=image.raw_size, sha256=digest, where=f"slot {target.value} ({path})"
        )
        return ChunkWrite(
            raw_sha256=digest,
            copied=copied,
            downloaded=downloaded,
            written=writer.written,
            requests=requests,
        )


def _read_seed(fd: int, need: Need) -> bytes | None:
    """The chunk from the booted slot, or None when it is not there (any more)."""
    if fd < 0 or need.seed_offset is None:
        return None
    buf = bytearray(need.length)
    try:
        got = read_exact(fd, memoryview(buf), need.seed_offset)
    except OSError:
        return None
    if got != need.length or hashlib.sha256(buf).digest() != need.sha256:
        return None
    return bytes(buf)
