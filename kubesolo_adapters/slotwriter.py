"""The careful writer: the one place that destroys data, so it is careful.

* it opens the slot only through
  :func:`kubesolo_adapters.slotguard.open_slot_for_write`, which proves on
  the open descriptor that it is not the other slot, a mounted filesystem or
  a disk holding them (identity, not spelling), with ``O_EXCL`` on a block
  device so a mounted (or otherwise claimed) slot is refused with EBUSY;
* it refuses before the first byte when the image does not fit;
* it hands the descriptor to the pipeline
  (:func:`kubesolo_adapters.slotpipe.write_verified`), which streams,
  decompresses (bounded output per step: a zero-filled image compresses
  ~1000:1 with gzip and far more with zstd), writes with ``O_DIRECT`` and
  reads back on overlapping threads, and writes the first MiB of the image
  (superblocks, labels) last, only after everything else was fsynced, read
  back from the medium and judged; then the head itself is fsynced and read
  back, so a write cut short or an image that does not verify leaves the
  slot's old head (and label) in place;
* the core judges what the slot reads back
  (:func:`kubesolo_core.release.verify_written`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from kubesolo_adapters import slotguard
from kubesolo_adapters.slotfind import Target, size_of
from kubesolo_adapters.slotpipe import HEAD_BYTES, write_verified
from kubesolo_core.errors import SlotError
from kubesolo_core.ports import Progress, WriteResult
from kubesolo_core.release import ImageSpec, verify_written

__all__ = ["HEAD_BYTES", "write_slot"]


def write_slot(
    target: Target,
    *,
    name: str,
    survivors: slotguard.Survivors,
    chunks: Iterator[bytes],
    image: ImageSpec,
    progress: Progress | None = None,
    chunk_size: int = 4 << 20,
    direct: bool = True,
) -> WriteResult:
    """Stream ``chunks`` onto ``target``, decompressed, then read back and verify.

    ``name`` names the slot in messages ("slot B"); ``survivors`` are the
    (name, path) of what must not be touched. Raises SlotConflict or SlotError
    before any byte is written when the slot is missing, too small, in use or
    one of the survivors; VerifyError when the stream is corrupt, too long or
    too short, or the read-back differs; errors of ``chunks`` (FetchError)
    pass through unchanged. ``direct=False`` keeps the writes and the
    read-back in the page cache (as where O_DIRECT is refused).
    """
    if target.kind is None or target.path is None:
        raise SlotError(
            f"{name} ({target.spec or 'no spec'}) not found: {target.problem}",
            way_out="check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
        )
    path = target.path
    capacity = size_of(target)
    if capacity is None:
        raise SlotError(f"{name} ({path}): its size could not be read")
    if image.raw_size > capacity:
        raise SlotError(
            f"{name} ({path}) holds {capacity} bytes, the image needs "
            f"{image.raw_size}; nothing was written",
            way_out="publish an image that fits the slot or repartition",
        )
    fd = slotguard.open_slot_for_write(
        path, target_name=name, survivors=survivors, exclusive=target.kind == "block"
    )
    where = f"{name} ({path})"
    try:
        result = write_verified(
            fd,
            path=path,
            what=where,
            block=target.kind == "block",
            chunks=chunks,
            image=image,
            progress=progress,
            piece=chunk_size,
            direct=direct,
        )
    finally:
        os.close(fd)  # after the read-back: the O_EXCL claim keeps mounts away meanwhile
    # The pipeline read back all raw_size bytes (the head compared byte for byte after it).
    verify_written(image, length=result.written, sha256=result.raw_sha256, where=where)
    return result
