"""The health check of a trial: probe, wait for the node to settle, then commit or count.

The Agent's ``healthcheck`` runs :func:`healthcheck`: reconcile with the
bootloader; outside a trial, one probe and no state change; in a trial, poll
until healthy or the settle window is over (bounded in count and time, one
``health.waiting`` event per round), then commit the trial slot, or count a
failed check, or, at ``auto_rollback_after`` failures, roll back. The order
of the durable writes is the one the crash-point tests hold it to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubesolo_core.lifecycle import POST_ACTIVATION, Phase, transition
from kubesolo_core.outcomes import HealthOutcome
from kubesolo_core.policies import HealthReport, health_report, should_auto_rollback
from kubesolo_core.ports import Clock, HealthProbes, Kube
from kubesolo_core.reconcile import Verdict
from kubesolo_core.results import HealthSettings

if TYPE_CHECKING:
    from kubesolo_core.services import Agent

__all__ = ["healthcheck", "probe"]


def probe(kube: Kube, probes: HealthProbes, clock: Clock, settings: HealthSettings) -> HealthReport:
    """Run every check once (no state change)."""
    url = settings.healthcheck_url
    return health_report(
        containerd=probes.containerd(),
        apiserver_ready=kube.apiserver_ready(),
        node_ready=kube.node_ready(),
        pods=kube.kube_system_pods(),
        now=clock.now(),
        settle_seconds=settings.kube_system_settle,
        probe_url=probes.probe_url(url) if url else None,
        disk=probes.disk_writable(),
    )


def _settled(agent: Agent) -> HealthReport:
    # Poll until healthy or the settle window is over (bounded in count and time).
    deadline = agent.clock.monotonic() + agent.health.settle_timeout
    interval = agent.health.poll_every
    rounds = int(agent.health.settle_timeout / interval) + 1
    report = agent.probe_health()
    for number in range(1, rounds + 1):
        left = deadline - agent.clock.monotonic()
        if report.healthy or left <= 0:
            break
        # One event per round: the CLI shows it on a terminal, logs it otherwise,
        # so a 300 s wait is never silent.
        failing = report.failures()
        agent.events(
            "health.waiting",
            round=number,
            failing=[c.name for c in failing],
            reasons={c.name: c.reason for c in failing},
            seconds_left=round(left),
        )
        agent.clock.sleep(min(interval, left))
        report = agent.probe_health()
    return report


def healthcheck(agent: Agent) -> HealthOutcome:
    """Reconcile, check, then commit, count a failure, or roll back (see the module)."""
    state, rec, _ = agent.reconciled()
    if rec.verdict is not Verdict.IN_TRIAL or state.phase not in POST_ACTIVATION:
        return HealthOutcome(
            report=agent.probe_health(),
            state=state,
            reconciliation=rec,
            action=rec.message or "no update in flight: state unchanged",
        )
    report = _settled(agent)
    target = state.target_slot
    assert target is not None  # noqa: S101  (POST_ACTIVATION always has one)
    if report.healthy:
        state = agent.save(transition(state, Phase.VERIFYING, agent.clock.now()))
        agent.boot_env.mark_good(target)
        state = agent.save(transition(state, Phase.SUCCESS, agent.clock.now()))
        agent.events("update.committed", slot=target.value, version=state.to_version)
        return HealthOutcome(
            report=report,
            state=state,
            reconciliation=rec,
            action=f"committed slot {target.value} ({state.to_version})",
        )
    failures = state.health_check_failures + 1
    if should_auto_rollback(failures, agent.health.auto_rollback_after):
        old = target.other()
        agent.boot_env.force_rollback(old)
        state = agent.save(
            transition(
                state,
                Phase.ROLLED_BACK,
                agent.clock.now(),
                health_check_failures=failures,
                error=(
                    f"auto-rollback to slot {old.value} after {failures} failed health "
                    f"checks of {state.to_version}: {report.summary()}"
                ),
            )
        )
        agent.events("update.rolled_back", slot=old.value, how="auto")
        action = f"rolled back to slot {old.value}; reboot to run it"
    else:
        state = agent.save(
            transition(
                state,
                Phase.ACTIVATED,
                agent.clock.now(),
                health_check_failures=failures,
            )
        )
        action = f"health check {failures} of the trial failed"
    return HealthOutcome(report=report, state=state, reconciliation=rec, action=action)
