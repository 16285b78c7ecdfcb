"""Prometheus metrics, derived from state.json and the boot env at every scrape.

A custom collector reads the files when Prometheus asks, so the exporter
holds no state of its own and never disagrees with ``status``. It only
reads: a corrupt state.json is reported (``kubesolo_update_source_ok``) and
shown as idle, but never set aside (that is the agent's job). An absent
state file gives the idle defaults.

Series (the first three are the names of the original design):

* ``kubesolo_update_phase{phase}``: 1 for the current phase, 0 for the other
  eight (all nine always emitted);
* ``kubesolo_update_attempts_total``: attempts at the current target version;
* ``kubesolo_update_last_attempt_timestamp_seconds``: start of the last attempt (0 = never);
* ``kubesolo_update_state_updated_timestamp_seconds``: last change of the state;
* ``kubesolo_update_health_check_failures``: failed health checks of the current trial;
* ``kubesolo_update_booted_slot{slot}``, ``kubesolo_update_committed_slot{slot}``,
  ``kubesolo_update_next_boot_slot{slot}``: 1 for the slot, 0 for the other;
* ``kubesolo_update_trial_boots_left``: GRUB's boot_counter during a trial (the name
  avoids "counter": promtool reserves it for counter types);
* ``kubesolo_update_boot_success``: 1 when the bootloader is committed, 0 in a trial;
* ``kubesolo_update_reboot_required``: 1 when the running slot is not the next boot's;
* ``kubesolo_update_last_check_timestamp_seconds``, ``kubesolo_update_last_check_success``,
  ``kubesolo_update_available``: the last ``check``/``apply`` against the server;
* ``kubesolo_update_last_healthcheck_timestamp_seconds``,
  ``kubesolo_update_health_check_ok{check}``: the last ``healthcheck``, per check;
* ``kubesolo_update_last_apply_timestamp_seconds``, ``kubesolo_update_last_apply_adaptive``
  (1 when the slot was built from chunks, 0 for a full image),
  ``kubesolo_update_last_apply_bytes{kind}`` (``image``, ``in_place``, ``copied``,
  ``downloaded``, ``written``) and ``kubesolo_update_last_apply_chunk_requests``: the
  figures of the last apply that wrote a slot (``last-apply.json``);
* ``kubesolo_update_info{bootloader,from_version,to_version,target_slot}``: always 1;
* ``kubesolo_update_source_ok{source}``: 0 when state.json or the boot env cannot be read;
* ``kubesolo_update_refusal{reason}``: 1 for each reason the last check/apply was held back
  or refused for (every reason of :mod:`kubesolo_core.refusals` always emitted);
* ``kubesolo_update_unsigned``: 1 when the box runs with ``allow_unsigned=true`` and no
  trust root (releases not verified); ``kubesolo_update_trust_info{mode,channel}``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kubesolo_core.errors import ConfigError, KubesoloError
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot
from kubesolo_entrypoints import records

if TYPE_CHECKING:
    from kubesolo_core.bootmodel import BootView
    from kubesolo_core.ports import BootEnv
    from kubesolo_entrypoints.config import Settings

PREFIX = "kubesolo_update"
DEFAULT_LISTEN = "127.0.0.1:9469"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ConfigError naming --listen otherwise."""
    host, sep, port_text = text.rpartition(":")
    # ASCII digits only: str.isdigit() is also true for '²', which int() refuses
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not sep or not digits or int(port_text) > 65535:
        shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
        raise ConfigError(
            f"option --listen: {shown} is not HOST:PORT", way_out=f"e.g. --listen {DEFAULT_LISTEN}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(
            f"option --listen: {text!r} has no host",
            way_out="name the address, e.g. 127.0.0.1:9469 (0.0.0.0:9469 for every interface)",
        )
    return host, int(port_text)


