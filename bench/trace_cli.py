"""Run the kubesolo-update CLI with a clock on each port call: where an ``apply`` spends its time.

Used by ``bench/apply_vs_peers.py --breakdown N``; not a tool of its own.
Run as ``python bench/trace_cli.py <CLI arguments>`` with ``BENCH_TRACE_FILE``
set: it imports the CLI and the adapters ``apply`` uses (timed as one
block), wraps the port methods and ``subprocess.run`` with a timer, runs the
CLI exactly as ``python -m kubesolo_entrypoints`` would, and at exit writes
the calls as JSON: (label, start, duration, depth) in seconds from its first
line, plus its first line's wall-clock time (the caller subtracts the
interpreter's own start-up) and the time of exit.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()
T0_WALL = time.time()

import atexit  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

EVENTS: list[tuple[str, float, float, int]] = []
_DEPTH = [0]


def _timed(label: str | Callable[..., str], func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = label if isinstance(label, str) else label(*args, **kwargs)
        start = time.perf_counter()
        _DEPTH[0] += 1
        try:
            return func(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
            EVENTS.append((name, start - T0, time.perf_counter() - start, _DEPTH[0]))

    return wrapper


def _wrap(owner: Any, name: str, label: str) -> None:
    if hasattr(owner, name):
        setattr(owner, name, _timed(label, getattr(owner, name)))


def _dump() -> None:
    doc = {"t0_wall": T0_WALL, "exit": time.perf_counter() - T0, "events": EVENTS}
    with open(os.environ["BENCH_TRACE_FILE"], "w") as fh:  # noqa: PTH123
        json.dump(doc, fh)


def main() -> None:
    start = time.perf_counter()
    from kubesolo_adapters import blockdev, grub, http, kubectl, statefile
    from kubesolo_core import services
    from kubesolo_entrypoints import bootstrap, cli, config, logs, records

    EVENTS.append(
        ("imports (CLI and the adapters apply uses)", start - T0, time.perf_counter() - start, 0)
    )
    _ = (cli, logs)
    for owner, name, label in (
        (config, "load_settings", "settings (defaults, update.conf, environment, flags)"),
        (bootstrap, "bootstrap", "build the agent"),
        (services.Agent, "apply", "Agent.apply"),
        (statefile.JsonStateStore, "load", "state.json load"),
        (statefile.JsonStateStore, "save", "state.json save (atomic, fsync)"),
        (grub.GrubBootEnv, "read", "grubenv read"),
        (grub.GrubBootEnv, "booted_slot", "booted slot (cmdline)"),
        (grub.GrubBootEnv, "boot_id", "boot id"),
        (http.HttpFetcher, "fetch_release", "release document (HTTP)"),
        (http.HttpFetcher, "open_image", "open image (HTTP request)"),
        (blockdev.BlockSlotStore, "read_version", "slot version read"),
        (blockdev.BlockSlotStore, "capacity", "slot capacity"),
        (blockdev.BlockSlotStore, "check_writable", "slot identity guard"),
        (blockdev.BlockSlotStore, "write_image", "write pipeline (stream, write, read back)"),
        (kubectl.KubectlKube, "node_labels", "node labels (preflight)"),
        (records, "write_record", "last-check record"),
    ):
        _wrap(owner, name, label)
    subprocess.run = _timed(  # type: ignore[assignment]
        lambda argv, *a, **k: f"subprocess {os.path.basename(argv[0])}",  # noqa: PTH119
        subprocess.run,
    )
    atexit.register(_dump)
    sys.argv[0] = "kubesolo-update"
    runpy.run_module("kubesolo_entrypoints", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
