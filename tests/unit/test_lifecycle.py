"""The lifecycle rules of DESIGN.md 2.2, the table as data, the state codec."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kubesolo_core.codec import dumps_state, loads_state, structure_state
from kubesolo_core.errors import CorruptState, IllegalTransition
from kubesolo_core.lifecycle import SCHEMA_VERSION, TRANSITIONS, Phase, UpdateState, transition
from kubesolo_core.slots import Slot

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


#: DESIGN.md 2.2's table, written out here so that a change of the code's
#: table is a change this test sees (not derived from TRANSITIONS)
ALLOWED = {
    "idle": {"checking"},
    "checking": {"checking", "downloading", "failed"},
    "downloading": {"checking", "staged", "failed"},
    "staged": {"checking", "activated", "failed"},
    "activated": {"activated", "verifying", "rolled_back", "failed"},
    "verifying": {"activated", "verifying", "success", "rolled_back"},
    "success": {"checking", "rolled_back"},
    "rolled_back": {"checking"},
    "failed": {"checking"},
}


def test_nine_phases_and_the_table_as_designed() -> None:
    assert {p.value for p in Phase} == set(ALLOWED)
    assert {src.value: {d.value for d in dst} for src, dst in TRANSITIONS.items()} == ALLOWED


@pytest.mark.parametrize("src", list(Phase))
@pytest.mark.parametrize("dst", list(Phase))
def test_table_is_enforced(src: Phase, dst: Phase) -> None:
    state = UpdateState(phase=src, target_slot=Slot.B, to_version="1.1.0")
    if dst.value in ALLOWED[src.value]:
        assert transition(state, dst, T0, error="why").phase is dst
    else:
        with pytest.raises(IllegalTransition, match=f"{src.value} to {dst.value}"):
            transition(state, dst, T0, error="why")


def test_attempt_count_bumps_for_the_same_target_and_resets_for_a_new_one() -> None:
    s = transition(UpdateState(), Phase.CHECKING, T0, to_version="1.1.0")
    assert s.attempt_count == 1
    s = transition(s, Phase.FAILED, T0, error="network")
    s = transition(s, Phase.CHECKING, T1, to_version="1.1.0")
    assert s.attempt_count == 2
    s = transition(s, Phase.CHECKING, T1, to_version="1.2.0")
    assert s.attempt_count == 1


def test_timestamps_come_from_the_passed_in_time() -> None:
    s = transition(UpdateState(), Phase.CHECKING, T0, to_version="1.1.0")
    assert (s.started_at, s.updated_at) == (T0, T0)
    s = transition(s, Phase.DOWNLOADING, T1)
    assert (s.started_at, s.updated_at) == (T0, T1)


def test_failed_sets_and_success_clears_last_error() -> None:
    s = transition(UpdateState(), Phase.CHECKING, T0, to_version="1.1.0")
    with pytest.raises(IllegalTransition, match="must say why"):
        transition(s, Phase.FAILED, T0)
    failed = transition(s, Phase.FAILED, T0, error="disk full")
    assert failed.last_error == "disk full"
    s = UpdateState(phase=Phase.VERIFYING, last_error="old", health_check_failures=2)
    done = transition(s, Phase.SUCCESS, T1)
    assert (done.last_error, done.health_check_failures) == (None, 0)


def test_state_round_trips_through_json() -> None:
    s = UpdateState(
        phase=Phase.ACTIVATED,
        from_version="1.0.0",
        to_version="1.1.0",
        target_slot=Slot.B,
        attempt_count=2,
        started_at=T0,
        updated_at=T1,
        activation_boot_id="abc",
    )
    text = dumps_state(s)
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert loads_state(text) == s


def test_schema_1_documents_are_migrated() -> None:
    doc = {
        "phase": "staged",
        "from_version": "1.0.0",
        "to_version": "1.1.0",
        "target_slot": "B",
        "attempt_count": 1,
        "last_error": None,
        "started_at": "2026-03-01T12:00:00+00:00",
        "updated_at": None,
        "health_check_failures": 0,
    }
    state = structure_state(doc)
    assert state.phase is Phase.STAGED and state.activation_boot_id is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ('{"phase": "stag', "not JSON"),
        ("[]", "JSON object"),
        ('{"schema_version": 99}', "newer"),
        ('{"schema_version": 2, "phase": "exploded"}', "phase"),
        ('{"schema_version": 2, "attempt_count": "many"}', "attempt_count"),
        ('{"schema_version": 2, "surprise": 1}', "surprise"),
    ],
)
def test_corrupt_state_is_one_readable_error(text: str, needle: str) -> None:
    with pytest.raises(CorruptState, match=needle):
        loads_state(text, source="/var/lib/kubesolo/update/state.json")
