"""The hostile-input checker (tests/hostile.py): it passes a sane run and catches bad ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from tests.hostile import HostileBox, check, hostile_box


@pytest.fixture
def box(tmp_path: Path) -> Iterator[HostileBox]:
    with hostile_box(tmp_path) as b:
        yield b


def test_a_sane_apply_passes_the_checker(box: HostileBox) -> None:
    result = check(box, ["apply"], code=0, culprit="1.1.0 staged on slot B", phase=Phase.STAGED)
    assert result.error_lines == []


def test_the_checker_sees_a_written_booted_slot(box: HostileBox) -> None:
    # slot_b names slot A's file by another spelling: today apply writes the booted slot;
    # whatever the code does, the checker must never call that a pass.
    box.flags["slot_b"] = str(box.slot(Slot.A).parent / "." / box.slot(Slot.A).name)
    before = box.slot(Slot.A).read_bytes()
    try:
        check(box, ["apply"], code=2, culprit="slot_b")
    except AssertionError:
        return  # the checker caught something (wrong code, or slot A written)
    assert box.slot(Slot.A).read_bytes() == before


def test_the_checker_sees_a_changed_env(box: HostileBox) -> None:
    from kubesolo_adapters.grubenv import PythonBackend

    check(box, ["apply"], code=0, phase=Phase.STAGED)
    with pytest.raises(AssertionError, match="GRUB env changed"):
        check(box, ["activate"], code=0)
    assert PythonBackend(box.grubenv).read()["active_slot"] == "B"


def test_the_checker_catches_a_hang(box: HostileBox) -> None:
    box.flags["server"] = box.server.url("/release.json")
    with pytest.raises(AssertionError, match="hung"):
        box.run("status", timeout=0.01)
