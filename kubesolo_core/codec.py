"""state.json's format: a private cattrs converter, a schema version, migrations.

The encoded document is ``{"schema_version": N, ...fields}``. Older documents
are migrated step by step (``MIGRATIONS[n]`` takes a schema-n mapping to
n+1); a newer or malformed one raises :class:`CorruptState` with one readable
sentence. Encoding to text is pure (json); the StateStore adapters do the I/O.

A document that loads is also sane: versions are Version values (parsed,
so bounded: see :mod:`kubesolo_core.versions`), counts are small and not negative, and
no text field holds a control character (``status`` prints them on an
operator's terminal). :func:`looks_like_state` tells a damaged state file of
ours (set aside and recovered from) from some other file that ``--state``
points at by mistake (left alone).

cattrs is the reference, kept off the hot path (importing it and building
its structuring code cost ``status --json`` more than its own work; see
bench/cli_startup.py): a document (after its migrations) whose every value
has its exact JSON type, as :func:`dumps_state` writes it, is read by
:func:`_structure_exact` with the converter's own hooks; any other value (a
wrong type, an unknown key) goes to the converter, which converts it or
names the culprit. Values go out through :func:`_plain`, field by field as
the converter unstructures them. tests/unit/test_codec_fast.py holds both
shortcuts equal to cattrs.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from kubesolo_core.errors import CorruptInput, CorruptState
from kubesolo_core.lifecycle import SCHEMA_VERSION, Phase, UpdateState
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version

if TYPE_CHECKING:
    import cattrs


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _structure_version(value: Any, _: type) -> Version:
    if not isinstance(value, str):
        raise ValueError(f"expected a version string, got {value!r}")
    try:
        return Version.parse(value)
    except CorruptInput as exc:
        raise ValueError(exc.message) from None


@functools.cache
def _converter() -> cattrs.Converter:
    """The private cattrs converter (built on first use: see the module docstring)."""
    from cattrs.preconf.json import make_converter

    converter = make_converter(forbid_extra_keys=True)
    converter.register_structure_hook(dt.datetime, _structure_datetime)
    converter.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
    # A version is a Version from the moment it leaves the codec; on disk it is its text.
    converter.register_structure_hook(Version, _structure_version)
    converter.register_unstructure_hook(Version, str)
    return converter


# Readers of the values dumps_state writes, with the converter's own hooks. A
# value of any other JSON type raises ValueError here and is left to cattrs,
# which may convert it ("3" to 3) or names it.


def _text(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(value)
    return value


def _count(value: Any) -> int:
    if type(value) is not int:  # not a bool either
        raise ValueError(value)
    return value


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(value)
    return value


def _or_none(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else read(value)


_EXACT: dict[str, Callable[[Any], Any]] = {
    "phase": lambda value: Phase(_text(value)),
    "from_version": _or_none(lambda value: _structure_version(value, Version)),
    "to_version": _or_none(lambda value: _structure_version(value, Version)),
    "target_slot": _or_none(lambda value: Slot(_text(value))),
    "attempt_count": _count,
    "last_error": _or_none(_text),
    "started_at": _or_none(lambda value: _structure_datetime(value, dt.datetime)),
    "updated_at": _or_none(lambda value: _structure_datetime(value, dt.datetime)),
    "health_check_failures": _count,
    "activation_boot_id": _or_none(_text),
    "image_sha256": _or_none(_text),
    "floor_version": _or_none(lambda value: _structure_version(value, Version)),
    "downgrade_allowed": _flag,
}


def _structure_exact(body: Mapping[str, Any]) -> UpdateState | None:
    """UpdateState from a current-schema body when every value has its exact type, else None.

    None leaves the body to cattrs: it converts what it can and names what
    it cannot. A missing key takes the field's default, as with cattrs.
    """
    fields: dict[str, Any] = {}
    for key, value in body.items():
        read = _EXACT.get(key)
        if read is None:
            return None
        try:
            fields[key] = read(value)
        except (ValueError, TypeError, KeyError):
            return None
    return UpdateState(**fields)


def _plain(value: Any) -> Any:
    """``value`` as the converter unstructures it; attrs values field by field."""
    if value is None or type(value) in (str, int, bool, float):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Version):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if attrs.has(type(value)):
        return {a.name: _plain(getattr(value, a.name)) for a in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _converter().unstructure(value)


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    # Schema 1 (the original agent) had neither the activation boot id nor the
    # verified image hash.
    return {**doc, "activation_boot_id": None, "image_sha256": None}


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    # Schema 3 adds the downgrade floor. A box that committed before it knew
    # about floors starts from its last committed version.
    floor = doc.get("to_version") if doc.get("phase") == "success" else None
    return {**doc, "floor_version": floor, "downgrade_allowed": False}


#: MIGRATIONS[n] upgrades a schema-n document to n+1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


#: the keys a state document of any schema may carry
STATE_KEYS = frozenset({"schema_version", *(a.name for a in attrs.fields(UpdateState))})
#: counts larger than this are not counts of anything the agent does
MAX_COUNT = 1_000_000
#: last_error is a sentence or two; the other text fields are short tokens
_MAX_TEXT = {"last_error": 4096}
_MAX_TOKEN = 128


def looks_like_state(data: bytes | str) -> bool:
    """Whether ``data`` is (a damaged copy of) a state file of ours.

    Yes for an empty file (a torn first write), a JSON object with any of
    our keys at the top, and text that does not parse but names one of our
    keys in quotes (a truncated file). No for anything else: another
    program's JSON, a binary, a text file.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if not raw.strip():
        return True
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return any(f'"{key}"'.encode() in raw for key in STATE_KEYS)
    return isinstance(doc, dict) and not STATE_KEYS.isdisjoint(doc)


