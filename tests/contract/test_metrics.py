"""The metrics exporter: a real server on 127.0.0.1, checked by promtool and prometheus_client.

The collector reads state.json and the grubenv at scrape time: change the
files between two scrapes and the numbers follow.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_core.codec import dumps_state
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.config import Settings, load_settings
from kubesolo_entrypoints.metrics import MetricsServer, parse_listen, serve
from tests.tools import require_tool

PHASES = [p.value for p in Phase]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "cmdline").write_text("quiet kubesolo.slot=A\n")
    (tmp_path / "boot_id").write_text("b1\n")
    PythonBackend(tmp_path / "grubenv").set(
        {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
    )
    return load_settings(
        {
            "config": "/dev/null",
            "state": str(tmp_path / "state" / "state.json"),
            "bootloader": "grub",
            "grubenv": str(tmp_path / "grubenv"),
            "cmdline": str(tmp_path / "cmdline"),
            "boot_id": str(tmp_path / "boot_id"),
            "slot_a": str(tmp_path / "a.img"),
            "slot_b": str(tmp_path / "b.img"),
        },
        {},
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[MetricsServer]:
    srv = serve(settings, "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.close()


def scrape(srv: MetricsServer) -> str:
    with urllib.request.urlopen(f"http://{srv.address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool_ok(text: str) -> None:
    require_tool("promtool")
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_absent_state_gives_idle_defaults(server: MetricsServer) -> None:
    assert server.host == "127.0.0.1"
    text = scrape(server)
    promtool_ok(text)
    got = samples(text)
    for phase in PHASES:
        assert got[("kubesolo_update_phase", (("phase", phase),))] == (phase == "idle")
    assert got[("kubesolo_update_attempts_total", ())] == 0
    assert got[("kubesolo_update_last_attempt_timestamp_seconds", ())] == 0
    assert got[("kubesolo_update_booted_slot", (("slot", "A"),))] == 1
    assert got[("kubesolo_update_boot_success", ())] == 1
    assert got[("kubesolo_update_source_ok", (("source", "state"),))] == 1


def test_values_follow_the_files_at_scrape_time(server: MetricsServer, settings: Settings) -> None:
    started = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    settings.state.parent.mkdir(parents=True)
    settings.state.write_text(
        dumps_state(
            UpdateState(
                phase=Phase.ACTIVATED,
                from_version="1.0.0",
                to_version="1.1.0",
                target_slot=Slot.B,
                attempt_count=2,
                started_at=started,
                updated_at=started,
                health_check_failures=1,
            )
        )
    )
    PythonBackend(settings.grubenv).set(
        {"active_slot": "B", "boot_counter": "2", "boot_success": "0"}
    )
    (settings.state.parent / "last-health.json").write_text(
        json.dumps({"at": started.isoformat(), "checks": {"node_ready": False, "disk": True}})
    )
    text = scrape(server)
    promtool_ok(text)
    got = samples(text)
    assert got[("kubesolo_update_phase", (("phase", "activated"),))] == 1
    assert sum(got[("kubesolo_update_phase", (("phase", p),))] for p in PHASES) == 1
    assert got[("kubesolo_update_attempts_total", ())] == 2
    assert got[("kubesolo_update_last_attempt_timestamp_seconds", ())] == started.timestamp()
    assert got[("kubesolo_update_health_check_failures", ())] == 1
    assert got[("kubesolo_update_trial_boots_left", ())] == 2
    assert got[("kubesolo_update_boot_success", ())] == 0
    assert got[("kubesolo_update_next_boot_slot", (("slot", "B"),))] == 1
    assert got[("kubesolo_update_committed_slot", (("slot", "A"),))] == 1
    assert got[("kubesolo_update_reboot_required", ())] == 1
    assert got[("kubesolo_update_health_check_ok", (("check", "node_ready"),))] == 0
    info = [k for k in got if k[0] == "kubesolo_update_info"]
    assert dict(info[0][1])["to_version"] == "1.1.0"


def test_corrupt_state_is_reported_not_set_aside(server: MetricsServer, settings: Settings) -> None:
    settings.state.parent.mkdir(parents=True)
    settings.state.write_text("{truncated")
    text = scrape(server)
    promtool_ok(text)
    got = samples(text)
    assert got[("kubesolo_update_source_ok", (("source", "state"),))] == 0
    assert got[("kubesolo_update_phase", (("phase", "idle"),))] == 1
    assert settings.state.read_text() == "{truncated"  # the exporter only reads


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("9469", ":9469", "host:port", "h:99999"):
        with pytest.raises(Exception, match="--listen"):
            parse_listen(bad)
