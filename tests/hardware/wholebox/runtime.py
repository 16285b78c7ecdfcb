"""The guest's userland below the agent: Debian's Python 3.11, blkid, debugfs, busybox.

Built from the packages of :mod:`tests.hardware.wholebox.debs`, unpacked
with ``dpkg-deb -x`` (no chroot, no maintainer scripts, no root), then cut
down to what a box running the agent needs:

* the interpreter and its standard library, minus what no agent path uses
  (test suites, IDLE, tkinter, ensurepip, lib2to3, pydoc's topic index,
  sqlite3/dbm/curses, the CJK codecs) and minus any extension module whose
  shared libraries are not among the packages (readline, _crypt, ...), so
  the slot never carries a module that would fail to load;
* ``blkid`` (util-linux) and ``debugfs`` (e2fsprogs), which the agent calls;
* every shared library those programs and extension modules load, found by
  following ``DT_NEEDED`` from each ELF file (``elf.needed``), nothing else;
* busybox-static for the shell and the small tools (init, mount, insmod).

The standard library is then compiled to ``__pycache__`` with the guest's
own interpreter (run on the host, chrooted into the staging tree)
and ``unchecked-hash`` pycs, because the slot is mounted read-only: a box
could never write its bytecode cache, and a pyc checked against source
mtimes would be rejected after ``mkfs -d`` copied the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import attrs

from tests.hardware.wholebox import elf

__all__ = ["GUEST_PYTHON", "Runtime", "build_runtime", "run_guest_python"]

GUEST_PYTHON = "usr/bin/python3.11"
_STDLIB = "usr/lib/python3.11"
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
_LOADER = "lib64/ld-linux-x86-64.so.2"
_TOOLS = ("sbin/blkid", "sbin/debugfs")
BUSYBOX = Path("/bin/busybox")

#: standard-library folders and files no agent path imports
_DROP_STDLIB = (
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "sqlite3", "dbm", "curses", "distutils", "venv", "__phello__", "turtle.py",
    "__hello__.py", "antigravity.py", "this.py", "EXTERNALLY-MANAGED",
)  # fmt: skip
#: extension-module name prefixes to leave out (tests, demos, CJK codecs, audio, NIS)
_DROP_DYNLOAD = (
    "_test", "_ctypes_test", "xxlimited", "_xx", "_codecs_", "_multibytecodec",
    "audioop", "ossaudiodev", "nis", "_curses", "_dbm", "_sqlite3", "readline",
)  # fmt: skip


@attrs.frozen(kw_only=True)
class Runtime:
    """What :func:`build_runtime` put where, and what it left out."""

    root: Path
    libraries: tuple[str, ...]
    dropped_extensions: tuple[str, ...]


def _lib_path(tree: Path, soname: str) -> Path:
    for folder in _LIB_DIRS:
        candidate = tree / folder / soname
        if candidate.exists():
            return candidate
    raise FileNotFoundError(soname)


def _closure(tree: Path, roots: Iterable[Path]) -> tuple[set[str], list[Path]]:
    """The sonames ``roots`` load (transitively), and the roots whose needs cannot be met."""
    found: set[str] = set()
    unmet: list[Path] = []
    for root in roots:
        pending = list(elf.needed(root))
        mine: set[str] = set()
        ok = True
        while pending:
            soname = pending.pop()
            if soname in mine or soname in found:
                continue
            try:
                path = _lib_path(tree, soname)
            except FileNotFoundError:
                ok = False
                break
            mine.add(soname)
            pending.extend(elf.needed(path))
        if ok:
            found |= mine
        else:
            unmet.append(root)
    return found, unmet


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def run_guest_python(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the guest's interpreter on the host, chrooted into the staging ``root``.

    Nothing of the host can leak in (a library the slot lacks but the host
    has would make this check pass and the guest fail): as root a plain
    chroot, otherwise one inside a user namespace (``unshare -r``).
    """
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    jail = [chroot] if os.geteuid() == 0 else ["unshare", "-r", chroot]
    return subprocess.run(
        [*jail, str(root), "/" + GUEST_PYTHON, *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        timeout=600,
    )


def add_libraries(tree: Path, root: Path, elves: Iterable[Path]) -> set[str]:
    """Copy the shared libraries ``elves`` load from the unpacked packages into ``root``.

    Raises when one of them needs a library no guest package provides.
    """
    elves = list(elves)
    sonames, unmet = _closure(tree, elves)
    if unmet:
        raise RuntimeError(
            f"{', '.join(p.name for p in unmet)} need libraries no guest package provides"
        )
    for soname in sorted(sonames):
        source = _lib_path(tree, soname)
        _copy(source, root / source.parent.relative_to(tree) / soname)
    return sonames


def build_runtime(tree: Path, root: Path) -> Runtime:
    """Copy the trimmed runtime from the unpacked packages ``tree`` into the staging ``root``."""
    # The interpreter and its standard library, trimmed.
    _copy(tree / GUEST_PYTHON, root / GUEST_PYTHON)
    (root / "usr/bin/python3").symlink_to("python3.11")
    stdlib = root / _STDLIB
    shutil.copytree(
        tree / _STDLIB,
        stdlib,
        symlinks=False,
        ignore=lambda folder, names: [
            n for n in names if Path(folder) == tree / _STDLIB and n in _DROP_STDLIB
        ],
    )
    dynload = stdlib / "lib-dynload"
    for ext in sorted(dynload.glob("*.so")):
        if ext.name.startswith(_DROP_DYNLOAD):
            ext.unlink()
    # Debian points sitecustomize at /etc/python3.11, which the slot does not carry.
    (stdlib / "sitecustomize.py").unlink(missing_ok=True)

    for tool in _TOOLS:
        _copy(tree / tool, root / tool)
    elves = [root / GUEST_PYTHON, *(root / t for t in _TOOLS), *sorted(dynload.glob("*.so"))]
    sonames, unmet = _closure(tree, elves)
    for path in unmet:
        if path.parent != dynload:
            raise RuntimeError(f"{path.name} needs a library no guest package provides")
        path.unlink()  # an extension module the slot could not load: leave it out
    sonames = add_libraries(tree, root, (e for e in elves if e not in unmet))
    # The dynamic loader at the path every program names (PT_INTERP).
    loader = root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    _copy(_lib_path(tree, "ld-linux-x86-64.so.2"), loader)
    (root / "lib64").mkdir(exist_ok=True)
    (root / _LOADER).symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")

    # busybox-static: the shell and the small tools; one link per applet the slot lacks.
    _copy(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    for applet in applets:
        link = root / applet
        name = link.name
        if any((root / d / name).exists() for d in ("bin", "sbin", "usr/bin", "usr/sbin")):
            continue  # the real tool (blkid, debugfs, python) wins over the applet
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin/busybox", link.parent))

    compile_tree(root, stdlib)
    return Runtime(
        root=root,
        libraries=tuple(sorted(sonames)),
        dropped_extensions=tuple(sorted(p.name.split(".")[0] for p in unmet)),
    )


def compile_tree(root: Path, folder: Path) -> None:
    """Compile ``folder`` to unchecked-hash pycs with the guest's interpreter."""
    done = run_guest_python(
        root,
        "-I",
        "-m",
        "compileall",
        "-q",
        "--invalidation-mode",
        "unchecked-hash",
        "/" + str(folder.relative_to(root)),
    )
    if done.returncode != 0:
        raise RuntimeError(f"compileall in {folder} failed: {(done.stderr + done.stdout)[-600:]}")
