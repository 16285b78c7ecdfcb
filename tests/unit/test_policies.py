"""Preflight, health aggregation and auto-rollback (DESIGN.md 2.3)."""

from __future__ import annotations

import datetime as dt

import pytest

from kubesolo_core.policies import (
    BLOCK_LABEL,
    PodInfo,
    ProbeResult,
    Unavailable,
    health_report,
    preflight,
    required_bytes,
    should_auto_rollback,
)
from kubesolo_core.release import parse_release
from kubesolo_core.versions import as_version

SHA = "c" * 64
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def release(version: str = "1.3.0", raw: int = 1000, min_from: str | None = None):  # type: ignore[no-untyped-def]
    d = {"schema": 1, "version": version, "image": {"url": "x", "sha256": SHA, "size": raw}}
    if min_from:
        d["min_from_version"] = min_from
    return parse_release(d)


def run(**kw):  # type: ignore[no-untyped-def]
    args = {
        "release": release(),
        "current_version": "1.2.0",
        "slot_capacity": 2000,
        "node_labels": {},
    }
    args.update(kw)
    args["current_version"] = as_version(args["current_version"])  # parsed at the boundary
    return preflight(**args)


def test_room_for_image_plus_ten_percent() -> None:
    assert required_bytes(1000) == 1100
    assert run(slot_capacity=1100).ok
    refused = run(slot_capacity=1099)
    assert not refused.ok
    assert "1099" in refused.refusals[0] and "1100" in refused.refusals[0]
    assert "--force" in refused.way_out
    assert run(slot_capacity=1099, force=True).ok


def test_an_image_that_cannot_fit_is_refused_even_with_force() -> None:
    refused = run(slot_capacity=999, force=True)
    assert not refused.ok and "needs 1000" in refused.refusals[0]


def test_missing_slot_is_refused() -> None:
    refused = run(slot_capacity=None, force=True)
    assert not refused.ok and "not found" in refused.refusals[0]


def test_block_label() -> None:
    refused = run(node_labels={BLOCK_LABEL: "true"})
    assert not refused.ok and BLOCK_LABEL in refused.refusals[0]
    assert run(node_labels={BLOCK_LABEL: "false"}).ok
    assert run(node_labels={BLOCK_LABEL: "true"}, force=True).ok


def test_unreachable_kubeconfig_bypasses_the_label_check() -> None:
    report = run(node_labels=Unavailable(reason="no kubeconfig"))
    assert report.ok and any("bypassed" in c for c in report.checks)


def test_downgrade_refused_unless_allowed() -> None:
    refused = run(current_version="1.4.0")
    assert not refused.ok and "older" in refused.refusals[0]
    assert "--allow-downgrade" in refused.way_out
    assert run(current_version="1.4.0", allow_downgrade=True).ok


def test_min_from_version() -> None:
    refused = run(release=release(min_from="1.2.5"))
    assert not refused.ok and "1.2.5" in refused.refusals[0]
    assert run(release=release(min_from="1.2.0")).ok


def healthy_inputs(**kw):  # type: ignore[no-untyped-def]
    args = {
        "containerd": ProbeResult(ok=True),
        "apiserver_ready": True,
        "node_ready": True,
        "pods": [
            PodInfo(name="coredns", phase="Running", running_since=NOW - dt.timedelta(seconds=60))
        ],
        "now": NOW,
        "settle_seconds": 30,
        "probe_url": None,
        "disk": ProbeResult(ok=True),
    }
    args.update(kw)
    return health_report(**args)


def test_healthy_report_has_one_boolean_per_check() -> None:
    report = healthy_inputs()
    assert report.healthy
    assert [c.name for c in report.checks] == [
        "containerd",
        "apiserver",
        "node_ready",
        "kube_system",
        "probe_url",
        "disk",
    ]
    assert report.by_name()["probe_url"].reason == "not configured"


@pytest.mark.parametrize(
    ("change", "name", "reason"),
    [
        ({"containerd": ProbeResult(ok=False, reason="refused")}, "containerd", "refused"),
        ({"apiserver_ready": False}, "apiserver", "not ready"),
        ({"apiserver_ready": Unavailable(reason="down")}, "apiserver", "unavailable: down"),
        ({"node_ready": False}, "node_ready", "not Ready"),
        ({"pods": []}, "kube_system", "no kube-system pods"),
        ({"pods": [PodInfo(name="coredns", phase="Pending")]}, "kube_system", "Pending"),
        (
            {
                "pods": [
                    PodInfo(
                        name="coredns",
                        phase="Running",
                        running_since=NOW - dt.timedelta(seconds=10),
                    )
                ]
            },
            "kube_system",
            "10s < 30s",
        ),
        ({"probe_url": ProbeResult(ok=False, reason="answered 503")}, "probe_url", "503"),
        ({"disk": ProbeResult(ok=False, reason="read-only")}, "disk", "read-only"),
    ],
)
def test_each_failure_names_its_check_and_reason(change: dict, name: str, reason: str) -> None:  # type: ignore[type-arg]
    report = healthy_inputs(**change)
    assert not report.healthy
    [bad] = report.failures()
    assert bad.name == name and reason in bad.reason
    assert reason in report.summary()


def test_auto_rollback_threshold() -> None:
    assert not should_auto_rollback(5, 0)
    assert not should_auto_rollback(1, 2)
    assert should_auto_rollback(2, 2)
