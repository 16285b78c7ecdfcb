"""cloud-init user-data -> update.conf: the ``updates:`` mapping, key for key.

KubeSolo OS reads its first-boot configuration from cloud-init user-data
(YAML, usually starting with ``#cloud-config``). The ``updates:`` mapping in
it uses exactly the keys of update.conf (``server``, ``healthcheck_url``,
``auto_rollback_after``, ``kube_system_settle``, ``slot_a``...); this module
checks each key and value with the same parser as update.conf and writes the
file. Dashes in keys are accepted and written as underscores (YAML authors
write both).

YAML: PyYAML is used when it is installed. Without it, JSON user-data works,
and so does the subset of YAML that a flat ``updates:`` mapping needs (a
top-level ``updates:`` line followed by indented ``key: value`` lines, with
comments and quoted scalars); anything beyond that is refused with a
message naming PyYAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubesolo_core.errors import ConfigError

SECTION = "updates"


def _scalar(text: str) -> str:
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    # An unquoted YAML scalar ends at " #" (a comment).
    return value.split(" #", 1)[0].rstrip()


def _mini_yaml(text: str, source: str) -> dict[str, Any]:
    """The top-level ``updates:`` mapping of simple YAML (no PyYAML needed)."""
    found: dict[str, Any] | None = None
    indent: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        depth = len(line) - len(line.lstrip(" "))
        if depth == 0:
            if found is not None and indent is not None:
                break  # the next top-level key ends the section
            key = line.split(":", 1)[0].strip()
            if key == SECTION:
                rest = line.split(":", 1)[1].strip() if ":" in line else ""
                if rest and not rest.startswith("#"):
                    raise ConfigError(
                        f"{source}:{number}: flow-style 'updates:' needs PyYAML",
                        way_out="pip install pyyaml, or write one key: value per line",
                    )
                found = {}
            continue
        if found is None:
            continue
        if indent is None:
            indent = depth
        if depth != indent or ":" not in line:
            raise ConfigError(
                f"{source}:{number}: this YAML is beyond the built-in reader",
                way_out="pip install pyyaml, or use flat 'key: value' lines under updates:",
            )
        key, _, value = line.strip().partition(":")
        found[key.strip()] = _scalar(value)
    if found is None:
        raise ConfigError(f"{source}: no top-level 'updates:' mapping", way_out="add one")
    return {"updates": found}


def load_userdata(text: str, source: str = "user-data") -> dict[str, Any]:
    """Parse user-data (YAML or JSON) into a mapping."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            return _mini_yaml(text, source)
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: user-data is not a mapping")
    return doc


def conf_from_mapping(updates: Mapping[str, Any], source: str = "updates") -> str:
    """update.conf text for an ``updates:`` mapping; every key and value is checked."""
    from kubesolo_entrypoints.config import NOT_IN_FILE, PARSERS, parse_value

    lines = ["# generated from cloud-init user-data (updates:) by kubesolo-update"]
    for raw_key, value in updates.items():
        key = str(raw_key).strip().replace("-", "_")
        if key not in PARSERS or key in NOT_IN_FILE:
            import difflib

            close = difflib.get_close_matches(key, list(PARSERS), n=1)
            raise ConfigError(
                f"{source}: unknown key {raw_key!r}",
                way_out=f"did you mean {close[0]!r}?" if close else "see update.conf keys",
            )
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif value is None:
            text = ""
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            raise ConfigError(f"{source}.{key}: expected a scalar, got {type(value).__name__}")
        if "\n" in text:
            raise ConfigError(f"{source}.{key}: a value cannot span lines")
        parse_value(key, text, f"{source}.{key}")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def conf_from_userdata(path: Path) -> str:
    """Read cloud-init user-data at ``path`` and return update.conf text."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"user-data {path} cannot be read: {reason}", way_out="check the path"
        ) from None
    doc = load_userdata(text, str(path))
    updates = doc.get(SECTION)
    if not isinstance(updates, dict):
        raise ConfigError(
            f"{path}: no 'updates:' mapping in the user-data",
            way_out="add updates: with server: and friends",
        )
    return conf_from_mapping(updates, f"{path}: updates")