def _check_fields(state: UpdateState, source: str) -> UpdateState:
    for name in ("attempt_count", "health_check_failures"):
        value = getattr(state, name)
        if not 0 <= value <= MAX_COUNT:
            raise CorruptState(f"{source}: {name} is {value}, not a count from 0 to {MAX_COUNT}")
    for name in ("last_error", "activation_boot_id", "image_sha256"):
        value = getattr(state, name)
        if value is None:
            continue
        limit = _MAX_TEXT.get(name, _MAX_TOKEN)
        if len(value) > limit:
            raise CorruptState(f"{source}: {name} is longer than {limit} characters")
        bad = next((c for c in value if not (c.isprintable() or c == " ")), None)
        if bad is not None:
            raise CorruptState(f"{source}: {name} holds the control character U+{ord(bad):04X}")
    return state


def unstructure_state(state: UpdateState) -> dict[str, Any]:
    """``state`` as a JSON-ready mapping with its schema version."""
    doc: dict[str, Any] = _plain(state)
    return {"schema_version": SCHEMA_VERSION, **doc}


def structure_state(doc: object, *, source: str = "state") -> UpdateState:
    """Migrate and validate a decoded document; CorruptState names ``source``."""
    if not isinstance(doc, dict):
        raise CorruptState(f"{source}: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptState(f"{source}: schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise CorruptState(
            f"{source}: schema_version {version} is newer than this agent's {SCHEMA_VERSION}",
            way_out="run the newer agent, or remove the file to start from idle",
        )
    body = {k: v for k, v in doc.items() if k != "schema_version"}
    while version < SCHEMA_VERSION:
        body = MIGRATIONS[version](body)
        version += 1
    state = _structure_exact(body)
    if state is None:
        state = _structure_cattrs(body, source)
    return _check_fields(state, source)


def _structure_cattrs(body: dict[str, Any], source: str) -> UpdateState:
    import cattrs

    try:
        state: UpdateState = _converter().structure(body, UpdateState)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        detail = "; ".join(_flatten(exc)) or str(exc)
        raise CorruptState(f"{source}: {detail[:500]}") from None
    return state


def _flatten(exc: BaseException) -> list[str]:
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc)
        return [str(m) for m in messages]
    return [f"{type(exc).__name__}: {exc}"]


def dumps_state(state: UpdateState) -> str:
    """The text of state.json for ``state``."""
    return json.dumps(unstructure_state(state), indent=2, sort_keys=True) + "\n"


def loads_state(text: str | bytes, *, source: str = "state") -> UpdateState:
    """Parse state.json text; CorruptState for anything that is not a valid state."""
    if not text or not text.strip():
        raise CorruptState(f"{source}: the file is empty")
    try:
        doc = json.loads(text)
    except RecursionError:
        raise CorruptState(f"{source}: not a state file: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptState(f"{source}: not JSON ({str(exc)[:200]})") from None
    return structure_state(doc, source=source)


def to_jsonable(value: object) -> Any:
    """Any attrs value of the core as JSON-ready data (for --json output)."""
    return _plain(value)
