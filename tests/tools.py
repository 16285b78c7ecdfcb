"""Tool and privilege checks for the real-thing tiers.

On a developer's laptop a missing tool skips the test and says which tool.
In CI (``CI`` set) nothing may be skipped: the same check fails instead, so a
missing install step in .ci/run turns CI red rather than quietly green.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def code_under_test() -> dict[str, str]:
    """The environment entry that makes a child ``python -m kubesolo_entrypoints`` run this code.

    A child started with an environment of its own would otherwise import the
    installed package, which is not the code under test when the suite runs on
    another copy (scripts/mutants.py plants bugs in a scratch copy).
    """
    import kubesolo_entrypoints

    return {"PYTHONPATH": str(Path(kubesolo_entrypoints.__file__).resolve().parents[1])}


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} (CI must not skip: fix .ci/run)", pytrace=False)
    pytest.skip(f"{what}: install it to run this test (.ci/run shows how)")


def require_tool(*names: str) -> None:
    """Skip (laptop) or fail (CI) unless every tool in ``names`` is on PATH."""
    for name in names:
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            _missing(f"tool {name!r} not found")


def require_root() -> None:
    """Loop devices and mounts need root."""
    if os.geteuid() != 0:
        _missing("needs root (loop devices, mounts)")


def require(ok: bool, what: str) -> None:
    """Skip (laptop) or fail (CI) unless ``ok``; ``what`` names the missing thing and the fix."""
    if not ok:
        _missing(what)
