"""The agent inside the guest: this checkout's wheel and its locked runtime dependencies.

``pip install --target`` puts the dependencies pinned in
``requirements/runtime.lock`` (the lock the shipped artifacts are built
from, every file checked against its sha256) into the slot's dist-packages,
as CPython 3.11 manylinux x86_64 wheels: Debian's 3.11 has the same ABI as
the host's, so zstandard's and pydantic-core's compiled extensions load in
the guest. Then our own wheel, built from a clean copy of the sources by the function
that builds the shipped artifacts (``scripts/build_artifacts.py``), without
dependencies. The console script pip writes names the host's
interpreter; the slot gets its own, pointing at the guest's python3.11.
Everything is compiled to unchecked-hash pycs by the guest's interpreter,
then imported by it once, on the host, as a check that nothing is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.hardware.wholebox.runtime import add_libraries, compile_tree, run_guest_python

__all__ = ["DIST_PACKAGES", "LAUNCHER", "LOCK", "REPO", "install_agent", "source_digest"]

REPO = Path(__file__).resolve().parents[3]
#: the runtime dependencies, pinned with their hashes (scripts/lock.sh)
LOCK = REPO / "requirements" / "runtime.lock"
BUILD_ARTIFACTS = REPO / "scripts" / "build_artifacts.py"
#: where Debian's python3.11 finds packages that are not in the standard library
DIST_PACKAGES = "usr/lib/python3/dist-packages"
LAUNCHER = "usr/bin/kubesolo-update"

_LAUNCHER_TEXT = """#!/usr/bin/python3.11 -I
import sys

from kubesolo_entrypoints.cli import main

sys.exit(main())
"""


def source_digest() -> str:
    """A digest of everything the wheel is built from (what ``stage_sources`` copies)."""
    artifacts = _artifacts()
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", REPO / "README.md", BUILD_ARTIFACTS]
    for package in artifacts.OWN:
        for pattern in artifacts.OWN_FILES:
            files += sorted(
                p for p in (REPO / package).rglob(pattern) if "__pycache__" not in p.parts
            )
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _artifacts() -> Any:
    """scripts/build_artifacts.py (a script, not a package): its clean-copy wheel builder."""
    spec = importlib.util.spec_from_file_location("build_artifacts", BUILD_ARTIFACTS)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("build_artifacts")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_artifacts"] = module  # its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return module


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip {args[0]} failed: {(done.stderr or done.stdout)[-800:]}")


def install_agent(root: Path, tree: Path) -> list[str]:
    """Install the agent into the staging ``root``; return the distributions it holds.

    ``tree`` is the unpacked guest packages: the shared libraries the
    compiled dependencies load come from there.
    """
    target = root / DIST_PACKAGES
    platform = (
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
    )  # fmt: skip
    _pip(
        "install", "--quiet", "--no-compile", "--target", str(target), *platform,
        "--require-hashes", "--no-deps", "--requirement", str(LOCK),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ksolo-wheel-") as tmp:
        wheel = _artifacts().own_wheel(Path(tmp))
        _pip(
            "install", "--quiet", "--no-compile", "--target", str(target), *platform,
            "--no-deps", str(wheel),
        )  # fmt: skip
    shutil.rmtree(target / "bin", ignore_errors=True)
    # zstandard's wheel carries a second backend for cffi, which is not installed.
    backend = target / "zstandard"
    for dead in (*backend.glob("_cffi.*.so"), backend / "backend_cffi.py"):
        dead.unlink(missing_ok=True)
    # Wheels may ship their extensions with debug information (zstandard's is
    # 12 MB, 1 MB without): strip it, as any image build does.
    extensions = sorted(target.rglob("*.so"))
    subprocess.run(
        ["strip", "--strip-debug", *map(str, extensions)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    add_libraries(tree, root, extensions)
    launcher = root / LAUNCHER
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(_LAUNCHER_TEXT)
    launcher.chmod(0o755)
    compile_tree(root, target)
    check = run_guest_python(
        root,
        "-I",
        "-c",
        "import zstandard, kubesolo_entrypoints.cli, kubesolo_adapters.tuf, tuf.ngclient;"
        " from cryptography.hazmat.primitives.asymmetric import ed25519;"
        " zstandard.ZstdDecompressor(); ed25519.Ed25519PrivateKey.generate()",
    )
    if check.returncode != 0:
        raise RuntimeError(f"the guest's python cannot import the agent: {check.stderr[-800:]}")
    return sorted(p.name.removesuffix(".dist-info") for p in target.glob("*.dist-info"))
