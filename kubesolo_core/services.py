"""The application services: check, apply, activate, rollback, healthcheck, status.

:class:`Agent` uses only ports, so the same code runs over the in-memory
adapters (tests, simulator, library users) and the real ones (the CLI). The
order of durable writes in each operation is chosen so that a power cut after
any of them leaves a box that boots a committed, verified slot; the
crash-point tests in tests/unit enumerate every such cut.

What only check, apply, activate and healthcheck use (the release document,
preflight, the adaptive path, the health policies, their answers) is imported
by those methods, so ``status`` loads none of it (bench/cli_startup.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from kubesolo_core.errors import (
    ConfigError,
    InvalidOperation,
    InvalidRelease,
    InvalidUrl,
    KubesoloError,
    OperationFailed,
)
from kubesolo_core.lifecycle import POST_ACTIVATION, WRITING, Phase, UpdateState, transition
from kubesolo_core.reconcile import Reconciliation, reconcile
from kubesolo_core.results import HealthSettings, SlotStatus, StatusReport
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version

if TYPE_CHECKING:
    from kubesolo_core.adaptive import AdaptiveUpdater
    from kubesolo_core.bootmodel import BootView
    from kubesolo_core.outcomes import ActivateResult, ApplyResult, CheckResult, HealthOutcome
    from kubesolo_core.policies import HealthReport
    from kubesolo_core.ports import (
        BootEnv,
        Clock,
        EventSink,
        Fetcher,
        HealthProbes,
        Kube,
        Progress,
        SlotStore,
        StateStore,
    )
    from kubesolo_core.release import Release

__all__ = ["Agent"]


def _no_events(event: str, **fields: object) -> None:
    return None


@attrs.define(kw_only=True)
class Agent:
    """The update agent over its ports."""

    boot_env: BootEnv
    slots: SlotStore
    fetcher: Fetcher
    kube: Kube
    probes: HealthProbes
    clock: Clock
    store: StateStore
    server: str | None = None
    health: HealthSettings = attrs.field(factory=HealthSettings)
    events: EventSink = _no_events
    #: chunked (adaptive) updates when a release offers a chunk index; None = always full
    adaptive: AdaptiveUpdater | None = None

    # ------------------------------------------------------------------ helpers

    def _release(self) -> Release:
        from kubesolo_core.release import parse_release
        from kubesolo_core.urls import check_image_url

        if not self.server:
            raise ConfigError(
                "no release server configured", way_out="--server URL or server= in update.conf"
            )
        release = parse_release(self.fetcher.fetch_release(self.server))
        try:
            check_image_url(self.server, release.image.url)
        except InvalidUrl as exc:
            raise InvalidRelease(
                f"release document: image.url: {exc.message}", way_out=exc.way_out
            ) from None
        return release

    def _booted_or_committed(self, view: BootView) -> Slot:
        booted = self.boot_env.booted_slot()
        return booted if booted is not None else view.committed_slot

    def _current_version(self, view: BootView) -> Version | None:
        # The running slot's version file is a boundary: parsed once, here.
        text = self.slots.read_version(self._booted_or_committed(view))
        if text is None:
            return None
        try:
            return Version.parse(text)
        except KubesoloError:
            return None

    def save(self, state: UpdateState) -> UpdateState:
        """Persist ``state`` (one durable write) and say so; returns it."""
        self.store.save(state)
        self.events("update.phase", phase=state.phase.value, to_version=state.to_version)
        return state

    def _abandon(self, state: UpdateState, exc: BaseException) -> None:
        """Record a failed attempt after ``exc``; a failure to save is logged, not raised."""
        if isinstance(exc, KubesoloError):
            reason = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (KeyboardInterrupt) before the image was verified"
        else:
            reason = f"unexpected {type(exc).__name__}: {exc}"
        try:
            self.save(transition(state, Phase.FAILED, self.clock.now(), error=reason[:2000]))
        except Exception as err:  # the disk that failed the write may fail this too
            self.events("update.state_not_saved", phase=state.phase.value, error=str(err))

    def reconciled(self) -> tuple[UpdateState, Reconciliation, BootView]:
        """The state after reconciling it with the bootloader (saved when it changed)."""
        state = self.store.load()
        view = self.boot_env.read()
        rec = reconcile(
            state, view, self.boot_env.booted_slot(), self.boot_env.boot_id(), self.clock.now()
        )
        if rec.state is not None:
            self.events("update.reconciled", verdict=rec.verdict.value, message=rec.message)
            state = self.save(rec.state)
        return state, rec, view

    # ------------------------------------------------------------------ check

    def check(self) -> CheckResult:
        """Passive: fetch the release document and compare. Never changes the state."""
        from kubesolo_core.admission import held_back
        from kubesolo_core.outcomes import CheckResult

        release = self._release()
        view = self.boot_env.read()
        current = self._current_version(view)
        passive = self._booted_or_committed(view).other()
        held = held_back(
            release, current, passive, slots=self.slots, kube=self.kube, store=self.store
        )
        return CheckResult(
            current_version=current,
            available_version=release.version,
            update_available=current is None or release.version > current,
            release=release,
            held_back=held,
        )

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        *,
        force: bool = False,
        allow_downgrade: bool = False,
        progress: Progress | None = None,
    ) -> ApplyResult:
        """Preflight, download, write and verify into the passive slot -> staged."""
        from kubesolo_core.adaptive import write_release
        from kubesolo_core.admission import admit
        from kubesolo_core.outcomes import ApplyResult
        from kubesolo_core.release import verify_written

        state, _, view = self.reconciled()
        if state.phase in POST_ACTIVATION:
            raise InvalidOperation(
                f"an update to {state.to_version} is {state.phase.value} on slot "
                f"{state.target_slot.value if state.target_slot else '?'}",
                way_out="reboot and run healthcheck, or `kubesolo-update rollback`",
            )
        booted = self._booted_or_committed(view)
        target = booted.other()
        if target in (view.committed_slot, view.trial_slot):
            # Never overwrite the slot the bootloader would boot.
            raise InvalidOperation(
                f"slot {target.value} is the bootloader's "
                + ("committed" if target is view.committed_slot else "trial")
                + f" slot while slot {booted.value} runs",
                way_out="reboot into the committed slot first (see `kubesolo-update status`)",
            )
        release = self._release()
        current = self._current_version(view)
        if current is not None and release.version == current:
            return ApplyResult(state=state, changed=False, message=f"already running {current}")
        if (
            state.phase is Phase.STAGED
            and state.to_version == release.version
            and state.target_slot is target
        ):
            return ApplyResult(
                state=state,
                changed=False,
                message=f"{release.version} is already staged on slot {target.value}",
            )
        # Identity, then preflight, before any state change: a refusal (a
        # blocked node, say, under a CronJob every 6 hours) must not churn the
        # state, and a passive slot that is the running one under another name
        # is a configuration error, not a failed update.
        self.slots.check_writable(target)
        report = admit(
            release,
            current,
            target,
            slots=self.slots,
            kube=self.kube,
            force=force,
            allow_downgrade=allow_downgrade,
            floor_version=state.floor_version,
        )
        if report.downgrade:
            self.events(
                "update.downgrade_allowed",
                to_version=release.version,
                running=current,
                floor=state.floor_version,
            )
        state = self.save(
            transition(
                state,
                Phase.CHECKING,
                self.clock.now(),
                from_version=current,
                to_version=release.version,
                target_slot=target,
                downgrade_allowed=report.downgrade,
            )
        )
        # From here to the end, any exception at all (a library's own, a bug,
        # Ctrl-C, a failed save) ends the attempt as failed: state.json must
        # never claim a download nobody is doing. (A power cut writes nothing
        # more; the next run restarts the attempt from checking/downloading.)
        try:
            state = self.save(transition(state, Phase.DOWNLOADING, self.clock.now()))
            assert self.server is not None  # noqa: S101  (checked by _release)
            # Progress counts raw bytes written (of raw_size), reported by the writer only.
            result, stats = write_release(
                slots=self.slots,
                fetcher=self.fetcher,
                adaptive=self.adaptive,
                target=target,
                seed=booted,
                release_url=self.server,
                image=release.image,
                progress=progress,
                events=self.events,
            )
            # The store verified its read-back; the services do not take its word for it.
            verify_written(
                release.image,
                length=result.written,
                sha256=result.raw_sha256,
                where=f"slot {target.value}",
            )
            state = self.save(
                transition(state, Phase.STAGED, self.clock.now(), image_sha256=result.raw_sha256)
            )
        except BaseException as exc:
            self._abandon(state, exc)
            raise
        return ApplyResult(
            state=state,
            changed=True,
            preflight=report,
            write=result,
            stats=stats,
            message=f"{release.version} staged on slot {target.value} (verified)",
        )

    # ------------------------------------------------------------------ activate

    def activate(self) -> ActivateResult:
        """staged -> activated: the bootloader will trial the new slot at the next boot."""
        from kubesolo_core.outcomes import ActivateResult

        state, _, view = self.reconciled()
        if state.phase is not Phase.STAGED or state.target_slot is None:
            raise InvalidOperation(
                f"nothing staged to activate (phase {state.phase.value})",
                way_out="run `kubesolo-update apply` first",
            )
        target = state.target_slot
        booted = self._booted_or_committed(view)
        if target is booted:
            raise InvalidOperation(
                f"the staged slot {target.value} is the running slot",
                way_out="run `kubesolo-update apply` again",
            )
        # The state first: a cut before the env write boots the old slot and
        # reconciles to rolled_back; the reverse order would leave a trial the
        # agent does not know about.
        state = self.save(
            transition(
                state,
                Phase.ACTIVATED,
                self.clock.now(),
                activation_boot_id=self.boot_env.boot_id(),
                health_check_failures=0,
            )
        )
        try:
            self.boot_env.activate(target)
        except OperationFailed as exc:
            self.save(transition(state, Phase.FAILED, self.clock.now(), error=str(exc)))
            raise
        self.events("update.slot_activated", slot=target.value)
        return ActivateResult(
            state=state, needs_tryboot_reboot=not self.boot_env.kind.plain_reboot_starts_trial
        )

    # ------------------------------------------------------------------ rollback

    def rollback(self) -> UpdateState:
        """Go back to the previous slot now (manual)."""
        state, _, _ = self.reconciled()
        if state.phase not in (*POST_ACTIVATION, Phase.SUCCESS) or state.target_slot is None:
            raise InvalidOperation(
                f"nothing to roll back to in phase {state.phase.value}: the other slot "
                "does not hold a proven image",
                way_out="none needed: the committed slot is the running one",
            )
        old = state.target_slot.other()
        # The env first: a cut after it boots the old slot, and reconciliation
        # then records rolled_back.
        self.boot_env.force_rollback(old)
        state = self.save(
            transition(
                state,
                Phase.ROLLED_BACK,
                self.clock.now(),
                error=f"manual rollback to slot {old.value} ({state.from_version})",
            )
        )
        self.events("update.rolled_back", slot=old.value, how="manual")
        return state

    # ------------------------------------------------------------------ health

    def probe_health(self) -> HealthReport:
        """Run every check once (no state change)."""
        from kubesolo_core import health

        return health.probe(self.kube, self.probes, self.clock, self.health)

    def healthcheck(self) -> HealthOutcome:
        """Reconcile, check, then commit, count a failure, or roll back.

        An unhealthy node is an outcome, not an error: the returned value says
        ``healthy=False`` (after any state change is saved) and the CLI maps it
        to its exit code. Errors raise only when the check could not be done.
        (The steps: :func:`kubesolo_core.health.healthcheck`.)
        """
        from kubesolo_core import health

        return health.healthcheck(self)

    # ------------------------------------------------------------------ status

    def status(self) -> StatusReport:
        """Both slots, the boot env, the state (after reconciliation)."""
        state, rec, view = self.reconciled()
        booted = self.boot_env.booted_slot()
        rows = []
        for slot in (Slot.A, Slot.B):
            info = self.slots.describe(slot)
            # The passive slot's filesystem is unknown while an apply is in flight.
            unknown = state.phase in WRITING and slot is state.target_slot
            rows.append(
                SlotStatus(
                    info=info,
                    version=None if unknown or not info.exists else self.slots.read_version(slot),
                    booted=slot is booted,
                    committed=slot is view.committed_slot,
                    trial=slot is view.trial_slot,
                )
            )
        return StatusReport(
            slots=tuple(rows), boot=view, booted_slot=booted, state=state, reconciliation=rec
        )
