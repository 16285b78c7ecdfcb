"""The codec's shortcuts past cattrs give exactly what the cattrs converter gives.

``status`` reads state.json without importing cattrs (kubesolo_core/codec.py):
:func:`_structure_exact` takes a document whose values all have their exact
JSON type, and :func:`_plain` unstructures values field by field. Each is held
here against the converter itself, on documents of every shape: where the
shortcut answers, cattrs must answer the same; where the shortcut declines,
cattrs decides (converts or names the culprit); and what :func:`dumps_state`
writes must always take the shortcut, or the start-up gain is quietly lost.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubesolo_core import codec
from kubesolo_core.bootmodel import GrubModel, TrybootModel
from kubesolo_core.errors import CorruptState
from kubesolo_core.lifecycle import SCHEMA_VERSION, Phase, UpdateState
from kubesolo_core.release import parse_release
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version

FIELDS = [a.name for a in attrs.fields(UpdateState)]

versions = st.sampled_from(["1.0.0", "1.2.3", "2.0.0-rc.1", "10.20.30", "1.0"]).map(Version.parse)
times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))]),
)
tokens = st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=20)
#: what codec._check_fields lets through: printable text (no control characters)
sentences = st.text(
    st.characters(categories=["L", "N", "P", "S"], include_characters=" ").filter(
        lambda c: c.isprintable()
    ),
    max_size=50,
)


@st.composite
def states(draw: st.DrawFn) -> UpdateState:
    """Any UpdateState the agent could save."""
    maybe = st.none
    return UpdateState(
        phase=draw(st.sampled_from(Phase)),
        from_version=draw(maybe() | versions),
        to_version=draw(maybe() | versions),
        target_slot=draw(maybe() | st.sampled_from(Slot)),
        attempt_count=draw(st.integers(0, 1000)),
        last_error=draw(maybe() | sentences),
        started_at=draw(maybe() | times),
        updated_at=draw(maybe() | times),
        health_check_failures=draw(st.integers(0, 50)),
        activation_boot_id=draw(maybe() | tokens),
        image_sha256=draw(maybe() | tokens),
        floor_version=draw(maybe() | versions),
        downgrade_allowed=draw(st.booleans()),
    )


#: JSON values of every type, including the right ones for some field and wrong ones
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [p.value for p in Phase]
        + ["A", "B", "C", "1.2.3", "v1", "", "2024-05-01T10:00:00", "2024-05-01T10:00:00+02:00"]
        + ["3", "true", "1.0.0-", "not a time", "SUCCESS", "a\x1bb"]
    ),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A decoded state document: a valid one with random keys replaced, dropped or added."""
    body = codec.unstructure_state(draw(states()))
    del body["schema_version"]
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.booleans()):
            body[key] = draw(json_values)
        else:
            body.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["extra", "schema", "Phase"]))] = draw(json_values)
    return body


def same(a: UpdateState, b: UpdateState) -> bool:
    """Equal, field by field, with the same types and the same version text."""
    return all(
        type(getattr(a, n)) is type(getattr(b, n)) and repr(getattr(a, n)) == repr(getattr(b, n))
        for n in FIELDS
    )


def by_cattrs(body: dict[str, Any]) -> UpdateState | None:
    try:
        state: UpdateState = codec._converter().structure(dict(body), UpdateState)
    except Exception:  # any refusal: the shortcut must have declined it too
        return None
    return state


@settings(max_examples=500, deadline=None)
@given(bodies())
def test_the_shortcut_reads_what_cattrs_reads_or_leaves_it_to_cattrs(body: dict[str, Any]) -> None:
    fast = codec._structure_exact(body)
    if fast is not None:
        ref = by_cattrs(body)
        assert ref is not None, f"cattrs refuses what the shortcut took: {body}"
        assert same(fast, ref)


