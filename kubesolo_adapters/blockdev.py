"""Block devices and plain image files as slots: find, size, read the version, write verified.

A slot spec is ``PARTLABEL=X`` (a GPT partition name), ``LABEL=X`` (a
filesystem label), a path to a block device, or a path to a plain image file
(the file *is* the slot: its size is the slot's size and it is never
truncated or extended). Names are found with ``blkid`` and no udev; when
blkid is missing or fails, through /sys/class/block (the partition's uevent
PARTNAME, or the superblocks).

``PARTLABEL=`` is the default and the safe choice: a GPT partition name lives
in the partition table and stays with the slot, while a filesystem label
lives inside the image and travels with it, so after one image was written
to both slots two filesystems carry the same label. The resolver refuses a
name found on two devices rather than guess.

The writer is the one place that destroys data, so it is careful:

* it resolves the slot once and writes only that device or file;
* it refuses before the first byte when the image does not fit, and opens a
  block device with ``O_EXCL`` so a mounted (or otherwise claimed) slot is
  refused with EBUSY instead of being overwritten under a live filesystem;
* it streams, decompresses (bounded output per step: a zero-filled image
  compresses ~1000:1 with gzip and far more with zstd), writes with
  ``O_DIRECT`` and reads back on overlapping threads, and writes the first
  MiB of the image (superblocks, labels) last, only after everything else
  was fsynced, read back from the medium and matched ``raw_sha256``; then
  the head itself is fsynced and read back (kubesolo_adapters.slotwrite).

``read_version`` needs no root where it can: ``debugfs`` reads ext2/3/4 and
``mtype`` (mtools) reads vfat, on image files and on devices, even mounted
ones. Only other filesystems (or missing tools) fall back to a read-only
mount into a temporary directory, which needs root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from kubesolo_adapters.slotwrite import HEAD_BYTES, write_verified
from kubesolo_adapters.streams import raw_chunks
from kubesolo_core.errors import SlotError
from kubesolo_core.ports import Progress, SlotInfo, WriteResult
from kubesolo_core.release import ImageSpec
from kubesolo_core.slots import Slot

__all__ = [
    "HEAD_BYTES",
    "BlockSlotStore",
    "Resolver",
    "blkid_resolver",
    "default_resolver",
    "probe_filesystem",
    "raw_chunks",
    "sysfs_resolver",
]

#: ioctl number from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKGETSIZE64 = 0x80081272

#: a version file longer than this is not a version file
_VERSION_LIMIT = 4096
_TOOL_TIMEOUT = 30.0

#: label -> the devices carrying it
#: (name, kind) -> devices; kind is "LABEL" (filesystem) or "PARTLABEL" (GPT partition name)
Resolver = Callable[..., Sequence[str]]


# --------------------------------------------------------------------------- filesystems


@attrs.frozen(kw_only=True)
class FsProbe:
    """What the first bytes of a slot say: a filesystem kind and its label."""

    kind: str | None  # "ext" or "vfat"; None for anything else
    label: str | None


def probe_filesystem(head: bytes) -> FsProbe:
    """Recognise ext2/3/4 and FAT from the first 4 KiB of a slot (no tools needed)."""
    if len(head) >= 1024 + 0x88 and head[1024 + 0x38 : 1024 + 0x3A] == b"\x53\xef":
        label = head[1024 + 0x78 : 1024 + 0x88].split(b"\0", 1)[0]
        return FsProbe(kind="ext", label=label.decode("utf-8", "replace") or None)
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        fat_sectors16 = struct.unpack_from("<H", head, 0x16)[0]
        if fat_sectors16 and head[0x36:0x39] == b"FAT":
            raw = head[0x2B:0x36]
        elif not fat_sectors16 and head[0x52:0x57] == b"FAT32":
            raw = head[0x47:0x52]
        else:
            return FsProbe(kind=None, label=None)
        text = raw.decode("ascii", "replace").rstrip(" ")
        return FsProbe(kind="vfat", label=None if text in ("", "NO NAME") else text)
    return FsProbe(kind=None, label=None)


def _read_head(path: str, size: int = 4096) -> bytes | None:
    try:
        with Path(path).open("rb", buffering=0) as fh:
            return fh.read(size)
    except OSError:
        return None


# --------------------------------------------------------------------------- resolvers


def blkid_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """Devices whose filesystem label (or GPT partition name) is ``label``, asked of blkid.

    ``-c /dev/null`` makes blkid probe the devices now rather than trust a
    cache file written before the last image write changed a label.
    Raises OSError when blkid is missing or fails (other than "none found").
    """
    proc = subprocess.run(
        ["blkid", "-c", "/dev/null", "-t", f"{kind}={label}", "-o", "device"],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT,
        check=False,
    )
    if proc.returncode == 2:  # blkid: nothing matched
        return []
    if proc.returncode != 0:
        raise OSError(f"blkid exited {proc.returncode}: {proc.stderr.strip()}")
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def sysfs_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """Devices whose ext/FAT label (or GPT partition name) is ``label``, via /sys/class/block."""
    found = []
    try:
        names = sorted(entry.name for entry in Path("/sys/class/block").iterdir())
    except OSError:
        return []
    for name in names:
        # Optical and floppy drives can block for seconds on a read; slots are never there.
        if name.startswith(("sr", "fd")):
            continue
        dev = f"/dev/{name}"
        if kind == "PARTLABEL":
            if _partname(name) == label:
                found.append(dev)
            continue
        head = _read_head(dev)
        if head and probe_filesystem(head).label == label:
            found.append(dev)
    return found


def _partname(name: str) -> str | None:
    try:
        uevent = Path(f"/sys/class/block/{name}/uevent").read_text()
    except OSError:
        return None
    for line in uevent.splitlines():
        if line.startswith("PARTNAME="):
            return line[len("PARTNAME=") :]
    return None


def default_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """blkid when it is installed and works; the sysfs scan otherwise."""
    if shutil.which("blkid") or Path("/usr/sbin/blkid").exists() or Path("/sbin/blkid").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return blkid_resolver(label, kind)
    return sysfs_resolver(label, kind)


# --------------------------------------------------------------------------- slots


@attrs.frozen(kw_only=True)
class _Target:
    spec: str
    path: str | None = None
    kind: str | None = None  # "block" | "file"; None when missing or unusable
    problem: str = ""


def _version_text(data: bytes | None) -> str | None:
    if not data or len(data) > _VERSION_LIMIT:
        return None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    line = text.splitlines()[0].strip() if text else ""
    if not line or len(line) > 128 or not line.isprintable():
        return None
    return line


def _run_capped(argv: list[str], *, env: Mapping[str, str] | None = None) -> bytes | None:
    """stdout of a tool, or None when it fails, times out or says more than a version file."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or len(proc.stdout) > _VERSION_LIMIT:
        return None
    return proc.stdout


