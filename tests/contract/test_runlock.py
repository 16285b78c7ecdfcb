"""One kubesolo-update at a time: the run lock (kubesolo_adapters.runlock), real flock, real CLI.

A second run of a command that may change anything (the CronJob's apply while
an operator runs apply, the boot helper's healthcheck during an apply) waits
``lock_wait`` seconds, then exits 1 having done nothing; ``status`` never
waits. A holder that dies drops the lock with its descriptors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubesolo_adapters.runlock import LOCK_NAME, RunLock
from kubesolo_core.errors import Busy, OperationFailed
from tests.hostile import Case, HostileBox, case, run_case

FAILED = 1
LOCK = "run lock"


def test_a_second_holder_waits_then_is_told_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    with RunLock.acquire(path, command="apply", wait=0) as held:
        assert held.held
        started = time.monotonic()
        with pytest.raises(Busy) as caught:
            RunLock.acquire(path, command="healthcheck", wait=0.5)
        waited = time.monotonic() - started
        assert 0.4 <= waited < 3.0, waited
        assert f"pid {os.getpid()}, apply since" in str(caught.value)
    # released: the next run takes it at once
    with RunLock.acquire(path, command="check", wait=0):
        assert f"{os.getpid()} check " in path.read_text()


def test_any_wait_a_library_caller_gives_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    with RunLock.acquire(path, command="apply", wait=float("inf")):  # free: taken at once
        for wait in (float("nan"), -5.0, 0.0):
            started = time.monotonic()
            with pytest.raises(Busy):
                RunLock.acquire(path, command="check", wait=wait)
            assert time.monotonic() - started < 1.0


def test_a_holder_that_dies_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "state" / LOCK_NAME
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time; from pathlib import Path; "
          "from kubesolo_adapters.runlock import RunLock; "
          f"RunLock.acquire(Path({str(path)!r}), command='apply', wait=0); "
          "print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"pid {holder.pid}"):
            RunLock.acquire(path, command="apply", wait=0)
        os.kill(holder.pid, signal.SIGKILL)  # a power cut, as far as the lock can tell
        holder.wait(timeout=30)
        with RunLock.acquire(path, command="apply", wait=0):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    (tmp_path / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OperationFailed, match="symbolic link"):
        RunLock.acquire(tmp_path / LOCK_NAME, command="apply", wait=0)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_lock_path_that_is_not_a_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / LOCK_NAME
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    started = time.monotonic()
    with pytest.raises(OperationFailed, match=str(path)):
        RunLock.acquire(path, command="apply", wait=5)
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- the CLI

LOCKED_CASES: list[Case] = [
    case(LOCK, f"{command}-while-another-runs", command, FAILED,
         ("another kubesolo-update", "apply since", LOCK_NAME), state_intact=True, max_seconds=20)
    for command in ("check", "apply", "activate", "rollback", "healthcheck")
]  # fmt: skip


@pytest.mark.parametrize("spec", LOCKED_CASES, ids=lambda c: c.id)
def test_one_run_at_a_time(hostile: HostileBox, spec: Case) -> None:
    hostile.env["KUBESOLO_UPDATE_LOCK_WAIT"] = "0.5"
    with RunLock.acquire(hostile.state.parent / LOCK_NAME, command="apply", wait=0):
        run_case(hostile, spec)


def test_status_never_waits_for_the_lock(hostile: HostileBox) -> None:
    hostile.env["KUBESOLO_UPDATE_LOCK_WAIT"] = "30"
    with RunLock.acquire(hostile.state.parent / LOCK_NAME, command="apply", wait=0):
        spec = case(LOCK, "status-while-another-runs", "status", 0, max_seconds=15)
        run_case(hostile, spec)
