"""The guest's kernel and initramfs, from Debian's kernel package.

The kernel is the one tests/hardware already boots (:func:`debian_kernel`).
Debian builds the drivers a virtio disk needs as modules (virtio_pci,
virtio_blk, ext4, vfat and its code pages), so each slot carries a small
initramfs: busybox-static, those modules in load order (from each module's
``.modinfo``: the package ships no modules.dep) and an /init that mounts the
slot named by ``root=PARTLABEL=...`` read-only and hands over to its
/sbin/init. The modules stay loaded after the switch, so the slot's own
userland needs no /lib/modules.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.hardware.guest import cache_dir, debian_kernel
from tests.hardware.wholebox import elf
from tests.hardware.wholebox.runtime import BUSYBOX

__all__ = ["GUESTFS", "MODULES", "build_initramfs", "kernel_package", "module_closure"]

GUESTFS = Path(__file__).with_name("guestfs")
#: what the guest loads; their dependencies come along (module_closure)
MODULES = (
    "virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "vfat",
    "nls_cp437", "nls_ascii", "nls_iso8859_1",
)  # fmt: skip


def kernel_package() -> tuple[Path, Path]:
    """(vmlinuz, the .deb it came from), downloaded once into the cache."""
    vmlinuz = debian_kernel()
    release = vmlinuz.name.removeprefix("vmlinuz-")
    debs = sorted(cache_dir().glob(f"linux-image-{release}_*.deb"))
    if not debs:
        raise RuntimeError(f"no linux-image-{release} package next to {vmlinuz}")
    return vmlinuz, debs[-1]


def _extract_modules(deb: Path, into: Path) -> dict[str, Path]:
    """The modules of the folders a virtio disk's drivers live in; module name -> file."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    folders = ("fs", "crypto", "lib", "arch", "drivers/virtio", "drivers/block")
    subprocess.run(
        ["tar", "-x", "-C", str(into), "--wildcards"]
        + [f"./lib/modules/*/kernel/{folder}/*" for folder in folders],
        input=tar.stdout,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.stem.replace("-", "_"): p for p in into.rglob("*.ko")}


def module_closure(available: dict[str, Path], wanted: tuple[str, ...]) -> list[str]:
    """``wanted`` and what they depend on, each after its dependencies (insmod order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise RuntimeError(f"module dependency cycle at {name}")
        if name not in available:
            raise RuntimeError(f"module {name} is not in the kernel package")
        visiting.add(name)
        for field in elf.modinfo(available[name]).get("depends", []):
            for dep in filter(None, field.split(",")):
                visit(dep.replace("-", "_"))
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def build_initramfs(deb: Path, path: Path) -> list[str]:
    """A gzip'd newc cpio: busybox, the modules, /init. Returns the modules in load order."""
    with tempfile.TemporaryDirectory(prefix="ksolo-initramfs-", dir=cache_dir()) as tmp:
        work = Path(tmp)
        available = _extract_modules(deb, work / "deb")
        order = module_closure(available, MODULES)
        root = work / "root"
        (root / "bin").mkdir(parents=True)
        (root / "modules").mkdir()
        shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        for name in order:
            shutil.copyfile(available[name], root / "modules" / f"{name}.ko")
        (root / "modules" / "order").write_text("\n".join(order) + "\n")
        shutil.copyfile(GUESTFS / "initramfs-init", root / "init")
        (root / "init").chmod(0o755)
        names = sorted(
            str(Path(dirpath, name).relative_to(root))
            for dirpath, dirs, files in os.walk(root)
            for name in (*dirs, *files)
        )
        cpio = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
            input=("\n".join(names) + "\n").encode(),
            cwd=root,
            capture_output=True,
            check=True,
            timeout=120,
        )
    path.write_bytes(gzip.compress(cpio.stdout, compresslevel=6))
    return order
