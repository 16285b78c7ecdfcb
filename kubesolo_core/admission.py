"""May a release go to the passive slot now? The preflight, asked of the ports.

``apply`` refuses with this report before any state change; ``check`` shows
the same refusals as ``held_back`` without saving anything, so an operator
(and ``check --json``) sees why a release would be held back before an apply.
"""

from __future__ import annotations

from kubesolo_core.errors import KubesoloError, PreflightRefused
from kubesolo_core.policies import PreflightReport, preflight
from kubesolo_core.ports import Kube, SlotStore, StateStore
from kubesolo_core.refusals import Refusal
from kubesolo_core.release import Release
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version

__all__ = ["admission", "admit", "held_back"]


def admission(
    release: Release,
    current: Version | None,
    target: Slot,
    *,
    slots: SlotStore,
    kube: Kube,
    force: bool = False,
    allow_downgrade: bool = False,
    floor_version: Version | None = None,
) -> PreflightReport:
    """The preflight of writing ``release`` to ``target`` (read-only)."""
    info = slots.describe(target)
    return preflight(
        release=release,
        current_version=current,
        slot_capacity=info.size if info.exists else None,
        slot_problem=f"slot {target.value} ({info.spec or 'no spec'}): {info.problem}"
        if info.problem
        else None,
        node_labels=kube.node_labels(),
        force=force,
        allow_downgrade=allow_downgrade,
        floor_version=floor_version,
    )


def admit(
    release: Release,
    current: Version | None,
    target: Slot,
    *,
    slots: SlotStore,
    kube: Kube,
    force: bool,
    allow_downgrade: bool,
    floor_version: Version | None,
) -> PreflightReport:
    """:func:`admission`, or PreflightRefused with each refusal's machine reason."""
    report = admission(
        release,
        current,
        target,
        slots=slots,
        kube=kube,
        force=force,
        allow_downgrade=allow_downgrade,
        floor_version=floor_version,
    )
    if not report.ok:
        raise PreflightRefused(report.refusals, way_out=report.way_out, codes=report.codes)
    return report


def held_back(
    release: Release,
    current: Version | None,
    target: Slot,
    *,
    slots: SlotStore,
    kube: Kube,
    store: StateStore,
) -> tuple[Refusal, ...]:
    """What apply's preflight would refuse now; nothing when ``release`` already runs."""
    if release.version == current:
        return ()
    try:
        floor = store.load().floor_version
    except KubesoloError:
        floor = None
    return admission(
        release, current, target, slots=slots, kube=kube, floor_version=floor
    ).held_back
