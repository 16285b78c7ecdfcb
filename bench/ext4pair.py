"""Two releases of a real ext4 system image, the second with a few percent of its blocks changed.

Used by bench/chunking.py (fixed vs content-defined chunks) and
bench/adaptive.py (the adaptive apply against a full one and casync).

Release 1 is ``mkfs.ext4 -d`` over a folder of real files copied from this
machine's /usr (Python's standard library, GCC's support files, libexec,
locales...), made reproducible with a fixed UUID, hash seed and time.
Release 2 is what a package upgrade does to it: the image is loop-mounted
(so the kernel's ext4 allocator and journal do the work), real files are
replaced the way dpkg does (a new file written beside, then renamed over
the old), a few are deleted, a few new ones are added, and ``/version``
changes. The donors are other real files of /usr. The changed fraction is
measured by comparing the two images 4 KiB block by 4 KiB block.

A third variant, ``rebuilt``, runs ``mkfs.ext4 -d`` again over the changed
tree: the layout a build system that recreates the filesystem from scratch
produces, where files after a changed one may move.

Needs root (loop mount). Nothing outside ``workdir`` is changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
BLOCK = 4096

#: real files for release 1 (about 330 MiB): small text files and big binaries mixed
SOURCES = (
    "/usr/lib/python3.11",
    "/usr/lib/python3",
    "/usr/libexec",
    "/usr/lib/gcc",
    "/usr/share/i18n",
    "/usr/share/perl",
    "/usr/share/zoneinfo",
)
#: where replacement contents come from (never part of release 1)
DONORS = ("/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/share/locale")
UUID = "6b1f3c2e-5a4d-4e8f-9c1b-2d3e4f5a6b7c"
HASH_SEED = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
FAKE_TIME = "1767225600"  # 2026-01-01


@dataclass
class Pair:
    old: Path
    new: Path
    size: int
    changed_blocks: int
    total_blocks: int
    files_replaced: int
    files_added: int
    files_deleted: int

    @property
    def changed_fraction(self) -> float:
        return self.changed_blocks / self.total_blocks


def _copy_tree(dest: Path, budget: int) -> int:
    """Copy regular files and symlinks of SOURCES into ``dest`` (up to ``budget`` bytes)."""
    total = 0
    for src in SOURCES:
        root = Path(src)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to("/")
                target = dest / rel
                try:
                    if path.is_symlink():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(path.readlink())
                        continue
                    if not path.is_file():
                        continue
                    size = path.stat().st_size
                    if total + size > budget:
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                    total += size
                except OSError:
                    continue
    return total


def _donors(minimum: int) -> list[Path]:
    out = []
    for src in DONORS:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    if path.is_file() and not path.is_symlink() and path.stat().st_size >= minimum:
                        out.append(path)
    return out


def mkfs(tree: Path, image: Path, size: int) -> None:
    """``mkfs.ext4 -d tree`` into a fresh ``size``-byte image, reproducibly."""
    image.unlink(missing_ok=True)
    with image.open("wb") as fh:
        fh.truncate(size)
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            str(BLOCK),
            "-L",
            "KSOLOROOT",
            "-U",
            UUID,
            "-E",
            f"hash_seed={HASH_SEED},root_owner=0:0",
            "-d",
            str(tree),
            str(image),
        ],
        check=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME},
    )


@contextlib.contextmanager
def mounted(image: Path) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="kubesolo-ext4pair-"))
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], check=False).returncode == 0:
                break
            time.sleep(0.2)
        mnt.rmdir()


def count_changed(a: Path, b: Path) -> int:
    changed = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(MIB)
            y = fb.read(MIB)
            if not x and not y:
                return changed
            if x == y:
                continue
            for i in range(0, max(len(x), len(y)), BLOCK):
                if x[i : i + BLOCK] != y[i : i + BLOCK]:
                    changed += 1


def _change(root: Path, rng: random.Random, budget: int) -> tuple[int, int, int, list[str]]:
    """Replace, delete and add real files under ``root`` for about ``budget`` bytes of data."""
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "version"
    )
    donors = _donors(4096)
    rng.shuffle(donors)
    replaced = added = deleted = 0
    spent = 0
    log = []
    candidates = [p for p in files if p.stat().st_size >= 2048]
    rng.shuffle(candidates)
    # 80% of the budget: upgrades of existing files, the dpkg way (new beside, rename over)
    for path in candidates:
        if spent >= budget * 0.8 or not donors:
            break
        donor = donors.pop()
        size = donor.stat().st_size
        if size > 8 * MIB:
            continue
        tmp = path.with_name(path.name + ".dpkg-new")
        shutil.copyfile(donor, tmp)
        tmp.replace(path)
        spent += size
        replaced += 1
        log.append(f"replace {path.relative_to(root)}")
    # a few deletions (package removed)
    for path in candidates[-40:]:
        if path.exists():
            path.unlink()
            deleted += 1
    # the rest: new files (package added)
    newdir = root / "usr" / "share" / "kubesolo-new"
    newdir.mkdir(parents=True, exist_ok=True)
    while spent < budget and donors:
        donor = donors.pop()
        size = donor.stat().st_size
        if size > 4 * MIB:
            continue
        shutil.copyfile(donor, newdir / f"{added:04d}-{donor.name}")
        spent += size
        added += 1
    return replaced, added, deleted, log


def build_pair(
    workdir: Path, *, size_mib: int = 512, change: float = 0.05, seed: int = 13, fill: float = 0.64
) -> dict[str, Pair]:
    """Release 1 and two release-2 variants (``inplace``, ``rebuilt``) under ``workdir``."""
    if os.geteuid() != 0:
        raise SystemExit("building the ext4 pair needs root (loop mount)")
    size = size_mib * MIB
    tree = workdir / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    _copy_tree(tree, int(size * fill))
    (tree / "version").write_text("1.0.0\n")
    old = workdir / "release-1.0.0.img"
    mkfs(tree, old, size)
    # The data budget: metadata, directories and the journal add to what the files change.
    budget = int(size * change * 0.81)
    new = workdir / "release-1.1.0.img"
    shutil.copyfile(old, new)
    rng = random.Random(seed)  # noqa: S311  (reproducible choice, not crypto)
    with mounted(new) as mnt:
        replaced, added, deleted, _ = _change(mnt, rng, budget)
        (mnt / "version").write_text("1.1.0\n")
    # the same changes on the tree, for the rebuilt variant
    rng = random.Random(seed)  # noqa: S311  (reproducible choice, not crypto)
    _change(tree, rng, budget)
    (tree / "version").write_text("1.1.0\n")
    rebuilt = workdir / "release-1.1.0-rebuilt.img"
    mkfs(tree, rebuilt, size)
    shutil.rmtree(tree)
    total = size // BLOCK
    return {
        name: Pair(
            old=old,
            new=img,
            size=size,
            changed_blocks=count_changed(old, img),
            total_blocks=total,
            files_replaced=replaced,
            files_added=added,
            files_deleted=deleted,
        )
        for name, img in (("inplace", new), ("rebuilt", rebuilt))
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    import sys

    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    pairs = build_pair(work)
    for name, pair in pairs.items():
        print(
            f"{name}: {pair.changed_blocks}/{pair.total_blocks} blocks changed "
            f"({pair.changed_fraction:.2%}); replaced {pair.files_replaced}, added "
            f"{pair.files_added}, deleted {pair.files_deleted}"
        )
    print(f"built in {time.monotonic() - t:.1f} s under {work}")
