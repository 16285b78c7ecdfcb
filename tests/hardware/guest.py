"""A real Linux guest for the hardware tier: Debian's kernel and a busybox initramfs.

The kernel package is downloaded with ``apt-get download`` (the version that
``linux-image-amd64`` depends on right now) into a cache directory, so a
second run does not download it again: ``$KUBESOLO_CACHE_DIR`` or
``~/.cache/kubesolo-update``. The initramfs is busybox-static and an /init
that prints the kernel command line on the serial console and powers off.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.tools import in_ci

BUSYBOX = Path("/bin/busybox")
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev /sys
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec >/dev/console 2>&1
echo "KSOLO-GUEST cmdline: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
"""


def cache_dir() -> Path:
    root = os.environ.get("KUBESOLO_CACHE_DIR") or str(Path.home() / ".cache" / "kubesolo-update")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fail(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI must not skip: fix .ci/run)", pytrace=False)
    pytest.skip(message)


def current_kernel_package() -> str | None:
    """``linux-image-6.1.0-N-amd64``: what the ``linux-image-amd64`` metapackage depends on."""
    done = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", done.stdout)
    return match[1] if match else None


def debian_kernel() -> Path:
    """The vmlinuz of Debian's current kernel package, downloaded once and cached."""
    cache = cache_dir()
    package = current_kernel_package()
    if package is None:
        cached = sorted(cache.glob("vmlinuz-*"))
        if cached:
            return cached[-1]
        _fail(
            "apt-cache knows no linux-image-amd64: run `apt-get update` (Debian's "
            "repositories must be reachable to fetch the guest kernel)"
        )
        raise AssertionError("unreachable")
    vmlinuz = cache / f"vmlinuz-{package.removeprefix('linux-image-')}"
    if vmlinuz.is_file():
        return vmlinuz
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        done = subprocess.run(
            ["apt-get", "download", "-o", "APT::Sandbox::User=root", package],
            cwd=cache,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            _fail(f"apt-get download {package} failed: {done.stderr.strip()[-400:]}")
    with tempfile.TemporaryDirectory(prefix="ksolo-deb-") as tmp:
        tar = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True, check=True
        )
        subprocess.run(
            ["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"],
            input=tar.stdout,
            check=True,
            capture_output=True,
        )
        found = sorted(Path(tmp, "boot").glob("vmlinuz-*"))
        if not found:
            _fail(f"{debs[-1]} holds no /boot/vmlinuz-*")
        partial = vmlinuz.with_suffix(".part")
        shutil.copyfile(found[0], partial)
        partial.replace(vmlinuz)
    return vmlinuz


def busybox_initramfs(path: Path) -> Path:
    """A gzip'd newc cpio: /init (prints /proc/cmdline, powers off) and /bin/busybox."""
    if not BUSYBOX.is_file():
        _fail("busybox-static is not installed (/bin/busybox)")
    with tempfile.TemporaryDirectory(prefix="ksolo-initrd-") as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        names = "\n".join(["bin", "bin/busybox", "init"]) + "\n"
        cpio = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
            input=names.encode(),
            cwd=root,
            capture_output=True,
            check=True,
        )
    path.write_bytes(gzip.compress(cpio.stdout, compresslevel=6))
    return path