@settings(max_examples=300, deadline=None)
@given(states())
def test_what_dumps_state_writes_takes_the_shortcut(state: UpdateState) -> None:
    doc = json.loads(codec.dumps_state(state))
    assert doc.pop("schema_version") == SCHEMA_VERSION
    fast = codec._structure_exact(doc)
    assert fast is not None
    ref = by_cattrs(doc)
    assert ref is not None
    assert same(fast, ref)
    assert same(codec.loads_state(codec.dumps_state(state)), ref)


def test_an_old_schema_also_takes_the_shortcut_after_its_migrations() -> None:
    doc = {"schema_version": 1, "phase": "success", "to_version": "1.2.0", "attempt_count": 1}
    body = codec.MIGRATIONS[2](
        codec.MIGRATIONS[1]({k: v for k, v in doc.items() if k != "schema_version"})
    )
    assert codec._structure_exact(body) is not None
    assert codec.structure_state(doc).floor_version == Version.parse("1.2.0")


@pytest.mark.parametrize(
    ("body", "culprit"),
    [
        ({"attempt_count": "3"}, None),  # cattrs converts what the shortcut leaves it
        ({"downgrade_allowed": 1}, None),
        ({"phase": "sleeping"}, "phase"),
        ({"bogus": 1}, "bogus"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"target_slot": "C"}, "target_slot"),
    ],
)
def test_what_the_shortcut_declines_cattrs_decides(
    body: dict[str, Any], culprit: str | None
) -> None:
    assert codec._structure_exact(body) is None
    doc = {"schema_version": SCHEMA_VERSION, **body}
    if culprit is None:
        ref = by_cattrs(body)
        assert ref is not None
        assert same(codec.structure_state(doc), ref)
    else:
        with pytest.raises(CorruptState, match=culprit):
            codec.structure_state(doc)


def test_the_shortcut_knows_every_field_of_the_state() -> None:
    # A field added to UpdateState without a reader would silently send every
    # load through cattrs (correct, but slow again): this says so.
    assert set(codec._EXACT) == set(FIELDS)


def cattrs_json(value: object) -> str:
    return json.dumps(codec._converter().unstructure(value), sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(states())
def test_states_unstructure_as_with_cattrs(state: UpdateState) -> None:
    ours = codec.unstructure_state(state)
    assert json.dumps(ours, sort_keys=True) == json.dumps(
        {"schema_version": SCHEMA_VERSION, **json.loads(cattrs_json(state))}, sort_keys=True
    )


envs = st.dictionaries(
    st.sampled_from(["active_slot", "boot_counter", "boot_success", "other"]),
    st.sampled_from(["A", "B", "0", "1", "2", "3", "", "x"]),
)


@settings(max_examples=300, deadline=None)
@given(envs)
def test_boot_views_unstructure_as_with_cattrs(env: dict[str, str]) -> None:
    view = GrubModel().view(env)
    assert json.dumps(codec.to_jsonable(view), sort_keys=True) == cattrs_json(view)


@pytest.mark.parametrize("committed", list(Slot))
def test_tryboot_views_unstructure_as_with_cattrs(committed: Slot) -> None:
    model = TrybootModel()
    env = model.initial(committed)
    for step in (lambda e: e, lambda e: model.activate(e, committed.other())):
        view = model.view(step(env))
        assert json.dumps(codec.to_jsonable(view), sort_keys=True) == cattrs_json(view)


def test_a_release_unstructures_as_with_cattrs() -> None:
    doc = {
        "schema": 1,
        "version": "1.3.0",
        "image": {
            "url": "os.img.gz",
            "sha256": "a" * 64,
            "size": 10,
            "compression": "gzip",
            "raw_size": 20,
            "raw_sha256": "b" * 64,
        },
        "min_from_version": "1.0.0",
    }
    release = parse_release(json.dumps(doc).encode())
    assert json.dumps(codec.to_jsonable(release), sort_keys=True) == cattrs_json(release)