@attrs.define
class BlockSlotStore:
    """The SlotStore port over block devices (found by label or path) and image files."""

    specs: Mapping[Slot, str]
    #: the write and read-back buffers hold min(chunk_size, 512 KiB) each (slotwrite.py)
    chunk_size: int = attrs.field(default=4 << 20, kw_only=True)
    resolver: Resolver = attrs.field(default=default_resolver, kw_only=True)
    #: False: write and read back through the page cache (as when O_DIRECT is refused)
    direct_io: bool = attrs.field(default=True, kw_only=True)

    # ----------------------------------------------------------------- finding

    def _resolve(self, slot: Slot) -> _Target:
        spec = self.specs.get(slot)
        if not spec:
            return _Target(spec="", problem=f"no spec configured for slot {slot.value}")
        path = spec
        key, _, label = spec.partition("=")
        kind = key.upper() if _ else ""
        if kind in ("LABEL", "PARTLABEL"):
            what = "GPT partition named" if kind == "PARTLABEL" else "filesystem labelled"
            try:
                devices = list(self.resolver(label, kind))
            except (OSError, subprocess.SubprocessError) as exc:
                return _Target(spec=spec, problem=f"could not look up {spec!r}: {exc}")
            if not devices:
                return _Target(spec=spec, problem=f"no {what} {label!r} found")
            if len(devices) > 1:
                # Two filesystems with one label: writing either could destroy the wrong one.
                return _Target(
                    spec=spec,
                    problem=f"label {label!r} is carried by {len(devices)} devices "
                    f"({', '.join(devices)}); refusing to guess",
                )
            path = devices[0]
        try:
            st = Path(path).stat()
        except OSError as exc:
            return _Target(spec=spec, path=path, problem=f"{path}: {exc.strerror}")
        if stat.S_ISBLK(st.st_mode):
            return _Target(spec=spec, path=path, kind="block")
        if stat.S_ISREG(st.st_mode):
            return _Target(spec=spec, path=path, kind="file")
        return _Target(
            spec=spec, path=path, problem=f"{path} is neither a block device nor an image file"
        )

    @staticmethod
    def _size(target: _Target) -> int | None:
        assert target.path is not None  # noqa: S101  (callers check kind)
        if target.kind == "file":
            try:
                return Path(target.path).stat().st_size
            except OSError:
                return None
        try:
            fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
                return int(struct.unpack("<Q", buf)[0])
            except OSError:
                pass
            finally:
                os.close(fd)
        # No read permission on the device node: sysfs counts 512-byte sectors for everyone.
        name = Path(os.path.realpath(target.path)).name
        try:
            return int(Path(f"/sys/class/block/{name}/size").read_text()) * 512
        except (OSError, ValueError):
            return None

    def describe(self, slot: Slot) -> SlotInfo:
        """Resolve the slot's spec; a missing, ambiguous or unusable slot has exists=False."""
        target = self._resolve(slot)
        size = self._size(target) if target.kind else None
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
        target = self._resolve(slot)
        return self._size(target) if target.kind else None

    # ----------------------------------------------------------------- version

    def read_version(self, slot: Slot) -> str | None:
        """The first line of ``/version`` in the slot's filesystem, None if unreadable."""
        target = self._resolve(slot)
        if target.kind is None or target.path is None:
            return None
        head = _read_head(target.path)
        if head is None:
            return None
        kind = probe_filesystem(head).kind
        data: bytes | None = None
        if kind == "ext" and shutil.which("debugfs"):
            # debugfs opens read-only and works on image files and mounted devices.
            data = _run_capped(["debugfs", "-R", "cat /version", target.path])
        elif kind == "vfat" and shutil.which("mtype"):
            data = _run_capped(
                ["mtype", "-i", target.path, "::/version"],
                env={"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"},
            )
        version = _version_text(data)
        if version is None and data is None and os.geteuid() == 0:
            version = _version_text(self._mount_read(target, kind))
        return version

    @staticmethod
    def _mount_read(target: _Target, kind: str | None) -> bytes | None:
        """Mount read-only into a temporary directory, read /version, unmount (root only)."""
        assert target.path is not None  # noqa: S101
        options = ["ro"]
        if kind == "ext":
            options.append("noload")  # a read-only look must not replay the journal
        if target.kind == "file":
            options.append("loop")
        mnt = tempfile.mkdtemp(prefix="kubesolo-slot-")
        try:
            proc = subprocess.run(
                ["mount", "-o", ",".join(options), target.path, mnt],
                capture_output=True,
                timeout=_TOOL_TIMEOUT,
                check=False,
            )
            if proc.returncode != 0:
                return None
            try:
                with (Path(mnt) / "version").open("rb") as fh:
                    return fh.read(_VERSION_LIMIT + 1)
            except OSError:
                return None
            finally:
                subprocess.run(
                    ["umount", mnt], capture_output=True, timeout=_TOOL_TIMEOUT, check=False
                )
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            with contextlib.suppress(OSError):
                Path(mnt).rmdir()

    # ----------------------------------------------------------------- writing

    def write_image(
        self,
        slot: Slot,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Stream ``chunks`` onto ``slot``, decompressed, then read back and verify.

        Raises SlotError when the slot is missing, too small or in use (before
        any byte is written), VerifyError when the stream is corrupt, too long
        or too short, or the read-back hash differs; errors of the ``chunks``
        iterator (FetchError) pass through unchanged.
        """
        target = self._resolve(slot)
        if target.kind is None or target.path is None:
            raise SlotError(
                f"slot {slot.value} ({target.spec or 'no spec'}) not found: {target.problem}",
                way_out="check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
            )
        path = target.path
        capacity = self._size(target)
        if capacity is None:
            raise SlotError(f"slot {slot.value} ({path}): its size could not be read")
        if image.raw_size > capacity:
            raise SlotError(
                f"slot {slot.value} ({path}) holds {capacity} bytes, the image needs "
                f"{image.raw_size}; nothing was written",
                way_out="publish an image that fits the slot or repartition",
            )
        fd = self._open_for_write(slot, target)
        try:
            return write_verified(
                fd,
                path=path,
                what=f"slot {slot.value} ({path})",
                block=target.kind == "block",
                chunks=chunks,
                image=image,
                progress=progress,
                piece=self.chunk_size,
                direct=self.direct_io,
            )
        finally:
            os.close(fd)  # after the read-back: the O_EXCL claim keeps mounts away meanwhile

    @staticmethod
    def _open_for_write(slot: Slot, target: _Target) -> int:
        assert target.path is not None  # noqa: S101
        # No O_CREAT and no O_TRUNC: the slot exists and keeps its size.
        flags = os.O_WRONLY | os.O_CLOEXEC
        if target.kind == "block":
            flags |= os.O_EXCL  # on a block device: EBUSY when mounted or claimed
        try:
            return os.open(target.path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise SlotError(
                    f"slot {slot.value} ({target.path}) is mounted/in use (EBUSY on an "
                    "exclusive open); nothing was written",
                    way_out="unmount the passive slot; it must not be in use during an update",
                ) from None
            raise SlotError(
                f"slot {slot.value} ({target.path}) could not be opened for writing: "
                f"{exc.strerror}; nothing was written"
            ) from None
