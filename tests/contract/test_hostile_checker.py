"""The hostile-input checker (tests/hostile.py): it passes a sane run and catches bad ones."""

from __future__ import annotations

import pytest

from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from tests.hostile import HostileBox, check


def test_a_sane_apply_passes_the_checker(hostile: HostileBox) -> None:
    result = check(hostile, ["apply"], code=0, culprit="1.1.0 staged on slot B", phase=Phase.STAGED)
    assert result.error_lines == []


def test_the_checker_sees_a_written_booted_slot(hostile: HostileBox) -> None:
    # slot_b names slot A's file by another spelling: today apply writes the booted slot;
    # whatever the code does, the checker must never call that a pass.
    hostile.flags["slot_b"] = str(hostile.slot(Slot.A).parent / "." / hostile.slot(Slot.A).name)
    before = hostile.slot(Slot.A).read_bytes()
    try:
        check(hostile, ["apply"], code=2, culprit="slot_b")
    except AssertionError:
        return  # the checker caught something (wrong code, or slot A written)
    assert hostile.slot(Slot.A).read_bytes() == before


def test_the_checker_sees_a_changed_env(hostile: HostileBox) -> None:
    from kubesolo_adapters.grubenvfile import PythonBackend

    check(hostile, ["apply"], code=0, phase=Phase.STAGED)
    with pytest.raises(AssertionError, match="GRUB env changed"):
        check(hostile, ["activate"], code=0)
    assert PythonBackend(hostile.grubenv).read()["active_slot"] == "B"


def test_the_checker_catches_a_hang(hostile: HostileBox) -> None:
    hostile.flags["server"] = hostile.server.url("/release.json")
    with pytest.raises(AssertionError, match="hung"):
        hostile.run("status", timeout=0.01)
