"""What the agent's operations return, and the knobs of its health check: plain values.

An operation's outcome is a value, not an exception (an unhealthy node is
``HealthOutcome(healthy=False)``); the decisions an operator's tools need
(``StatusReport.reboot_required``, ``ActivateResult.needs_tryboot_reboot``)
are answered here, once, for the CLI, the metrics, the demo and library users.

The answers of check, apply, activate and healthcheck are defined in
:mod:`kubesolo_core.outcomes` and loaded from here on first use: ``status``
needs only its report, and every attrs class costs start-up time
(bench/cli_startup.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # annotations only
    from kubesolo_core.bootmodel import BootView
    from kubesolo_core.lifecycle import UpdateState
    from kubesolo_core.outcomes import ActivateResult, ApplyResult, CheckResult, HealthOutcome
    from kubesolo_core.ports import SlotInfo
    from kubesolo_core.reconcile import Reconciliation
    from kubesolo_core.slots import Slot

__all__ = [
    "ActivateResult",
    "ApplyResult",
    "CheckResult",
    "HealthOutcome",
    "HealthSettings",
    "SlotStatus",
    "StatusReport",
]


def __getattr__(name: str) -> Any:
    # The other operations' answers live in kubesolo_core.outcomes, loaded on first use.
    if name in ("ActivateResult", "ApplyResult", "CheckResult", "HealthOutcome"):
        from kubesolo_core import outcomes

        return getattr(outcomes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
