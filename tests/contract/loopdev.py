"""Fixture helpers for real slots: filesystem images made by mkfs, loop devices, mounts.

Every helper that attaches or mounts something is a context manager that
undoes it in ``finally`` (detach by the device it attached, unmount by the
directory it mounted), so a failing test leaves no loop device behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=_ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def unique_label(prefix: str = "KT", length: int = 11) -> str:
    """A label no other test (or helper) on this machine is using: fits ext4 (16) and FAT (11)."""
    return (prefix + secrets.token_hex(8).upper())[:length]


def make_fs_image(
    path: Path, *, fs: str, size: int, label: str, files: Mapping[str, bytes] | None = None
) -> Path:
    """A ``size``-byte image file at ``path`` holding a real ext4 or vfat filesystem.

    ``files`` are put at the root: ext4 with ``mkfs.ext4 -d`` (no mount),
    vfat with ``mcopy``.
    """
    path.unlink(missing_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    files = files or {}
    if fs == "ext4":
        with tempfile.TemporaryDirectory(prefix="kt-ext4-") as src:
            for name, data in files.items():
                (Path(src) / name).write_bytes(data)
            _run("mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", src, str(path))
    elif fs == "vfat":
        _run("mkfs.vfat", "-n", label, str(path))
        with tempfile.TemporaryDirectory(prefix="kt-vfat-") as src:
            for name, data in files.items():
                local = Path(src) / name
                local.write_bytes(data)
                _run("mcopy", "-i", str(path), str(local), f"::/{name}")
    else:
        raise ValueError(f"unknown filesystem {fs!r}")
    return path


def fill_file(path: Path, size: int, byte: bytes = b"\0") -> Path:
    """A plain ``size``-byte file (a slot with nothing on it)."""
    path.write_bytes(byte * size)
    return path


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """Attach ``image`` to a free loop device; always detach that device afterwards."""
    dev = ""
    for _ in range(5):  # another process may grab the free device between find and attach
        try:
            dev = _run("losetup", "-f", "--show", str(image)).strip()
            break
        except RuntimeError:
            time.sleep(0.1)
    if not dev:
        raise RuntimeError(f"no loop device could be attached to {image}")
    try:
        yield dev
    finally:
        for _ in range(20):  # EBUSY while a just-closed opener lets go: bounded retry
            if (
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False).returncode
                == 0
            ):
                break
            time.sleep(0.1)


@contextlib.contextmanager
def mounted(dev: str, where: Path, options: str = "ro") -> Iterator[Path]:
    """Mount ``dev`` on ``where`` with ``options``; always unmount afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    _run("mount", "-o", options, dev, str(where))
    try:
        yield where
    finally:
        for _ in range(20):
            if (
                subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode
                == 0
            ):
                break
            time.sleep(0.1)


@contextlib.contextmanager
def tmpfs(mountpoint: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``mountpoint`` for the block (``ro``, ``size=64k``...); unmounted after."""
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill_up(directory: Path, name: str = "filler", limit: int = 1000) -> Path:
    """Write 4 KiB blocks to ``directory/name`` until ENOSPC (at most ``limit`` blocks)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(limit):
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
    finally:
        os.close(fd)
    return path


def read_bytes(path: str, size: int, offset: int = 0) -> bytes:
    """``size`` bytes of a device or file from ``offset``, bypassing nothing but Python."""
    with Path(path).open("rb", buffering=0) as fh:
        fh.seek(offset)
        return fh.read(size)


class ImageFactory:
    """Builds (and caches) slot images: a real filesystem with a ``version`` file at its root."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._cache: dict[tuple[str, str, str, int], bytes] = {}

    def image(self, *, label: str, version: str, fs: str = "ext4", size: int = 4 << 20) -> bytes:
        """The bytes of a ``size``-byte ``fs`` image labelled ``label`` holding ``version``."""
        key = (fs, label, version, size)
        if key not in self._cache:
            path = self.workdir / f"{fs}-{label}-{version}-{size}.img"
            make_fs_image(
                path, fs=fs, size=size, label=label, files={"version": f"{version}\n".encode()}
            )
            self._cache[key] = path.read_bytes()
            path.unlink()
        return self._cache[key]
