"""The release source of the test box: a second virtio disk, read with file:// URLs.

The guest has no network at all. The host writes what a release server
would serve onto a FAT disk labelled KSOLOREL, which the guest mounts
read-only at /mnt/release. What goes on the disk is :func:`release_files`:
the ``repository/`` of a signed TUF repository made by ``kubesolo-release``'s
code (:mod:`tests.hardware.wholebox.signing`), which the agent's
``server=file:///mnt/release/repository/`` names, and, when a scenario asks
for them, what a compromised mirror would serve instead under
``attacks/<how>/`` (the init's ``refuse-<how>`` points the agent there).

The disk also carries ``control/box.env``, the host's requests for the next
boot (read by guestfs/init: the agent's KUBESOLO_UPDATE_* settings and
KSOLO_PLAN), rewritten in place with mtools between boots.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.hardware.wholebox.rootfs import MIB

__all__ = ["LABEL", "build_release_disk", "release_files", "write_control"]

LABEL = "KSOLOREL"
_MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}


def _tree(folder: Path, under: str) -> dict[str, Path]:
    return {
        f"{under}/{path.relative_to(folder).as_posix()}": path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def release_files(served: Path, attacks: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """What the release disk offers: the repository folder ``served``, and attacked mirrors.

    Keys are paths on the disk: ``repository/metadata/timestamp.json``...,
    ``attacks/<how>/...`` for each of ``attacks`` (how -> folder to serve).
    """
    files = _tree(served, "repository")
    for how, folder in (attacks or {}).items():
        files.update(_tree(folder, f"attacks/{how}"))
    return files


def _mtools(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, env=_MTOOLS_ENV, timeout=300)


def build_release_disk(
    path: Path, files: Mapping[str, Path | bytes], control: Mapping[str, str]
) -> Path:
    """A FAT32 disk image labelled KSOLOREL holding ``files`` and ``control/box.env``."""
    payload = sum(v.stat().st_size if isinstance(v, Path) else len(v) for v in files.values())
    size_mib = max(64, math.ceil(payload * 1.05 / MIB) + 8)
    path.unlink(missing_ok=True)
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-n", LABEL, "-C", str(path), str(size_mib * 1024)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    folders = {"control"}
    for name in files:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    # mmd makes one level at a time: parents first (sorted puts "a" before "a/b")
    _mtools("mmd", "-i", str(path), *(f"::/{folder}" for folder in sorted(folders)))
    with tempfile.TemporaryDirectory(prefix="ksolo-release-") as tmp:
        by_folder: dict[str, list[str]] = {}
        for index, (name, content) in enumerate(sorted(files.items())):
            folder, _, base = name.rpartition("/")
            source = content
            if isinstance(content, bytes) or content.name != base:
                # mcopy names the copy after its source: stage it under its disk name
                source = Path(tmp) / str(index) / base
                source.parent.mkdir()
                if isinstance(content, bytes):
                    source.write_bytes(content)
                else:
                    source.symlink_to(content.resolve())
            by_folder.setdefault(folder, []).append(str(source))
        for folder, sources in by_folder.items():
            _mtools("mcopy", "-i", str(path), *sources, f"::/{folder}/" if folder else "::/")
    write_control(path, control)
    return path


def write_control(path: Path, control: Mapping[str, str]) -> None:
    """Replace ``control/box.env`` (KEY=VALUE lines) on the release disk."""
    text = "".join(f"{key}={value}\n" for key, value in control.items())
    with tempfile.TemporaryDirectory(prefix="ksolo-control-") as tmp:
        source = Path(tmp) / "box.env"
        source.write_text(text)
        _mtools("mcopy", "-o", "-i", str(path), str(source), "::/control/box.env")
