"""Fixtures shared by contract test files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile import HostileBox, hostile_box


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileBox]:
    """A sandboxed box for one hostile-input case (tests/hostile.py), its server stopped after."""
    with hostile_box(tmp_path) as box:
        yield box
