"""Build kubesolo-update as one self-contained file per architecture (a PEX).

For each architecture (x86_64, aarch64) the artifact holds the agent and every
runtime dependency pinned in ``requirements/runtime.lock``, compiled ones
included (zstandard, pydantic-core, cryptography, cffi), as the
manylinux wheels built for that architecture. Nothing is taken from the
environment this script runs in except pex, pip and setuptools themselves.

Two steps, both driven by the lock:

1. fetch (needs PyPI): ``pip download --only-binary=:all: --platform ...
   --require-hashes`` into the wheelhouse, one folder per architecture; pip
   checks every file against the lock's sha256.
2. build (offline): check the wheelhouse against the lock again (a wheel for
   every pin, with a locked hash, for the target's tags), build our own wheel
   from a clean copy of the sources, and run ``pex --no-pypi`` over exactly
   those wheels for the target platform.

Adding a dependency is a lock refresh (``bash scripts/lock.sh``): the build
reads the pins from the lock, evaluates their markers for the target (not for
the machine that builds), and fails naming the pin when a wheel is missing.

Reproducible: the same lock, sources, pex and setuptools give the same bytes
(pex writes sorted entries with fixed timestamps and no .pyc; our wheel is
built with SOURCE_DATE_EPOCH).

Usage: python scripts/build_artifacts.py [--arch x86_64] [--arch aarch64]
           [--offline] [--wheelhouse DIR] [-o DIR] [--python 3.11]
Writes DIR/kubesolo-update-<arch>.pex (default dist/) and prints their sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
OWN = ("kubesolo_core", "kubesolo_adapters", "kubesolo_entrypoints")
#: what of our own packages goes in (no caches, no stray files of a working tree)
OWN_FILES = ("*.py", "py.typed")
LOCK = ROOT / "requirements" / "runtime.lock"
ARCHES = ("x86_64", "aarch64")
#: glibc 2.17 (manylinux2014): what the wheels of our dependencies are built for,
#: and older than the glibc of any maintained distribution
GLIBC_MINOR = 17
#: 1980-01-01, the earliest time a zip entry can hold
EPOCH = "315532800"


class BuildError(Exception):
    """One line for the user: what is wrong and what to do."""


@dataclass(frozen=True)
class Pin:
    """One pinned requirement of the lock."""

    name: str
    version: str
    marker: Marker | None
    hashes: frozenset[str]

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate({**env, "extra": ""})


@dataclass(frozen=True)
class Target:
    """An architecture and CPython version the artifact is built for."""

    arch: str
    python: str = "3.11"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    def platforms(self) -> list[str]:
        """Linux platform tags the box accepts, best first: manylinux down from glibc 2.17."""
        out = []
        for minor in range(GLIBC_MINOR, 4, -1):
            out.append(f"manylinux_2_{minor}_{self.arch}")
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
            if legacy:
                out.append(f"{legacy}_{self.arch}")
        return out

    def tags(self) -> list[Tag]:
        """Every wheel tag the box's CPython accepts, in its order of preference."""
        return [
            *cpython_tags(self.version, abis=[self.abi], platforms=self.platforms()),
            *compatible_tags(self.version, self.abi, platforms=self.platforms()),
        ]

    def environment(self) -> dict[str, str]:
        """PEP 508 marker values of the target box (not of the build machine)."""
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": f"{self.python}.0",
            "python_version": self.python,
            "sys_platform": "linux",
        }

    def complete_platform(self) -> dict[str, object]:
        """pex's --complete-platform document: the marker values and the tags.

        An abbreviated ``--platform`` leaves markers such as
        ``python_full_version`` undefined, and cryptography's metadata uses them.
        """
        return {
            "marker_environment": self.environment(),
            "compatible_tags": [str(tag) for tag in self.tags()],
        }

    def accepts(self, wheel: str) -> bool:
        """Can the target install this wheel file (by its tags)?"""
        *_, tags = parse_wheel_filename(wheel)
        return not tags.isdisjoint(self.tags())


def read_lock(path: Path) -> list[Pin]:
    """The pins of a requirements file written by ``uv pip compile --generate-hashes``."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        spec = re.sub(r"--hash=\S+", "", line).strip()
        requirement, _, marker = spec.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s]+)", requirement.strip())
        if not match or not hashes:
            raise BuildError(
                f"{path}: {raw.strip()!r} is not a hashed pin; refresh it with bash scripts/lock.sh"
            )
        pins.append(
            Pin(
                name=str(canonicalize_name(match.group(1))),
                version=match.group(2),
                marker=Marker(marker.strip()) if marker.strip() else None,
                hashes=hashes,
            )
        )
    return pins


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(
    argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def fetch(pins: list[Pin], target: Target, wheelhouse: Path) -> None:
    """Download the target's wheel of every pin into ``wheelhouse`` (pip checks the hashes)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubesolo-fetch-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(
            "".join(
                f"{p.name}=={p.version} "
                + " ".join(f"--hash=sha256:{h}" for h in sorted(p.hashes))
                + "\n"
                for p in pins
                if p.applies(target.environment())
            )
        )
        platforms = [a for tag in target.platforms() for a in ("--platform", tag)]
        _run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--require-hashes", "--no-deps", "--only-binary=:all:", *platforms,
                "--python-version", target.python, "--implementation", "cp", "--abi", target.abi,
                "-r", str(requirements), "-d", str(wheelhouse),
            ],
            f"pip download for {target.arch}",
        )  # fmt: skip


