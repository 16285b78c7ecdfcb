"""cloud-init user-data -> update.conf: the ``updates:`` mapping, key for key.

KubeSolo OS reads its first-boot configuration from cloud-init user-data
(YAML, usually starting with ``#cloud-config``). The ``updates:`` mapping in
it uses exactly the keys of update.conf (``server``, ``healthcheck_url``,
``auto_rollback_after``, ``kube_system_settle``, ``slot_a``...); this module
checks each key and value with the same parser as update.conf and writes the
file. Dashes in keys are accepted and written as underscores (YAML authors
write both).

YAML is read with PyYAML's ``safe_load`` (no Python objects, no tags that
run code): real user-data with anchors, merge keys, block scalars and lists
parses as cloud-init itself would read it. JSON user-data is YAML too.

A value must be one line of printable text: a carriage return, a line feed
or a Unicode line separator inside a value (easy to write in YAML:
``"...\\r..."``, or a ``|`` block) is refused naming the key, and the
update.conf writer (:func:`kubesolo_entrypoints.config.conf_line`) can never
emit a line the reader parses differently, so no value can smuggle another
key into update.conf.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubesolo_core.errors import ConfigError

SECTION = "updates"
#: user-data larger than this is not something a box should be handed
MAX_USERDATA = 4 << 20
#: an integer beyond this is no setting of ours (and str() of a huge int may raise)
_MAX_INT = 10**18


def load_userdata(text: str, source: str = "user-data") -> dict[str, Any]:
    """Parse user-data (YAML, or JSON, which is YAML) into a mapping."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"{source}: not valid YAML: {detail[:300]}",
            way_out="check the user-data with a YAML linter (cloud-init schema)",
        ) from None
    except (ValueError, RecursionError, OverflowError) as exc:
        # a number past Python's int-string limit, nesting past the stack, ...
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ConfigError(f"{source}: not valid YAML: {reason}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: user-data is not a mapping (#cloud-config)")
    return doc


def _scalar_text(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, int):
        if not -_MAX_INT < value < _MAX_INT:
            raise ConfigError(f"{where}: the number is too large to be a setting")
        return str(value)
    if isinstance(value, float | str):
        return str(value)
    raise ConfigError(
        f"{where}: expected a scalar (text or a number), got a {type(value).__name__}",
        way_out="write one value; quote it if YAML reads it as something else",
    )


def conf_from_mapping(updates: Mapping[Any, Any], source: str = "updates") -> str:
    """update.conf text for an ``updates:`` mapping; every key and value is checked."""
    from kubesolo_entrypoints.config import NOT_IN_FILE, PARSERS, conf_line, parse_value

    lines = ["# generated from cloud-init user-data (updates:) by kubesolo-update"]
    for raw_key, value in updates.items():
        key = str(raw_key).strip().replace("-", "_")
        if key not in PARSERS or key in NOT_IN_FILE:
            import difflib

            close = difflib.get_close_matches(key, list(PARSERS), n=1)
            shown = repr(raw_key) if len(repr(raw_key)) <= 60 else repr(raw_key)[:60] + "..."
            raise ConfigError(
                f"{source}: unknown key {shown}",
                way_out=f"did you mean {close[0]!r}?" if close else "see update.conf keys",
            )
        where = f"{source}.{key}"
        text = _scalar_text(value, where)
        parse_value(key, text, where)  # control characters, line breaks, then the key's parser
        lines.append(conf_line(key, text, where))
    return "\n".join(lines) + "\n"


def conf_from_userdata(path: Path) -> str:
    """Read cloud-init user-data at ``path`` and return update.conf text."""
    from kubesolo_adapters.inputs import read_input

    try:
        text = read_input(path, limit=MAX_USERDATA).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"user-data {path} cannot be read: {reason}",
            way_out="give the path of a regular UTF-8 user-data file",
        ) from None
    doc = load_userdata(text, str(path))
    updates = doc.get(SECTION)
    if not isinstance(updates, dict):
        raise ConfigError(
            f"{path}: no 'updates:' mapping in the user-data",
            way_out="add updates: with server: and friends",
        )
    return conf_from_mapping(updates, f"{path}: updates")
