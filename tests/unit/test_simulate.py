"""The simulator: reproducible, and its invariants can fail."""

from __future__ import annotations

from typing import Any

from kubesolo_adapters.fakes import MemoryBox, make_image, observe
from kubesolo_core.invariants import INVARIANTS, violations
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.simulate import run_simulation


def check_invariants(box: MemoryBox[Any], known: set[bytes], **seen: Any) -> list[str]:
    return violations(observe(box, known, **seen))


def test_simulation_holds_and_is_reproducible() -> None:
    a = run_simulation(runs=60, seed=7)
    b = run_simulation(runs=60, seed=7)
    assert a.violations == ()
    assert a.tally == b.tally and a.steps == b.steps
    assert a.tally["power cuts"] > 0 and a.tally["rollbacks recorded"] > 0
    assert a.tally["grub runs"] > 0 and a.tally["tryboot runs"] > 0
    assert run_simulation(runs=60, seed=8).tally != a.tally
    doc = a.to_json()
    assert doc["invariants"] == list(INVARIANTS) and doc["ok"] is True
    assert "sequences/s" in a.text()


def _fresh() -> tuple[MemoryBox, set[bytes]]:  # type: ignore[type-arg]
    box = MemoryBox.create("grub")
    return box, set(box.slots.contents.values())


def test_invariants_hold_on_a_fresh_box() -> None:
    box, known = _fresh()
    assert check_invariants(box, known) == []


def test_committed_slot_with_unverified_content_is_caught() -> None:
    box, known = _fresh()
    box.slots.contents[Slot.A] = make_image("1.0.0")[:100]  # torn
    assert any(v.startswith("committed") for v in check_invariants(box, known))


def test_boot_of_unverified_slot_is_caught() -> None:
    box, known = _fresh()
    box.slots.contents[Slot.B] = make_image("6.6.6")  # never published
    box.boot_env.activate(Slot.B)
    since = len(box.boot_log)
    box.reboot()
    booted = [(slot, box.slots.contents.get(slot)) for slot, _ in box.boot_log[since:]]
    assert any(v.startswith("verified_boots") for v in check_invariants(box, known, booted=booted))


def test_committing_an_unhealthy_image_is_caught() -> None:
    box, known = _fresh()
    sick = make_image("1.1.0", healthy=False)
    known.add(sick)
    box.slots.contents[Slot.B] = sick
    box.boot_env.force_rollback(Slot.B)  # committed without a health check
    assert any(v.startswith("healthy_commits") for v in check_invariants(box, known))


def test_unrecorded_bootloader_rollback_is_caught() -> None:
    box, known = _fresh()
    before = UpdateState(
        phase=Phase.ACTIVATED, to_version="1.1.0", target_slot=Slot.B, activation_boot_id="old"
    )
    box.store.save(before)  # the agent believes in a trial; the env is committed on A
    found = check_invariants(box, known, before=before)
    assert any(v.startswith("rollback_recorded") for v in found)


def test_state_that_does_not_load_and_counters_out_of_range() -> None:
    box, known = _fresh()
    box.boot_env.env = {**box.boot_env.env, "boot_counter": "7"}
    box.store.text = "{garbage"
    found = check_invariants(box, known)
    assert any(v.startswith("state_loads") for v in found)
    assert any(v.startswith("counters") for v in found)
