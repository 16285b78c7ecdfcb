"""Slot images of the test box: a bootable KubeSolo-like root filesystem per release.

A slot's ext4 filesystem holds everything one release of the box is:

    /vmlinuz /initrd.img     Debian's kernel, and the initramfs of kernel.py
    /sbin/init               the box's init (guestfs/init), or one that exits
    /usr/bin/python3.11 ...  Debian's Python, blkid, debugfs, busybox (runtime.py)
    /usr/lib/python3/dist-packages   the agent and its dependencies (agentpkg.py)
    /usr/sbin/kubesolo-update-boot   deploy/kubesolo-update-boot, as shipped
    /etc/kubesolo/update.conf        where this box keeps its grubenv, server...
    /etc/kubesolo/root.json          the TUF root its releases are signed under (signing.py)
    /usr/lib/kubesolo-standin, /usr/bin/kubectl   the health stand-ins
    /etc/kubesolo-standin/health     how healthy this release is (ok, or a failure)
    /version                         the release's version

The common part (the "base tree") is built once per set of inputs and
cached under ``~/.cache/kubesolo-update/wholebox``: the Debian package
versions, the kernel, busybox, the agent's source and dependency pins, and
the builder's own files. A slot image per variant (version, health, a broken
init) is made from it with ``mkfs.ext4 -d`` (no root, no mount) and cached
the same way, keyed also by the trust root it ships, so a rerun builds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from tests.hardware.guest import cache_dir
from tests.hardware.wholebox import agentpkg, debs, kernel, runtime, signing

__all__ = ["MIB", "BaseTree", "SlotVariant", "base_tree", "slot_image"]

MIB = 1024 * 1024
HERE = Path(__file__).parent
BOOT_HELPER = agentpkg.REPO / "deploy" / "kubesolo-update-boot"
#: the health values the stand-ins know (guestfs/standin-start)
HEALTH = ("ok", "node-not-ready", "containerd-down")

UPDATE_CONF = """\
# The test box's agent configuration (DESIGN.md 5). The data partition is
# mounted at /var/lib/kubesolo (state.json, the disk probe), the ESP at
# /boot/efi, the release disk at /mnt/release (read-only, no network).
# Releases are signed: the release disk holds a TUF repository made by
# kubesolo-release, and this image ships its root (signing.py). ngclient's
# metadata cache lives next to state.json, on the data partition.
server=file:///mnt/release/repository/
trust_root=/etc/kubesolo/root.json
channel=stable
bootloader=grub
grubenv=/boot/efi/EFI/BOOT/grubenv
# The stand-ins' pods start with the boot, 2.5-3.7 s before the boot helper's
# one probe on a committed slot (containerd stand-in 1.5 s, agent start 1 s,
# the pod's start time kept to the second): a hold of 3 s raced with that (CI
# saw kube_system fail on a healthy first boot), so hold them 1 s; give an
# unhealthy node 5 s (a real box: 30 s and 300 s).
kube_system_settle=1
settle_timeout=5
"""


@attrs.frozen(kw_only=True)
class SlotVariant:
    """What differs between the releases a scenario needs."""

    version: str
    health: str = "ok"
    #: a release whose /sbin/init exits at once: the kernel panics
    broken_init: bool = False

    def __attrs_post_init__(self) -> None:
        if self.health not in HEALTH:
            raise ValueError(f"health {self.health!r}: choose from {HEALTH}")

    @property
    def name(self) -> str:
        return f"{self.version}-{self.health}" + ("-broken" if self.broken_init else "")


@attrs.frozen(kw_only=True)
class BaseTree:
    """The cached common part of every slot, and what went into it."""

    root: Path
    key: str
    manifest: dict[str, object]

    @property
    def content_bytes(self) -> int:
        return int(self.manifest["content_bytes"])  # type: ignore[call-overload]

    @property
    def filesystem_mib(self) -> int:
        """The size of each slot filesystem: the content, plus room for ext4's own metadata."""
        return math.ceil(self.content_bytes * 1.08 / MIB) + 12


