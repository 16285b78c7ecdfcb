"""What a slot's filesystem says: its kind and label (from the first bytes), its ``version`` file.

``read_version`` needs no root where it can: an ext2/3/4 slot's ``version``
is read directly (:mod:`kubesolo_adapters.extread`) or else by ``debugfs``,
and ``mtype`` (mtools) reads vfat, on image files and on devices, even
mounted ones. Only other filesystems (or missing tools) fall back to a read-only
mount into a temporary directory, which needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

import attrs

from kubesolo_adapters.extread import read_root_file
from kubesolo_adapters.inputs import open_input

__all__ = ["FsProbe", "probe_filesystem", "read_head", "read_version"]

#: a version file longer than this is not a version file
_VERSION_LIMIT = 4096
_TOOL_TIMEOUT = 30.0


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


def read_head(path: str, size: int = 4096) -> bytes | None:
    try:
        with Path(path).open("rb", buffering=0) as fh:
            return fh.read(size)
    except OSError:
        return None


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


def read_version(path: str, *, is_file: bool) -> str | None:
    """The first line of ``/version`` in the filesystem at ``path``, None if unreadable."""
    head = read_head(path)
    if head is None:
        return None
    kind = probe_filesystem(head).kind
    data: bytes | None = None
    if kind == "ext":
        # Read directly where the filesystem is plain (no process per slot at
        # every ``status``), else debugfs, which opens read-only and works on
        # image files and mounted devices.
        data = read_root_file(path, "version", _VERSION_LIMIT + 1)
    if kind == "ext" and data is None and shutil.which("debugfs"):
        data = _run_capped(["debugfs", "-R", "cat /version", path])
    elif kind == "vfat" and shutil.which("mtype"):
        data = _run_capped(
            ["mtype", "-i", path, "::/version"],
            env={"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"},
        )
    version = _version_text(data)
    if version is None and data is None and os.geteuid() == 0:
        version = _version_text(_mount_read(path, kind, is_file=is_file))
    return version


def _mount_read(path: str, kind: str | None, *, is_file: bool) -> bytes | None:
    """Mount read-only into a temporary directory, read /version, unmount (root only)."""
    import tempfile  # the last resort only: status never gets here for ext2/3/4 or vfat

    options = ["ro"]
    if kind == "ext":
        options.append("noload")  # a read-only look must not replay the journal
    if is_file:
        options.append("loop")
    mnt = tempfile.mkdtemp(prefix="kubesolo-slot-")
    try:
        proc = subprocess.run(
            ["mount", "-o", ",".join(options), path, mnt],
            capture_output=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            return None
        try:
            # an image's /version may be a FIFO or a device: never block on it
            with open_input(Path(mnt) / "version") as fh:
                return fh.read(_VERSION_LIMIT + 1)
        except OSError:
            return None
        finally:
            subprocess.run(["umount", mnt], capture_output=True, timeout=_TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        with contextlib.suppress(OSError):
            Path(mnt).rmdir()
