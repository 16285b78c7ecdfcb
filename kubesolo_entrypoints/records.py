"""Small side records next to state.json: the last ``check``, ``healthcheck`` and ``apply``.

``check`` is a passive query that must not change the UpdateState, yet an
operator's dashboard wants to know when the box last asked the server and
what it heard, and which health checks failed last. These records hold just
that, in their own files (``last-check.json``, ``last-health.json``), written
atomically and best-effort: a box whose data partition is read-only still
updates, it only loses these metrics.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

CHECK_FILE = "last-check.json"
HEALTH_FILE = "last-health.json"
#: the byte figures of the last apply that wrote a slot (adaptive or full)
APPLY_FILE = "last-apply.json"


def record_path(state: Path, name: str) -> Path:
    """The path of record ``name`` next to the state file ``state``."""
    return state.with_name(name)


def write_record(path: Path, doc: dict[str, Any], now: dt.datetime) -> str | None:
    """Write ``doc`` (stamped ``at``) atomically; the error text, or None on success."""
    from kubesolo_adapters.atomic import atomic_write

    body = {"at": now.isoformat(), **doc}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(body, sort_keys=True) + "\n").encode())
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, None when missing or unreadable (never an error)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def record_time(doc: dict[str, Any] | None) -> float | None:
    """The ``at`` stamp of a record as a Unix time, None if absent or malformed."""
    if not doc or not isinstance(doc.get("at"), str):
        return None
    try:
        return dt.datetime.fromisoformat(doc["at"]).timestamp()
    except ValueError:
        return None