def _read_state(settings: Settings) -> tuple[UpdateState, bool]:
    from kubesolo_adapters.inputs import read_input
    from kubesolo_adapters.statefile import MAX_BYTES
    from kubesolo_core.codec import loads_state

    try:
        text = read_input(settings.state, limit=MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        return UpdateState(), True
    except (OSError, UnicodeDecodeError):
        return UpdateState(), False
    try:
        return loads_state(text, source=str(settings.state)), True
    except KubesoloError:
        return UpdateState(), False


class UpdateCollector:
    """A prometheus_client collector over the state file and the boot env."""

    def __init__(self, settings: Settings, boot_env: BootEnv | None = None) -> None:
        self.settings = settings
        self._boot_env = boot_env

    def _boot(self) -> tuple[BootView | None, Slot | None]:
        try:
            if self._boot_env is None:
                from kubesolo_entrypoints.bootstrap import build_boot_env

                self._boot_env = build_boot_env(self.settings)
            return self._boot_env.read(), self._boot_env.booted_slot()
        except (KubesoloError, OSError):
            return None, None

    def describe(self) -> list[Any]:
        # Nothing to describe up front: keeps registration from scraping the files.
        return []

    def collect(self) -> Iterator[Any]:
        """Build every family from what the files say right now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state, state_ok = _read_state(self.settings)
        view, booted = self._boot()

        def gauge(
            name: str, doc: str, labels: list[str] | None = None, *, value: float | None = None
        ) -> Any:
            """A gauge family; with ``value``, its one unlabelled sample."""
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value, labels=labels)

        phase = gauge("phase", "1 for the current update phase, 0 for the others", ["phase"])
        for p in Phase:
            phase.add_metric([p.value], 1.0 if state.phase is p else 0.0)
        yield phase
        yield CounterMetricFamily(
            f"{PREFIX}_attempts",
            "Update attempts at the current target version",
            value=state.attempt_count,
        )
        started = state.started_at.timestamp() if state.started_at else 0.0
        yield gauge(
            "last_attempt_timestamp_seconds",
            "Start of the last update attempt (0 = never)",
            value=started,
        )
        updated = state.updated_at.timestamp() if state.updated_at else 0.0
        yield gauge(
            "state_updated_timestamp_seconds",
            "Last change of the update state (0 = never)",
            value=updated,
        )
        yield gauge(
            "health_check_failures",
            "Failed health checks of the current trial",
            value=state.health_check_failures,
        )

        for name, doc, slot in (
            ("booted_slot", "1 for the slot the running kernel booted from", booted),
            (
                "committed_slot",
                "1 for the slot the bootloader falls back to",
                view.committed_slot if view else None,
            ),
            (
                "next_boot_slot",
                "1 for the slot the next boot picks",
                view.next_boot if view else None,
            ),
        ):
            fam = gauge(name, doc, ["slot"])
            if slot is not None:
                for s in Slot:
                    fam.add_metric([s.value], 1.0 if s is slot else 0.0)
            yield fam
        if view is not None:
            if view.boot_counter is not None:
                yield gauge(
                    "trial_boots_left",
                    "GRUB boot_counter: trial boots left before rollback",
                    value=view.boot_counter,
                )
            yield gauge(
                "boot_success",
                "1 when the bootloader is committed, 0 during a trial",
                value=0.0 if view.in_trial else 1.0,
            )
            yield gauge(
                "reboot_required",
                "1 when the running slot is not the next boot's",
                value=1.0 if view.reboot_required(booted) else 0.0,
            )

        check = records.read_record(records.record_path(self.settings.state, records.CHECK_FILE))
        at = records.record_time(check)
        if check is not None and at is not None:
            yield gauge(
                "last_check_timestamp_seconds",
                "Time of the last check against the server",
                value=at,
            )
            yield gauge(
                "last_check_success",
                "1 when the last check reached the server",
                value=1.0 if check.get("ok") else 0.0,
            )
            yield gauge(
                "available",
                "1 when the last check saw a newer release",
                value=1.0 if check.get("update_available") else 0.0,
            )
        health = records.read_record(records.record_path(self.settings.state, records.HEALTH_FILE))
        at = records.record_time(health)
        if health is not None and at is not None:
            yield gauge(
                "last_healthcheck_timestamp_seconds", "Time of the last health check", value=at
            )
            fam = gauge(
                "health_check_ok", "Result of each check of the last health check", ["check"]
            )
            checks = health.get("checks")
            if isinstance(checks, dict):
                for name, ok in sorted(checks.items()):
                    fam.add_metric([str(name)], 1.0 if ok else 0.0)
            yield fam

        from kubesolo_entrypoints.trust import ALL_REASONS, trust_view

        seen = check.get("refusals") if check is not None else None
        current = set(seen) if isinstance(seen, list) else set()
        fam = gauge(
            "refusal",
            "1 for each reason the last check/apply was held back or refused for",
            ["reason"],
        )
        for reason in sorted(set(ALL_REASONS) | {str(r) for r in current}):
            fam.add_metric([reason], 1.0 if reason in current else 0.0)
        yield fam
        trust = trust_view(self.settings)
        yield gauge(
            "unsigned",
            "1 when releases are not verified (allow_unsigned=true, no trust root)",
            value=1.0 if trust["unsigned"] else 0.0,
        )
        fam = gauge("trust_info", "How releases are trusted (always 1)", ["mode", "channel"])
        fam.add_metric([trust["mode"], trust.get("channel", "")], 1.0)
        yield fam

        yield from _last_apply(self.settings, gauge)

        info = gauge(
            "info",
            "The update in view (always 1)",
            ["bootloader", "from_version", "to_version", "target_slot"],
        )
        info.add_metric(
            [
                view.kind if view else "unknown",
                str(state.from_version or ""),
                str(state.to_version or ""),
                state.target_slot.value if state.target_slot else "",
            ],
            1.0,
        )
        yield info
        src = gauge("source_ok", "0 when a source could not be read", ["source"])
        src.add_metric(["state"], 1.0 if state_ok else 0.0)
        src.add_metric(["bootenv"], 1.0 if view is not None else 0.0)
        yield src


def _last_apply(settings: Settings, gauge: Any) -> Iterator[Any]:
    doc = records.read_record(records.record_path(settings.state, records.APPLY_FILE))
    at = records.record_time(doc)
    if doc is None or at is None:
        return
    yield gauge(
        "last_apply_timestamp_seconds", "Time of the last apply that wrote a slot", value=at
    )
    yield gauge(
        "last_apply_adaptive",
        "1 when the last apply built the slot from chunks",
        value=1.0 if doc.get("mode") == "adaptive" else 0.0,
    )
    fam = gauge(
        "last_apply_bytes",
        "Bytes of the last apply: image size, reused in place, copied from the booted slot, "
        "downloaded, written",
        ["kind"],
    )
    for kind in ("image", "in_place", "copied", "downloaded", "written"):
        value = doc.get(f"{kind}_bytes")
        if isinstance(value, int) and not isinstance(value, bool):
            fam.add_metric([kind], float(value))
    yield fam
    requests = doc.get("requests")
    if isinstance(requests, int) and not isinstance(requests, bool):
        yield gauge(
            "last_apply_chunk_requests", "Chunk files the last apply fetched", value=float(requests)
        )


def registry_for(settings: Settings, boot_env: BootEnv | None = None) -> Any:
    """A registry holding only the update collector (no process metrics)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(UpdateCollector(settings, boot_env))
    return registry


def render(settings: Settings, boot_env: BootEnv | None = None) -> str:
    """The Prometheus text exposition of the current metrics (for tests and scripts)."""
    from prometheus_client import generate_latest

    return str(generate_latest(registry_for(settings, boot_env)).decode())


class MetricsServer:
    """A running exporter: ``address``, ``wait()``, ``close()``."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host = str(host)
        self.port = int(port)

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``) actually bound."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C or SIGTERM ends the process)."""
        while self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 9469, boot_env: BootEnv | None = None
) -> MetricsServer:
    """Serve /metrics on ``host:port`` in a background thread (port 0 = any free port)."""
    from prometheus_client import start_http_server

    try:
        httpd, thread = start_http_server(
            port, addr=host, registry=registry_for(settings, boot_env)
        )
    except OSError as exc:
        raise ConfigError(
            f"option --listen: cannot listen on {host}:{port}: {exc.strerror or exc}",
            way_out="pick a free port or a local address",
        ) from None
    return MetricsServer(httpd, thread)
