"""Identity, not spelling: the proof that a slot write cannot touch the running system.

Two slot specs are the same slot when they resolve to the same thing,
whatever their text says: ``./b.img``, a symlink to ``a.img`` and a hard link
to it are all ``a.img``; ``/dev/disk/by-partlabel/KSOLOA`` and ``/dev/sda2``
are one device. So the guard compares what the kernel says:

* a regular file is (st_dev, st_ino); a loop device attached to it is the
  same bytes under another name (``/sys/block/loopN/loop/backing_file``);
* a block device is its st_rdev, and its bytes are an extent of a whole disk
  (``/sys/dev/block/MAJ:MIN``: ``partition``, ``start``, ``size``), so two
  partitions of one disk are told apart, and a whole disk overlaps every
  partition on it;
* a device is in use when a filesystem on it (or on any extent overlapping
  it) is mounted (``/proc/self/mountinfo``, the table findmnt reads) or when
  the kernel lists holders of it (device-mapper, md, e.g. a dm-verity root).

:func:`write_refusal` answers "may the passive slot be written?" with None or
one sentence naming both paths and what they resolve to. The slot store asks
it twice: before any state change (``SlotStore.check_writable``) and again on
the open file descriptor, right before the first byte (``open_slot_for_write``),
the one place every slot write goes through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import attrs

from kubesolo_core.errors import SlotConflict, SlotError

__all__ = [
    "Extent",
    "Identity",
    "Mount",
    "identify",
    "identify_fd",
    "open_slot_for_write",
    "read_mounts",
    "write_refusal",
]

_UNBOUNDED = 1 << 62


@attrs.frozen(kw_only=True)
class Extent:
    """A run of a whole disk's sectors: ``[start, end)`` on the disk ``disk`` (a dev_t)."""

    disk: int
    start: int
    end: int
    #: the kernel's name of the device this extent belongs to (sda2, loop3p1)
    name: str

    def overlaps(self, other: Extent) -> bool:
        return self.disk == other.disk and self.start < other.end and other.start < self.end


@attrs.frozen(kw_only=True)
class Identity:
    """What a slot spec resolves to."""

    path: str
    real: str
    kind: Literal["block", "file"]
    #: st_rdev of a block device; st_dev of the filesystem holding a file
    dev: int
    #: the file's inode (0 for a block device)
    ino: int

    def same_as(self, other: Identity) -> bool:
        return (self.kind, self.dev, self.ino) == (other.kind, other.dev, other.ino)

    def describe(self) -> str:
        numbers = f"{os.major(self.dev)}:{os.minor(self.dev)}"
        if self.kind == "block":
            return f"{self.real} (block device {numbers})"
        return f"{self.real} (file, inode {self.ino} on device {numbers})"


@attrs.frozen(kw_only=True)
class Mount:
    """One line of /proc/self/mountinfo: the device number and where it is mounted."""

    dev: int
    mountpoint: str


def _identity(path: str, st: os.stat_result) -> Identity | None:
    real = os.path.realpath(path)
    if stat.S_ISBLK(st.st_mode):
        return Identity(path=path, real=real, kind="block", dev=st.st_rdev, ino=0)
    if stat.S_ISREG(st.st_mode):
        return Identity(path=path, real=real, kind="file", dev=st.st_dev, ino=st.st_ino)
    return None


def identify(path: str) -> Identity | None:
    """The identity of ``path`` (symlinks followed); None when it is neither file nor device."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _identity(path, st)


def identify_fd(fd: int, path: str) -> Identity | None:
    """The identity of what ``fd`` really has open (no second lookup of ``path``)."""
    return _identity(path, os.fstat(fd))


def _unescape(field: str) -> str:
    # mountinfo escapes blanks, tabs, newlines and backslashes as \ooo.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The (device, mount point) pairs of a mountinfo text; odd lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        major, sep, minor = fields[2].partition(":")
        if not sep or not major.isdigit() or not minor.isdigit():
            continue
        mounts.append(
            Mount(dev=os.makedev(int(major), int(minor)), mountpoint=_unescape(fields[4]))
        )
    return mounts


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """The mount table of this process's namespace (empty when it cannot be read)."""
    try:
        return parse_mountinfo(Path(path).read_text(errors="replace"))
    except OSError:
        return []