def select_wheels(pins: list[Pin], target: Target, wheelhouse: Path) -> list[Path]:
    """The one wheel per applicable pin in ``wheelhouse``, checked against the lock's hashes."""
    candidates: dict[str, list[Path]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version, *_ = parse_wheel_filename(wheel.name)
        candidates.setdefault(f"{name}=={version}", []).append(wheel)
    chosen = []
    for pin in pins:
        if not pin.applies(target.environment()):
            continue
        found = [
            w
            for w in candidates.get(f"{pin.name}=={pin.version}", [])
            if target.accepts(w.name) and _sha256(w) in pin.hashes
        ]
        if not found:
            raise BuildError(
                f"no {target.arch} wheel of {pin.name}=={pin.version} with a locked hash in "
                f"{wheelhouse}; fetch it (run without --offline)"
            )
        chosen.append(found[0])
    return chosen


def stage_sources(dest: Path) -> None:
    """A clean copy of what our wheel is built from."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for package in OWN:
        for pattern in OWN_FILES:
            for source in (ROOT / package).rglob(pattern):
                if "__pycache__" in source.parts:
                    continue
                target = dest / source.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


def own_wheel(into: Path) -> Path:
    """Build kubesolo-update's own wheel from a clean copy, with fixed timestamps."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-src-") as tmp:
        src = Path(tmp) / "src"
        stage_sources(src)
        env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONDONTWRITEBYTECODE": "1"}
        _run(
            [
                sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-build-isolation", "--no-index", "-w", str(into), str(src),
            ],
            "building the kubesolo-update wheel (pip wheel; setuptools comes from test.lock)",
            env=env,
        )  # fmt: skip
    (wheel,) = into.glob("kubesolo_update-*.whl")
    return wheel


def build(target: Target, pins: list[Pin], wheels: list[Path], own: Path, output: Path) -> None:
    """Run pex over exactly ``wheels`` (of ``pins``) + our wheel, for ``target``, offline."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-pex-") as tmp:
        links = Path(tmp) / "wheels"
        links.mkdir()
        platform = Path(tmp) / "platform.json"
        platform.write_text(json.dumps(target.complete_platform(), indent=1))
        for wheel in [*wheels, own]:
            shutil.copyfile(wheel, links / wheel.name)
        output.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable, "-m", "pex",
                "--no-pypi", "--find-links", str(links), "--complete-platform", str(platform),
                # our wheel pulls its dependencies from the pinned wheels only: a
                # dependency missing from the lock fails here
                str(links / own.name),
                *(f"{pin.name}=={pin.version}" for pin in pins),
                "--entry-point", "kubesolo_entrypoints.cli:main",
                "--python-shebang", "/usr/bin/env python3",
                # first run: unpack into a venv under PEX_ROOT; after that /bin/sh
                # execs that venv's python directly (start-up of an installed venv)
                "--venv", "--sh-boot",
                "--no-compile", "--no-emit-warnings",
                "--pex-root", str(Path(tmp) / "pex-root"),
                "-o", str(output),
            ],
            f"pex for {target.arch}",
            cwd=Path(tmp),
        )  # fmt: skip


def build_all(
    arches: list[str],
    *,
    out: Path,
    wheelhouse: Path,
    offline: bool,
    python: str = "3.11",
    lock: Path = LOCK,
) -> dict[str, Path]:
    """Fetch (unless offline) and build every architecture; returns arch -> artifact."""
    pins = read_lock(lock)
    built = {}
    with tempfile.TemporaryDirectory(prefix="kubesolo-own-") as tmp:
        own = own_wheel(Path(tmp))
        for arch in arches:
            target = Target(arch, python)
            house = wheelhouse / f"cp{python.replace('.', '')}-{arch}"
            if not offline:
                fetch(pins, target, house)
            wheels = select_wheels(pins, target, house)
            output = out / f"kubesolo-update-{arch}.pex"
            build(target, [p for p in pins if p.applies(target.environment())], wheels, own, output)
            built[arch] = output
    return built


def default_wheelhouse() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KUBESOLO_WHEELHOUSE") or Path(cache) / "kubesolo-update" / "wheels")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", action="append", choices=ARCHES, help="default: both")
    parser.add_argument("-o", "--output-dir", default=str(ROOT / "dist"))
    parser.add_argument(
        "--wheelhouse",
        default=None,
        help="where the wheels are kept (default $KUBESOLO_WHEELHOUSE or ~/.cache/kubesolo-update/wheels)",
    )
    parser.add_argument("--offline", action="store_true", help="build from the wheelhouse only")
    parser.add_argument(
        "--python", default="3.11", help="CPython version of the boxes (default 3.11)"
    )
    parser.add_argument("--lock", default=str(LOCK))
    args = parser.parse_args()
    if not re.fullmatch(r"3\.\d+", args.python):
        sys.stderr.write(f"--python {args.python!r}: give a CPython version like 3.11\n")
        return 2
    wheelhouse = (Path(args.wheelhouse) if args.wheelhouse else default_wheelhouse()).resolve()
    try:
        built = build_all(
            args.arch or list(ARCHES),
            out=Path(args.output_dir).resolve(),
            wheelhouse=wheelhouse,
            offline=args.offline,
            python=args.python,
            lock=Path(args.lock),
        )
    except BuildError as exc:
        sys.stderr.write(f"build_artifacts: {exc}\n")
        return 1
    for arch, path in built.items():
        size = path.stat().st_size
        sys.stdout.write(
            f"{path}  {arch}  {size} bytes ({size / 1e6:.1f} MB)  sha256 {_sha256(path)}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
