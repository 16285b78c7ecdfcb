"""Build kubesolo-update as one self-contained file (a Python zipapp).

The archive holds kubesolo_core, kubesolo_adapters, kubesolo_entrypoints and
their pure-Python dependencies, copied from the environment this script runs
in (so it works offline, from the project's venv): attrs, cattrs, structlog,
typer (click, rich, shellingham...), httpx (httpcore, h11, anyio, idna,
certifi...), prometheus_client. Run it with any Python >= 3.11:
``python3 kubesolo-update.pyz status``.

Left out on purpose: distributions with compiled extensions, which cannot be
imported from a zip. zstandard: the agent imports it only for
``"compression": "zstd"`` images, so a zipapp on a host without the
zstandard package handles none and gzip images and refuses zstd with a clear
error. pydantic (and pydantic-core, typer >= 0.2x's validator): the CLI
gives every option typer's coercion without pydantic
(kubesolo_entrypoints.cli.command), so no command imports it.

Usage: python scripts/build_zipapp.py [-o dist/kubesolo-update.pyz]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import zipapp
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = ("kubesolo_core", "kubesolo_adapters", "kubesolo_entrypoints")
SKIP_SUFFIXES = (".so", ".pyd", ".pyc", ".pyi")
#: distributions with compiled code, not needed at run time (see the docstring)
EXCLUDE = {"zstandard", "pydantic", "pydantic-core"}
MAIN = "from kubesolo_entrypoints.cli import main\nmain()\n"


def _name(requirement: str) -> str | None:
    if "extra ==" in requirement:
        return None  # optional extras are not needed at run time
    match = re.match(r"[A-Za-z0-9_.\-]+", requirement)
    return match.group(0) if match else None


def runtime_distributions(root: str = "kubesolo-update") -> list[metadata.Distribution]:
    """The installed distributions the agent needs, resolved recursively."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [n for n in (_name(r) for r in metadata.requires(root) or []) if n]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen or key in EXCLUDE:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an environment marker excluded it (e.g. a backport for old Pythons)
        seen[key] = dist
        todo.extend(n for n in (_name(r) for r in dist.requires or []) if n)
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def stage(target: Path) -> list[str]:
    """Copy our packages and the dependencies' files into ``target``."""
    names = []
    for package in OWN:
        shutil.copytree(
            ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for dist in runtime_distributions():
        names.append(f"{dist.metadata['Name']} {dist.version}")
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if (
                not parts
                or parts[0].startswith("..")
                or "__pycache__" in parts
                or str(file).endswith(SKIP_SUFFIXES)
                or parts[0].endswith(".data")
                or (parts[0].endswith(".dist-info") and parts[-1] in ("RECORD", "INSTALLER"))
            ):
                continue
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            dest = target.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    return names


def build(output: Path) -> list[str]:
    """Build the zipapp at ``output``; returns the bundled distributions."""
    with tempfile.TemporaryDirectory(prefix="kubesolo-zipapp-") as tmp:
        staging = Path(tmp) / "app"
        staging.mkdir()
        names = stage(staging)
        (staging / "__main__.py").write_text(MAIN)
        output.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(staging, output, interpreter="/usr/bin/env python3", compressed=True)
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "dist" / "kubesolo-update.pyz"))
    args = parser.parse_args()
    output = Path(args.output)
    names = build(output)
    size = output.stat().st_size
    sys.stderr.write(f"built {output} ({size / 1048576:.1f} MiB) with {', '.join(names)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
