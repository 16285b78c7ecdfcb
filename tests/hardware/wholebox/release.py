"""The release source of the test box: a second virtio disk, read with file:// URLs.

The guest has no network at all. The host writes what a release server
would serve onto a FAT disk labelled KSOLOREL, which the guest mounts
read-only at /mnt/release; the agent's ``server=`` is
``file:///mnt/release/release.json``.

What goes on the disk is one function, :func:`release_files`: today the
release document of DESIGN.md 5 next to its zstd-compressed image. When
releases are signed (a TUF repository made by ``kubesolo-release``), that
function returns the repository's files instead and nothing else changes.

The disk also carries ``control/box.env``, the host's requests for the next
boot (read by guestfs/init: the agent's KUBESOLO_UPDATE_* settings and
KSOLO_PLAN), rewritten in place with mtools between boots.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import zstandard

from tests.hardware.wholebox.rootfs import MIB

__all__ = ["LABEL", "build_release_disk", "compressed", "release_files", "write_control"]

LABEL = "KSOLOREL"
_MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compressed(image: Path) -> Path:
    """``IMAGE.zst`` next to the (cached) slot image, made once."""
    target = image.with_name(image.name + ".zst")
    if target.is_file():
        target.touch()  # in use: the cache keeps it
    else:
        partial = target.with_name(target.name + ".part")
        compressor = zstandard.ZstdCompressor(level=3, threads=-1)
        with image.open("rb") as src, partial.open("wb") as dst:
            compressor.copy_stream(src, dst)
        partial.replace(target)
    return target


def release_files(version: str, image: Path) -> dict[str, Path | bytes]:
    """What the release server offers for ``image``: the release document and the image.

    DESIGN.md 5: ``release.json`` names the compressed image (relative URL),
    its size and SHA-256 as served, and the size and SHA-256 of the raw
    filesystem the agent writes and reads back.
    """
    served = compressed(image)
    name = f"kubesolo-os-{version}.img.zst"
    document = {
        "schema": 1,
        "version": version,
        "image": {
            "url": name,
            "sha256": _sha256(served),
            "size": served.stat().st_size,
            "compression": "zstd",
            "raw_size": image.stat().st_size,
            "raw_sha256": _sha256(image),
        },
    }
    return {"release.json": json.dumps(document, indent=1).encode(), name: served}


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
    _mtools("mmd", "-i", str(path), "::/control")
    with tempfile.TemporaryDirectory(prefix="ksolo-release-") as tmp:
        for name, content in files.items():
            source = content
            if isinstance(content, bytes):
                source = Path(tmp) / name
                source.write_bytes(content)
            _mtools("mcopy", "-i", str(path), str(source), f"::/{name}")
    write_control(path, control)
    return path


def write_control(path: Path, control: Mapping[str, str]) -> None:
    """Replace ``control/box.env`` (KEY=VALUE lines) on the release disk."""
    text = "".join(f"{key}={value}\n" for key, value in control.items())
    with tempfile.TemporaryDirectory(prefix="ksolo-control-") as tmp:
        source = Path(tmp) / "box.env"
        source.write_text(text)
        _mtools("mcopy", "-o", "-i", str(path), str(source), "::/control/box.env")
