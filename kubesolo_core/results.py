"""What the agent's operations return, and the knobs of its health check: plain values.

An operation's outcome is a value, not an exception (an unhealthy node is
``HealthOutcome(healthy=False)``); the decisions an operator's tools need
(``StatusReport.reboot_required``, ``ActivateResult.needs_tryboot_reboot``)
are answered here, once, for the CLI, the metrics, the demo and library users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # annotations only: status need not load the release and health modules
    from kubesolo_core.bootmodel import BootView
    from kubesolo_core.chunks import AdaptiveStats
    from kubesolo_core.lifecycle import UpdateState
    from kubesolo_core.policies import HealthReport, PreflightReport
    from kubesolo_core.ports import SlotInfo, WriteResult
    from kubesolo_core.reconcile import Reconciliation
    from kubesolo_core.refusals import Refusal
    from kubesolo_core.release import Release
    from kubesolo_core.slots import Slot
    from kubesolo_core.versions import Version

__all__ = [
    "ActivateResult",
    "ApplyResult",
    "CheckResult",
    "HealthOutcome",
    "HealthSettings",
    "SlotStatus",
    "StatusReport",
]


@attrs.frozen(kw_only=True)
class HealthSettings:
    """Knobs of the health check (update.conf keys of the same names)."""

    healthcheck_url: str | None = None
    auto_rollback_after: int = 0
    kube_system_settle: float = 30.0
    #: how long healthcheck waits for kube-system to settle before it judges
    settle_timeout: float = 300.0
    #: seconds between two rounds of checks; None: a third of the settle time,
    #: between 0.5 and 5 s, so a short settle is met promptly
    poll_interval: float | None = None

    @property
    def poll_every(self) -> float:
        """The interval the settle loop waits between two rounds (at least 0.1 s)."""
        if self.poll_interval is not None:
            return max(self.poll_interval, 0.1)
        return min(5.0, max(self.kube_system_settle / 3, 0.5))


@attrs.frozen(kw_only=True)
class CheckResult:
    """The answer of ``check``: is a newer release available?"""

    current_version: Version | None
    available_version: Version
    update_available: bool
    release: Release
    #: why the release would be refused by apply now (preflight's reasons), if it would
    held_back: tuple[Refusal, ...] = ()

    @property
    def reason(self) -> str:
        """One sentence: what the server offers against what runs, and what holds it back."""
        offer, running = self.available_version, self.current_version
        if running is None:
            said = f"{offer} available; running version unknown"
        elif self.update_available:
            said = f"{offer} available (running {running})"
        else:
            return f"up to date (running {running}, server has {offer})"
        if self.held_back:
            said += "; held back: " + "; ".join(r.detail for r in self.held_back)
        return said


@attrs.frozen(kw_only=True)
class ApplyResult:
    """The answer of ``apply``."""

    state: UpdateState
    changed: bool
    message: str
    preflight: PreflightReport | None = None
    write: WriteResult | None = None
    #: bytes reused in place, copied from the booted slot, downloaded, written
    stats: AdaptiveStats | None = None


@attrs.frozen(kw_only=True)
class ActivateResult:
    """The answer of ``activate``: the state, and how the trial starts."""

    state: UpdateState
    #: the trial starts only with a tryboot reboot (``reboot "0 tryboot"``):
    #: a plain reboot, a crash or a power cut boots the committed slot
    needs_tryboot_reboot: bool

    def message(self, *, rebooting: bool = False) -> str:
        """One line for the operator: what was activated and how its trial starts."""
        slot = self.state.target_slot.value if self.state.target_slot else "?"
        done = f"slot {slot} ({self.state.to_version}) activated"
        if self.needs_tryboot_reboot and not rebooting:
            return (
                f"{done}: start its trial with `reboot '0 tryboot'` (or `kubesolo-update "
                "activate --reboot`); a plain reboot boots the committed slot"
            )
        return f"{done}: reboot to start its trial"


@attrs.frozen(kw_only=True)
class HealthOutcome:
    """The answer of ``healthcheck``: the report, the state after it, what it did."""

    report: HealthReport
    state: UpdateState
    action: str
    reconciliation: Reconciliation

    @property
    def healthy(self) -> bool:
        return self.report.healthy


@attrs.frozen(kw_only=True)
class SlotStatus:
    """One slot in the status report."""

    info: SlotInfo
    version: str | None
    booted: bool
    committed: bool
    trial: bool


@attrs.frozen(kw_only=True)
class StatusReport:
    """Everything an operator needs on one screen."""

    slots: tuple[SlotStatus, ...]
    boot: BootView
    booted_slot: Slot | None
    state: UpdateState
    reconciliation: Reconciliation

    @property
    def reboot_required(self) -> bool:
        """True when the running slot is not the one the bootloader boots next."""
        return self.boot.reboot_required(self.booted_slot)
