"""Pure policies: preflight, health aggregation, auto-rollback (DESIGN.md 2.3)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from kubesolo_core.refusals import Refusal

if TYPE_CHECKING:
    from kubesolo_core.release import Release
    from kubesolo_core.versions import Version

#: the node label that blocks updates
BLOCK_LABEL = "updates.kubesolo.io/block"
HEADROOM = 0.10


@attrs.frozen(kw_only=True)
class Unavailable:
    """A port answer meaning "could not ask" (no kubeconfig, no kubectl, API down)."""

    reason: str


# --------------------------------------------------------------------------- preflight


@attrs.frozen(kw_only=True)
class PreflightReport:
    """One line per check; ``refusals`` empty means go."""

    checks: tuple[str, ...]
    refusals: tuple[str, ...]
    way_out: str = ""
    #: the machine reason of each refusal (kubesolo_core.refusals), in the same order
    codes: tuple[str, ...] = ()
    #: the release is below the running version or the downgrade floor, and
    #: ``--allow-downgrade`` lets it through
    downgrade: bool = False

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def held_back(self) -> tuple[Refusal, ...]:
        """Each refusal with its machine reason and sentence."""
        return tuple(
            Refusal.of(code, text) for code, text in zip(self.codes, self.refusals, strict=True)
        )


def required_bytes(raw_size: int) -> int:
    """Room needed on the passive slot: the written size plus 10% headroom."""
    return math.ceil(raw_size * (1 + HEADROOM))


def preflight(
    *,
    release: Release,
    current_version: Version | None,
    slot_capacity: int | None,
    slot_problem: str | None = None,
    node_labels: Mapping[str, str] | Unavailable,
    force: bool = False,
    allow_downgrade: bool = False,
    floor_version: Version | None = None,
) -> PreflightReport:
    """Decide whether an update may touch the passive slot.

    ``slot_capacity`` is None when the passive slot is missing (``slot_problem``
    says which spec and why, for the refusal). An image that
    cannot physically fit is refused even with ``force`` (the write could only
    fail halfway); ``force`` skips the headroom and the node label.
    ``floor_version`` is the highest version this box ever committed: a
    release below it is a downgrade even when the running slot is older
    (after a rollback), and only ``allow_downgrade`` passes it.
    """
    checks: list[str] = []
    refusals: list[str] = []
    ways: list[str] = []
    codes: list[str] = []

    def refuse(code: str, text: str, way: str) -> None:
        codes.append(code)
        refusals.append(text)
        ways.append(way)

    raw = release.image.raw_size
    need = required_bytes(raw)
    if slot_capacity is None:
        refuse(
            "no_space",
            "passive slot not found" + (f": {slot_problem}" if slot_problem else ""),
            "check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
        )
    elif slot_capacity < raw:
        refuse(
            "no_space",
            f"passive slot holds {slot_capacity} bytes, the image needs {raw}",
            "publish a smaller image or grow the slot",
        )
    elif slot_capacity < need and not force:
        refuse(
            "no_space",
            f"passive slot holds {slot_capacity} bytes, less than image + 10% = {need}",
            "--force",
        )
    else:
        checks.append(f"space: {slot_capacity} bytes >= {need if not force else raw}")

    if isinstance(node_labels, Unavailable):
        checks.append(f"node label: bypassed ({node_labels.reason})")
    elif node_labels.get(BLOCK_LABEL, "").strip().lower() == "true":
        if force:
            checks.append(f"node label {BLOCK_LABEL}=true: overridden by --force")
        else:
            refuse(
                "blocked_node",
                f"node carries {BLOCK_LABEL}=true",
                f"kubectl label node <node> {BLOCK_LABEL}-, or --force",
            )
    else:
        checks.append("node label: not blocked")

    below = [v for v in (current_version, floor_version) if v is not None and release.version < v]
    current = current_version
    if current is not None:
        if release.version < current and not allow_downgrade:
            refuse(
                "downgrade",
                f"{release.version} is older than the running {current}",
                "--allow-downgrade",
            )
        if release.min_from_version is not None and current < release.min_from_version:
            if force:
                checks.append("min_from_version: overridden by --force")
            else:
                refuse(
                    "min_from_version",
                    f"{release.version} needs at least {release.min_from_version} "
                    f"to update from; running {current}",
                    "update to an intermediate release first, or --force",
                )
    if floor_version is not None and release.version < floor_version:
        if allow_downgrade:
            checks.append(
                f"downgrade floor {floor_version}: {release.version} allowed by --allow-downgrade"
            )
        elif "downgrade" not in codes:
            refuse(
                "downgrade",
                f"{release.version} is below {floor_version}, the highest version this box "
                "ever committed",
                "--allow-downgrade",
            )
    return PreflightReport(
        checks=tuple(checks),
        refusals=tuple(refusals),
        way_out=", ".join(dict.fromkeys(ways)),
        codes=tuple(codes),
        downgrade=allow_downgrade and bool(below),
    )


# --------------------------------------------------------------------------- health


@attrs.frozen(kw_only=True)
class PodInfo:
    """A kube-system pod as far as the health check cares."""

    name: str
    phase: str
    #: when the pod's containers were last (re)started; None if not running
    running_since: dt.datetime | None = None
    restarts: int = 0


@attrs.frozen(kw_only=True)
class ProbeResult:
    """The answer of one probe."""

    ok: bool
    reason: str = ""


@attrs.frozen(kw_only=True)
class HealthCheckResult:
    """One line of a health report."""

    name: str
    ok: bool
    reason: str = ""


@attrs.frozen(kw_only=True)
class HealthReport:
    """One boolean per check, with the reason of each failure."""

    checks: tuple[HealthCheckResult, ...]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def by_name(self) -> dict[str, HealthCheckResult]:
        return {c.name: c for c in self.checks}

    def failures(self) -> tuple[HealthCheckResult, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def summary(self) -> str:
        bad = self.failures()
        if not bad:
            return "healthy"
        return "; ".join(f"{c.name}: {c.reason}" for c in bad)


HEALTH_CHECKS = ("containerd", "apiserver", "node_ready", "kube_system", "probe_url", "disk")


def _bool_check(name: str, value: bool | Unavailable, what: str) -> HealthCheckResult:
    if isinstance(value, Unavailable):
        return HealthCheckResult(name=name, ok=False, reason=f"unavailable: {value.reason}")
    return HealthCheckResult(name=name, ok=value, reason="" if value else what)


def kube_system_check(
    pods: Sequence[PodInfo] | Unavailable, now: dt.datetime, settle_seconds: float
) -> HealthCheckResult:
    """Every kube-system pod Running, and held so for ``settle_seconds``."""
    name = "kube_system"
    if isinstance(pods, Unavailable):
        return HealthCheckResult(name=name, ok=False, reason=f"unavailable: {pods.reason}")
    if not pods:
        return HealthCheckResult(name=name, ok=False, reason="no kube-system pods yet")
    problems = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.phase != "Running":
            problems.append(f"{pod.name} is {pod.phase}")
            continue
        if pod.running_since is None:
            problems.append(f"{pod.name} is Running but not all its containers are")
            continue
        held = (now - pod.running_since).total_seconds()
        if held < settle_seconds:
            problems.append(f"{pod.name} running for {held:.0f}s < {settle_seconds:.0f}s")
    return HealthCheckResult(name=name, ok=not problems, reason=", ".join(problems))


def health_report(
    *,
    containerd: ProbeResult,
    apiserver_ready: bool | Unavailable,
    node_ready: bool | Unavailable,
    pods: Sequence[PodInfo] | Unavailable,
    now: dt.datetime,
    settle_seconds: float,
    probe_url: ProbeResult | None,
    disk: ProbeResult,
) -> HealthReport:
    """Aggregate the raw answers into a report. ``probe_url`` None = not configured = pass."""
    return HealthReport(
        checks=(
            HealthCheckResult(name="containerd", ok=containerd.ok, reason=containerd.reason),
            _bool_check("apiserver", apiserver_ready, "API server not ready"),
            _bool_check("node_ready", node_ready, "node is not Ready"),
            kube_system_check(pods, now, settle_seconds),
            HealthCheckResult(name="probe_url", ok=True, reason="not configured")
            if probe_url is None
            else HealthCheckResult(name="probe_url", ok=probe_url.ok, reason=probe_url.reason),
            HealthCheckResult(name="disk", ok=disk.ok, reason=disk.reason),
        )
    )


# --------------------------------------------------------------------------- auto-rollback


def should_auto_rollback(failures: int, threshold: int) -> bool:
    """True when ``failures`` failed health checks reach ``threshold`` (0 = never)."""
    return threshold > 0 and failures >= threshold