def _digest_files(paths: Iterator[Path] | list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _inputs() -> dict[str, object]:
    _, kernel_deb = kernel.kernel_package()
    return {
        "debs": [p.name for p in debs.download()],
        "kernel": kernel_deb.name,
        "busybox": hashlib.sha256(runtime.BUSYBOX.read_bytes()).hexdigest(),
        "agent": agentpkg.source_digest(),
        "lock": hashlib.sha256(agentpkg.LOCK.read_bytes()).hexdigest(),
        "builder": _digest_files([*HERE.glob("*.py"), *(HERE / "guestfs").iterdir(), BOOT_HELPER]),
    }


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _install(src: Path, dst: Path, mode: int = 0o755) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()  # a busybox applet link the real file replaces
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def _build_base(root: Path, work: Path) -> dict[str, object]:
    tree = debs.unpack(debs.download(), work / "debs")
    built = runtime.build_runtime(tree, root)
    dists = agentpkg.install_agent(root, tree)
    vmlinuz, kernel_deb = kernel.kernel_package()
    shutil.copyfile(vmlinuz, root / "vmlinuz")
    modules = kernel.build_initramfs(kernel_deb, root / "initrd.img")
    guestfs = kernel.GUESTFS
    for folder in ("proc", "sys", "dev", "run", "tmp", "root", "var/lib/kubesolo",
                   "boot/efi", "mnt/release", "etc/kubesolo-standin"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/kubesolo").mkdir(parents=True, exist_ok=True)
    (root / "etc/kubesolo/update.conf").write_text(UPDATE_CONF)
    _install(guestfs / "init", root / "sbin/init")
    _install(guestfs / "reboot", root / "sbin/reboot")
    _install(guestfs / "poweroff", root / "sbin/poweroff")
    _install(guestfs / "shutdown", root / "usr/lib/kubesolo-box/shutdown")
    _install(BOOT_HELPER, root / "usr/sbin/kubesolo-update-boot")
    _install(guestfs / "standin-start", root / "usr/lib/kubesolo-standin/start")
    _install(guestfs / "containerd.py", root / "usr/lib/kubesolo-standin/containerd.py", 0o644)
    _install(guestfs / "pause-activate", root / "usr/lib/kubesolo-standin/pause-activate", 0o644)
    _install(guestfs / "kubectl", root / "usr/bin/kubectl")
    return {
        "libraries": sorted(
            p.name for d in ("lib", "usr/lib") for p in (root / d / "x86_64-linux-gnu").glob("*")
        ),
        "dropped_extensions": list(built.dropped_extensions),
        "distributions": dists,
        "modules": modules,
        "content_bytes": _tree_bytes(root),
        "parts_bytes": {
            "kernel+initramfs": (root / "vmlinuz").stat().st_size
            + (root / "initrd.img").stat().st_size,
            "python stdlib": _tree_bytes(root / "usr/lib/python3.11"),
            "agent+dependencies": _tree_bytes(root / agentpkg.DIST_PACKAGES),
            "shared libraries": _tree_bytes(root / "lib")
            + _tree_bytes(root / "usr/lib/x86_64-linux-gnu"),
        },
    }


_BASE: list[BaseTree] = []
_BASE_LOCK = threading.Lock()


def base_tree() -> BaseTree:
    """The common slot content, built once per set of inputs (and looked up once a session)."""
    with _BASE_LOCK:
        if not _BASE:
            _BASE.append(_base_tree())
        return _BASE[0]


#: cached images of other inputs are removed once unused this long
STALE_SECONDS = 3 * 24 * 3600


def _slot_key(base: BaseTree | str) -> str:
    """What names the slot images of ``base`` (or of the base key): the base and the root."""
    key = base if isinstance(base, str) else base.key
    return f"{key}-{signing.root_digest()[:12]}"


def _prune(folder: Path, key: str) -> None:
    """Forget base trees and slot images of other inputs not used for a while."""
    cutoff = time.time() - STALE_SECONDS
    slots = _slot_key(key)
    for entry in [*folder.glob("base-*"), *folder.glob("slots/*")]:
        if key in entry.name and (entry.parent.name != "slots" or slots in entry.name):
            continue  # this base, and its slots that ship the current trust root
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _base_tree() -> BaseTree:
    inputs = _inputs()
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "wholebox"
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder, key)
    done = folder / f"base-{key}"
    if not (done / "manifest.json").is_file():
        with tempfile.TemporaryDirectory(prefix=f"base-{key}-", dir=folder) as tmp:
            work = Path(tmp)
            manifest = _build_base(work / "root", work)
            manifest["inputs"] = inputs
            (work / "root.manifest").write_text(json.dumps(manifest, indent=1))
            staged = work / "final"
            staged.mkdir()
            (work / "root").rename(staged / "root")
            (work / "root.manifest").rename(staged / "manifest.json")
            shutil.rmtree(done, ignore_errors=True)
            staged.rename(done)
    os.utime(done)  # in use: not stale
    manifest = json.loads((done / "manifest.json").read_text())
    return BaseTree(root=done / "root", key=key, manifest=manifest)


def slot_image(variant: SlotVariant, base: BaseTree | None = None) -> Path:
    """The ext4 image of one release (cached): the base tree plus the variant's files.

    Every release ships the test key set's root.json, and its cache key names it.
    """
    base = base or base_tree()
    folder = cache_dir() / "wholebox" / "slots"
    folder.mkdir(parents=True, exist_ok=True)
    trust_root = signing.trust_root()
    image = folder / f"{_slot_key(base)}-{variant.name}.img"
    if image.is_file():
        image.touch()  # in use: not stale
        return image
    with tempfile.TemporaryDirectory(prefix="slot-", dir=folder) as tmp:
        root = Path(tmp) / "root"
        # Hard links: the variant replaces files, it never writes into shared ones.
        shutil.copytree(base.root, root, symlinks=True, copy_function=os.link)
        (root / "version").write_text(f"{variant.version}\n")
        shutil.copyfile(trust_root, root / signing.GUEST_TRUST_ROOT.lstrip("/"))
        (root / "etc/kubesolo-standin/health").write_text(f"{variant.health}\n")
        if variant.broken_init:
            _install(kernel.GUESTFS / "broken-init", root / "sbin/init")
        partial = Path(tmp) / "slot.img"
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "KSOLOOS", "-E", "root_owner=0:0",
             "-d", str(root), str(partial), f"{base.filesystem_mib}M"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        partial.rename(image)
    return image
