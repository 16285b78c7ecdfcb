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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubesolo_core.results import ApplyResult, HealthOutcome
    from kubesolo_core.versions import Version

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
    from kubesolo_adapters.inputs import read_input

    try:
        doc = json.loads(read_input(path, limit=1 << 16))
    except (OSError, ValueError, RecursionError):
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


def note_check(
    state: Path,
    now: dt.datetime,
    *,
    current: Version | None = None,
    available: Version | None = None,
    update_available: bool = False,
    error: BaseException | None = None,
    refusals: Sequence[str] = (),
    unsigned: bool = False,
) -> None:
    """Record what the last ``check`` (or ``apply``) heard from the server, or its error.

    ``refusals`` are the machine reasons it was held back or refused for (the
    metric ``kubesolo_update_refusal{reason}``), ``unsigned`` whether releases
    were trusted as served.
    """
    if error is not None:
        doc: dict[str, Any] = {"ok": False, "error": str(error)}
    else:
        doc = {
            "ok": True,
            "current_version": None if current is None else str(current),
            "available_version": None if available is None else str(available),
            "update_available": update_available,
        }
    doc.update(refusals=list(refusals), unsigned=unsigned)
    write_record(record_path(state, CHECK_FILE), doc, now)


def note_health(state: Path, now: dt.datetime, outcome: HealthOutcome) -> None:
    """Record the last ``healthcheck``: healthy or not, one boolean per check."""
    doc = {"healthy": outcome.healthy, "checks": {c.name: c.ok for c in outcome.report.checks}}
    write_record(record_path(state, HEALTH_FILE), doc, now)


def note_apply(state: Path, now: dt.datetime, result: ApplyResult) -> None:
    """Record the byte figures of the last apply that wrote a slot (for the metrics)."""
    from kubesolo_entrypoints.render import stats_doc

    if result.stats is None:
        return
    version = result.state.to_version
    doc = {"version": None if version is None else str(version), **stats_doc(result.stats)}
    write_record(record_path(state, APPLY_FILE), doc, now)
