"""Debian packages for the guest, fetched with ``apt-get download`` and cached.

Nothing is installed on the host: each ``.deb`` lands in the cache
(``~/.cache/kubesolo-update/debs``, or under ``$KUBESOLO_CACHE_DIR``) and is
unpacked with ``dpkg-deb -x`` into a folder the slot builder picks files
from. The exact file names (package, version, architecture) come from
``apt-cache show``, so a cached .deb is reused until Debian publishes a new
version, and every cache key downstream names the versions it was built from.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.hardware.guest import cache_dir

__all__ = ["GUEST_PACKAGES", "download", "unpack"]

#: what the slot's userland is made of (scripts/install-system-deps.sh says why)
GUEST_PACKAGES: tuple[str, ...] = (
    # the Python 3.11 runtime and the C libraries it and its extension modules load
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
    "libgcc-s1",  # pydantic-core (typer's dependency) is Rust and loads libgcc_s
    # blkid (the agent finds PARTLABEL=KSOLOA/B with it) and debugfs (slot versions)
    "util-linux",
    "libblkid1",
    "e2fsprogs",
    "libext2fs2",
    "libcom-err2",
    "libss2",
)


def _candidates(packages: Sequence[str]) -> dict[str, str]:
    """package -> the .deb file name apt would download now."""
    done = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"apt-cache show failed ({done.stderr.strip()[-300:]}): run `apt-get update`"
        )
    found: dict[str, str] = {}
    for stanza in done.stdout.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.MULTILINE))
        if {"Package", "Version", "Architecture"} <= fields.keys():
            # apt-get download escapes the epoch's colon in the file name it writes.
            version = fields["Version"].replace(":", "%3a")
            found.setdefault(
                fields["Package"], f"{fields['Package']}_{version}_{fields['Architecture']}.deb"
            )
    missing = [p for p in packages if p not in found]
    if missing:
        raise RuntimeError(f"apt-cache knows no {', '.join(missing)}: run `apt-get update`")
    return found


def download(packages: Sequence[str] = GUEST_PACKAGES) -> list[Path]:
    """The .deb files of ``packages`` (candidate versions), downloading only what is missing."""
    folder = cache_dir() / "debs"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = _candidates(packages)
    missing = [p for p, name in wanted.items() if not (folder / name).is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="ksolo-apt-", dir=folder) as tmp:
            done = subprocess.run(
                ["apt-get", "download", "-o", "APT::Sandbox::User=root", *missing],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"apt-get download failed: {done.stderr.strip()[-400:]}")
            for deb in Path(tmp).glob("*.deb"):
                deb.replace(folder / deb.name)
    paths = [folder / wanted[p] for p in packages]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise RuntimeError(f"apt-get download left no {', '.join(absent)} in {folder}")
    return paths


def unpack(debs: Sequence[Path], into: Path) -> Path:
    """``dpkg-deb -x`` every package into one folder (no maintainer scripts run)."""
    into.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(into)], check=True, capture_output=True, timeout=300
        )
    return into
