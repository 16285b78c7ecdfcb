"""The SlotStore port over block devices (found by name or path) and plain image files.

A slot spec is ``PARTLABEL=X`` (a GPT partition name, the default),
``LABEL=X`` (a filesystem label), a path to a block device, or a path to a
plain image file (the file *is* the slot: its size is the slot's size and it
is never truncated or extended). The store puts three careful pieces
together, one module each:

* :mod:`kubesolo_adapters.slotfind`: from a spec to a device or file (blkid,
  sysfs), refusing an ambiguous name;
* :mod:`kubesolo_adapters.fsversion`: the ``version`` file of the slot's
  filesystem, without root where it can;
* :mod:`kubesolo_adapters.slotwriter`: the verified write, which opens the
  slot only after :mod:`kubesolo_adapters.slotguard` proved, by identity, that
  it is not the other slot or anything mounted.

The writer and the guard are imported by the methods that write: ``status``
only resolves, sizes and reads versions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import attrs

from kubesolo_adapters.fsversion import read_version
from kubesolo_adapters.slotfind import Resolver, Target, default_resolver, resolve, size_of
from kubesolo_core.errors import SlotConflict
from kubesolo_core.ports import SlotInfo
from kubesolo_core.slots import Slot

if TYPE_CHECKING:
    from kubesolo_core.ports import Progress, WriteResult
    from kubesolo_core.release import ImageSpec

__all__ = ["BlockSlotStore"]


@attrs.define
class BlockSlotStore:
    """The SlotStore port over block devices (found by label or path) and image files."""

    specs: Mapping[Slot, str]
    #: the write and read-back buffers hold min(chunk_size, 512 KiB) each (slotpipe.py)
    chunk_size: int = attrs.field(default=4 << 20, kw_only=True)
    resolver: Resolver = attrs.field(default=default_resolver, kw_only=True)
    #: False: write and read back through the page cache (as when O_DIRECT is refused)
    direct_io: bool = attrs.field(default=True, kw_only=True)

    def _resolve(self, slot: Slot) -> Target:
        return resolve(self.specs.get(slot), f"slot {slot.value}", self.resolver)

    def describe(self, slot: Slot) -> SlotInfo:
        """Resolve the slot's spec; a missing, ambiguous or unusable slot has exists=False."""
        target = self._resolve(slot)
        size = size_of(target)
        return SlotInfo(
            slot=slot,
            spec=target.spec,
            device=target.path if target.kind else None,
            size=size,
            exists=target.kind is not None and size is not None,
            problem=target.problem or None,
        )

    def capacity(self, slot: Slot) -> int | None:
        """The device's size (BLKGETSIZE64) or the image file's size; None when missing."""
        return size_of(self._resolve(slot))

    def read_version(self, slot: Slot) -> str | None:
        """The first line of ``/version`` in the slot's filesystem, None if unreadable."""
        target = self._resolve(slot)
        if target.kind is None or target.path is None:
            return None
        return read_version(target.path, is_file=target.kind == "file")

    def _survivors(self, slot: Slot) -> list[tuple[str, str]]:
        # The slot that must survive a write of ``slot``: the other one (booted or committed).
        other = self._resolve(slot.other())
        if other.kind is None or other.path is None:
            return []
        return [(f"slot {slot.other().value}", other.path)]

    def check_writable(self, slot: Slot) -> None:
        """Raise SlotConflict when writing ``slot`` could touch the other slot or a mount.

        By identity (device and inode, disk extents), never by the spelling of
        the specs; a missing slot is preflight's business and passes here.
        """
        from kubesolo_adapters import slotguard

        target = self._resolve(slot)
        ident = slotguard.identify(target.path) if target.kind and target.path else None
        if ident is None:
            return
        survivors = [
            (name, other)
            for name, path in self._survivors(slot)
            if (other := slotguard.identify(path)) is not None
        ]
        reason = slotguard.write_refusal(ident, f"slot {slot.value}", survivors)
        if reason is not None:
            raise SlotConflict(f"refusing to write: {reason}; nothing was written")

    def write_image(
        self,
        slot: Slot,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Stream ``chunks`` onto ``slot``, decompressed, then read back and verify."""
        from kubesolo_adapters.slotwriter import write_slot

        return write_slot(
            self._resolve(slot),
            name=f"slot {slot.value}",
            survivors=self._survivors(slot),
            chunks=chunks,
            image=image,
            progress=progress,
            chunk_size=self.chunk_size,
            direct=self.direct_io,
        )