@attrs.define
class _Sysfs:
    """What /sys says about block devices (the root is a parameter for the tests)."""

    root: Path = Path("/sys")

    def _dir(self, dev: int) -> Path | None:
        entry = self.root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
        try:
            return entry.resolve(strict=True)
        except (OSError, RuntimeError):
            return None

    @staticmethod
    def _int(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _devnum(path: Path) -> int | None:
        try:
            major, _, minor = path.read_text().strip().partition(":")
            return os.makedev(int(major), int(minor))
        except (OSError, ValueError):
            return None

    def extent(self, dev: int) -> Extent:
        """The disk sectors of block device ``dev`` (a whole, unbounded disk if unknown)."""
        where = self._dir(dev)
        if where is None:
            name = f"{os.major(dev)}:{os.minor(dev)}"
            return Extent(disk=dev, start=0, end=_UNBOUNDED, name=name)
        size = self._int(where / "size")
        if (where / "partition").exists():
            disk = self._devnum(where.parent / "dev")
            start = self._int(where / "start")
            if disk is not None and start is not None and size is not None:
                return Extent(disk=disk, start=start, end=start + size, name=where.name)
        return Extent(disk=dev, start=0, end=_UNBOUNDED if size is None else size, name=where.name)

    def holders(self, dev: int) -> list[str]:
        """Devices stacked on ``dev`` (device-mapper, md), including on its partitions."""
        where = self._dir(dev)
        if where is None:
            return []
        found = []
        for place in (where, *(p for p in _children(where) if (p / "partition").exists())):
            with contextlib.suppress(OSError):
                found.extend(sorted(entry.name for entry in (place / "holders").iterdir()))
        return found

    def loops_over(self, ident: Identity) -> list[int]:
        """Loop devices whose backing file is the file ``ident``."""
        found = []
        for loop in sorted((self.root / "block").glob("loop*")):
            backing = _read(loop / "loop" / "backing_file")
            if not backing:
                continue
            other = identify(backing.strip())
            dev = self._devnum(loop / "dev")
            if other is not None and other.same_as(ident) and dev is not None:
                found.append(dev)
        return found


def _children(where: Path) -> Iterable[Path]:
    with contextlib.suppress(OSError):
        yield from sorted(where.iterdir())


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _extents(ident: Identity, sysfs: _Sysfs) -> list[Extent]:
    """Every disk extent holding the bytes of ``ident`` (a file: the loop devices over it)."""
    if ident.kind == "block":
        return [sysfs.extent(ident.dev)]
    return [sysfs.extent(dev) for dev in sysfs.loops_over(ident)]


def write_refusal(
    target: Identity,
    target_name: str,
    others: Sequence[tuple[str, Identity]],
    *,
    mounts: Sequence[Mount] | None = None,
    sysfs_root: str = "/sys",
) -> str | None:
    """Why writing ``target`` could touch another slot or a live filesystem, or None.

    ``others`` are the slots that must survive (name, identity): the booted
    and the committed slot. ``mounts`` defaults to this process's mount table.
    """
    sysfs = _Sysfs(Path(sysfs_root))
    mine = _extents(target, sysfs)
    for name, other in others:
        what = f"{target_name} {target.path!r} resolves to {target.describe()}"
        if target.same_as(other):
            return f"{what}, the same as {name} {other.path!r}: they are one slot"
        theirs = _extents(other, sysfs)
        for a in mine:
            for b in theirs:
                if a.overlaps(b):
                    return (
                        f"{what}, whose bytes ({a.name}) overlap {name} {other.path!r} "
                        f"= {other.describe()} ({b.name})"
                    )
    for mount in read_mounts() if mounts is None else mounts:
        if target.kind == "block" and mount.dev == target.dev:
            where = "the running root filesystem" if mount.mountpoint == "/" else "mounted"
            return (
                f"{target_name} {target.path!r} resolves to {target.describe()}, "
                f"which is {where} (at {mount.mountpoint})"
            )
        if sysfs._dir(mount.dev) is None:
            continue  # proc, tmpfs, overlay...: no block device behind the mount
        extent = sysfs.extent(mount.dev)
        for a in mine:
            if a.overlaps(extent):
                root = " (the running root filesystem)" if mount.mountpoint == "/" else ""
                return (
                    f"{target_name} {target.path!r} resolves to {target.describe()}, whose "
                    f"bytes ({a.name}) hold the filesystem mounted at {mount.mountpoint}{root}"
                )
    if target.kind == "block":
        held = sysfs.holders(target.dev)
        if held:
            return (
                f"{target_name} {target.path!r} resolves to {target.describe()}, which is "
                f"in use by {', '.join(held)}"
            )
    return None


#: what the caller must prove before a slot is opened for writing
Survivors = Sequence[tuple[str, str]]


def open_slot_for_write(
    path: str,
    *,
    target_name: str,
    survivors: Survivors,
    exclusive: bool,
    mounts: Sequence[Mount] | None = None,
) -> int:
    """Open ``path`` for writing, after proving it is none of ``survivors`` (name, path).

    The one door to a slot's bytes: every writer opens through here. The
    identity is taken from the open descriptor, so a path swapped between the
    check and the open cannot slip through. No O_CREAT, no O_TRUNC: a slot
    exists and keeps its size. O_NONBLOCK keeps a FIFO from hanging the open.
    Raises SlotConflict (nothing written) or SlotError.
    """
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if exclusive:
        flags |= os.O_EXCL  # on a block device: EBUSY when mounted or claimed
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise SlotError(
                f"{target_name} ({path}) is mounted/in use (EBUSY on an exclusive open); "
                "nothing was written",
                way_out="unmount the passive slot; it must not be in use during an update",
            ) from None
        raise SlotError(
            f"{target_name} ({path}) could not be opened for writing: {exc.strerror}; "
            "nothing was written"
        ) from None
    try:
        ident = identify_fd(fd, path)
        if ident is None:
            raise SlotError(
                f"{target_name} ({path}) is neither a block device nor a regular file; "
                "nothing was written"
            )
        others = [(name, o) for name, p in survivors if (o := identify(p)) is not None]
        reason = write_refusal(ident, target_name, others, mounts=mounts)
        if reason is not None:
            raise SlotConflict(f"refusing to write: {reason}; nothing was written")
        # Writes should block normally from here on (O_NONBLOCK only guarded the open).
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
