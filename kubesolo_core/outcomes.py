"""The answers of check, apply, activate and healthcheck: plain values.

Import them from :mod:`kubesolo_core.results`, as ever: it loads this module
on first use, since ``status`` needs only its report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from kubesolo_core.chunks import AdaptiveStats
    from kubesolo_core.lifecycle import UpdateState
    from kubesolo_core.policies import HealthReport, PreflightReport
    from kubesolo_core.ports import WriteResult
    from kubesolo_core.reconcile import Reconciliation
    from kubesolo_core.refusals import Refusal
    from kubesolo_core.release import Release
    from kubesolo_core.versions import Version

__all__ = ["ActivateResult", "ApplyResult", "CheckResult", "HealthOutcome"]


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
