"""The health check's settle wait says what it waits for (issue 8): a log line per round off a
terminal, one live line on a terminal. The real CLI as a subprocess in a hostile-box sandbox."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from tests.hostile import HostileBox, check
from tests.tools import code_under_test

UNHEALTHY = 4


@pytest.fixture
def trial(hostile: HostileBox) -> HostileBox:
    """A box in the trial boot of 1.1.0 on slot B; its node never gets healthy (no cluster)."""
    check(hostile, ["apply"], code=0, phase=Phase.STAGED)
    check(hostile, ["activate"], code=0, phase=Phase.ACTIVATED, env_intact=False)
    slot, _ = hostile.sandbox.boot()
    assert slot is Slot.B
    hostile.env["KUBESOLO_UPDATE_SETTLE_TIMEOUT"] = "2"  # 0.5 s rounds (kube_system_settle 0)
    hostile.env["KUBESOLO_UPDATE_KUBE_SYSTEM_SETTLE"] = "0"
    return hostile


def test_off_a_terminal_each_round_is_one_structured_log_line(trial: HostileBox) -> None:
    result = check(trial, ["healthcheck"], code=UNHEALTHY, culprit="health check failed",
                   env_intact=False, phase=Phase.ACTIVATED)  # fmt: skip
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    rounds = [e for e in events if e["event"] == "health.waiting"]
    assert 2 <= len(rounds) <= 6, result
    for number, event in enumerate(rounds, start=1):
        assert event["round"] == number
        assert {"apiserver", "node_ready", "kube_system"} <= set(event["failing"])
        assert "kubeconfig" in event["reasons"]["node_ready"]
    lefts = [e["seconds_left"] for e in rounds]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] <= 2


def test_on_a_terminal_one_live_line_says_what_fails_and_how_long(trial: HostileBox) -> None:
    master, slave = pty.openpty()
    env = {"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin", "HOME": str(trial.root),
           **code_under_test(), **trial.env}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubesolo_entrypoints", *trial.argv("healthcheck")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=trial.root,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    text = seen.decode("utf-8", "replace")
    assert code == UNHEALTHY, text
    assert "Traceback" not in text
    lines = [part for part in text.split("\r\x1b[K") if part.startswith("waiting for the node")]
    assert len(lines) >= 2, text
    assert "s left): containerd, apiserver, node_ready, kube_system failing" in lines[0]
    assert "(containerd: containerd socket" in lines[0]
    assert "0 s left" in lines[-1] or "1 s left" in lines[-1]
