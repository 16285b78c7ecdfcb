"""What the commands print: one JSON document per ``--json`` run, or a short human report.

The JSON shapes are part of the operator's contract (the init script reads
``reboot_required`` from ``status --json``); fields are only ever added.

``status --json``::

    {"bootloader": "grub", "booted_slot": "A", "next_boot": "B",
     "reboot_required": true, "pending": "slot B is activated; reboot ...",
     "slots": [{"slot": "A", "spec": "PARTLABEL=KSOLOA", "device": "/dev/sda2",
                "size": 1073741824, "exists": true, "version": "1.2.0",
                "next_boot": false, "active": false, "booted": true, "committed": true,
                "trial": false}, ...],
     "boot": {"kind": "grub", "committed_slot": "A", "trial_slot": "B",
              "boot_counter": 3, "boot_success": false, "raw": {...}, ...},
     "state": {"schema_version": 2, "phase": "activated", ...},
     "reconciliation": {"verdict": "pending_reboot", "message": "..."}}

``next_boot`` marks the slot the bootloader boots next (the trial slot while
a trial is pending, else the committed one; ``active`` is the same fact under
its first name, kept for scripts); ``committed`` is the slot it falls back to;
``booted`` is the slot the running kernel came from. GRUB's own variable
``active_slot`` is the bootloader's word and appears only in ``boot.raw``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from kubesolo_core.codec import to_jsonable, unstructure_state

if TYPE_CHECKING:
    from kubesolo_core.chunks import AdaptiveStats
    from kubesolo_core.policies import HealthReport
    from kubesolo_core.results import ApplyResult, CheckResult, HealthOutcome, StatusReport


def dumps(doc: Any) -> str:
    """The one JSON document a ``--json`` command prints."""
    return json.dumps(doc, indent=2, sort_keys=True)


def status_doc(report: StatusReport) -> dict[str, Any]:
    """``status --json``."""
    next_boot = report.boot.next_boot
    return {
        "bootloader": report.boot.kind,
        "booted_slot": report.booted_slot.value if report.booted_slot else None,
        "next_boot": next_boot.value,
        "reboot_required": report.reboot_required,
        "pending": report.reconciliation.message or None,
        "slots": [
            {
                "slot": row.info.slot.value,
                "spec": row.info.spec,
                "device": row.info.device,
                "size": row.info.size,
                "exists": row.info.exists,
                "problem": row.info.problem,
                "version": row.version,
                "next_boot": row.info.slot is next_boot,
                # the same fact under its 0.1 name, kept for scripts that read it
                "active": row.info.slot is next_boot,
                "booted": row.booted,
                "committed": row.committed,
                "trial": row.trial,
            }
            for row in report.slots
        ],
        "boot": to_jsonable(report.boot),
        "state": unstructure_state(report.state),
        "reconciliation": {
            "verdict": report.reconciliation.verdict.value,
            "message": report.reconciliation.message,
        },
    }


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value else "-"


def status_text(report: StatusReport, *, where: str = "") -> str:
    """A RAUC-status-like report: one screen, the running slot and the last attempt first."""
    boot = report.boot
    state = report.state
    lines = [f"Bootloader:  {boot.kind}" + (f" ({where})" if where else "")]
    booted = report.booted_slot
    lines.append(
        f"Booted:      slot {booted.value}"
        if booted
        else "Booted:      unknown (no kubesolo.slot= on the kernel command line)"
    )
    if boot.trial_slot is not None:
        left = f", {boot.boot_counter} trial boots left" if boot.boot_counter is not None else ""
        lines.append(
            f"Next boot:   slot {boot.trial_slot.value} (trial{left}; "
            f"falls back to slot {boot.committed_slot.value})"
        )
    else:
        lines.append(f"Next boot:   slot {boot.committed_slot.value} (committed)")
    lines.append("Slots:")
    for row in report.slots:
        marks = [
            name
            for name, on in (
                ("booted", row.booted),
                ("committed", row.committed),
                ("trial", row.trial),
            )
            if on
        ]
        if not row.info.exists:
            marks.append(f"MISSING ({row.info.problem})" if row.info.problem else "MISSING")
        where = row.info.spec
        if row.info.device and row.info.device != row.info.spec:
            where += f" -> {row.info.device}"
        lines.append(
            f"  {'*' if row.booted else ' '} {row.info.slot.value}  {row.version or '-':<12} "
            f"{where}  {', '.join(marks)}".rstrip()
        )
    target = state.target_slot.value if state.target_slot else "-"
    update = f"Update:      {state.phase.value}"
    if state.to_version:
        update += f" {state.from_version or '?'} -> {state.to_version} on slot {target}"
    if state.attempt_count:
        update += f", attempt {state.attempt_count}"
    if state.health_check_failures:
        update += f", {state.health_check_failures} failed health checks"
    lines.append(update)
    if state.started_at or state.updated_at:
        lines.append(
            f"             started {_when(state.started_at)}, updated {_when(state.updated_at)}"
        )
    if state.last_error:
        lines.append(f"Last error:  {state.last_error}")
    if report.reconciliation.message:
        lines.append(f"Note:        {report.reconciliation.message}")
    if report.reboot_required and not report.reconciliation.message:
        lines.append(f"Note:        reboot to run slot {boot.next_boot.value}")
    return "\n".join(lines)


def check_doc(result: CheckResult) -> dict[str, Any]:
    """``check --json``."""
    return {
        "current_version": str(result.current_version) if result.current_version else None,
        "available_version": str(result.available_version),
        "update_available": result.update_available,
        "reason": result.reason,
        "release": to_jsonable(result.release),
    }


def health_doc(outcome: HealthOutcome) -> dict[str, Any]:
    """``healthcheck --json``: one boolean and one reason per check, what it did, the state."""
    return {
        "healthy": outcome.healthy,
        "checks": {c.name: c.ok for c in outcome.report.checks},
        "reasons": {c.name: c.reason for c in outcome.report.checks if c.reason},
        "action": outcome.action,
        "reconciliation": outcome.reconciliation.verdict.value,
        "state": unstructure_state(outcome.state),
    }


def health_text(outcome: HealthOutcome) -> str:
    """One line per check, then what the agent did."""
    return "\n".join([*report_lines(outcome.report), f"=> {outcome.action}"])


def report_lines(report: HealthReport) -> list[str]:
    """``ok   name`` / ``FAIL name: reason`` lines."""
    return [
        f"{'ok  ' if c.ok else 'FAIL'} {c.name}" + (f": {c.reason}" if c.reason else "")
        for c in report.checks
    ]


def stats_doc(stats: AdaptiveStats) -> dict[str, Any]:
    """The byte figures of an apply (``apply --json`` and the last-apply record)."""
    return {
        "mode": stats.mode,
        "image_bytes": stats.image_size,
        "in_place_bytes": stats.in_place,
        "copied_bytes": stats.copied,
        "downloaded_bytes": stats.downloaded,
        "written_bytes": stats.written,
        "chunks": stats.chunks,
        "requests": stats.requests,
        "fallback": stats.fallback,
    }


def apply_doc(result: ApplyResult) -> dict[str, Any]:
    """``apply --json``."""
    return {
        "changed": result.changed,
        "message": result.message,
        "state": to_jsonable(unstructure_state(result.state)),
        "stats": stats_doc(result.stats) if result.stats is not None else None,
    }


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def stats_text(stats: AdaptiveStats) -> str:
    """One line: where the image's bytes came from and what was written."""
    if stats.mode == "adaptive":
        return (
            f"chunks: {_mib(stats.in_place)} already in place, {_mib(stats.copied)} copied "
            f"from the booted slot, {_mib(stats.downloaded)} downloaded "
            f"({stats.requests} of {stats.chunks} chunks), {_mib(stats.written)} written"
        )
    why = f" (chunks not used: {stats.fallback})" if stats.fallback else ""
    return f"full image: {_mib(stats.downloaded)} downloaded, {_mib(stats.written)} written{why}"
