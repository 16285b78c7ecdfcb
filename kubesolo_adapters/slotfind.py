"""Finding a slot from its spec: ``PARTLABEL=``, ``LABEL=``, a block device or an image file.

Names are found with ``blkid`` and no udev; when blkid is missing or fails,
through /sys/class/block (the partition's uevent PARTNAME, or the
superblocks). ``PARTLABEL=`` is the default and the safe choice: a GPT
partition name lives in the partition table and stays with the slot, while a
filesystem label lives inside the image and travels with it, so after one
image was written to both slots two filesystems carry the same label. The
resolver refuses a name found on two devices rather than guess.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from kubesolo_adapters.fsversion import probe_filesystem, read_head

__all__ = [
    "BLKGETSIZE64",
    "Resolver",
    "Target",
    "blkid_resolver",
    "default_resolver",
    "resolve",
    "size_of",
    "sysfs_resolver",
]

#: ioctl number from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKGETSIZE64 = 0x80081272
_TOOL_TIMEOUT = 30.0

#: (name, kind) -> devices; kind is "LABEL" (filesystem) or "PARTLABEL" (GPT partition name)
Resolver = Callable[..., Sequence[str]]


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
        head = read_head(dev)
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


# --------------------------------------------------------------------------- one slot


@attrs.frozen(kw_only=True)
class Target:
    """A slot spec resolved: the path it names and its kind, or the problem."""

    spec: str
    path: str | None = None
    kind: str | None = None  # "block" | "file"; None when missing or unusable
    problem: str = ""


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
    ):
        if test(mode):
            return name
    return "a special file"


def resolve(spec: str | None, slot_name: str, resolver: Resolver) -> Target:
    """What ``spec`` names: a block device or an image file, or why neither."""
    if not spec:
        return Target(spec="", problem=f"no spec configured for {slot_name}")
    path = spec
    key, _, label = spec.partition("=")
    kind = key.upper() if _ else ""
    if kind in ("LABEL", "PARTLABEL"):
        what = "GPT partition named" if kind == "PARTLABEL" else "filesystem labelled"
        try:
            devices = list(resolver(label, kind))
        except (OSError, subprocess.SubprocessError) as exc:
            return Target(spec=spec, problem=f"could not look up {spec!r}: {exc}")
        if not devices:
            return Target(spec=spec, problem=f"no {what} {label!r} found")
        if len(devices) > 1:
            # Two filesystems with one label: writing either could destroy the wrong one.
            return Target(
                spec=spec,
                problem=f"label {label!r} is carried by {len(devices)} devices "
                f"({', '.join(devices)}); refusing to guess",
            )
        path = devices[0]
    try:
        st = Path(path).stat()
    except OSError as exc:
        return Target(spec=spec, path=path, problem=f"{path}: {exc.strerror}")
    if stat.S_ISBLK(st.st_mode):
        return Target(spec=spec, path=path, kind="block")
    if stat.S_ISREG(st.st_mode):
        return Target(spec=spec, path=path, kind="file")
    return Target(
        spec=spec,
        path=path,
        problem=f"{path} is {_file_kind(st.st_mode)}, neither a block device nor an image file",
    )


def size_of(target: Target) -> int | None:
    """The device's size (BLKGETSIZE64, or sysfs) or the image file's size; None if unknown."""
    if target.path is None or target.kind is None:
        return None
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
