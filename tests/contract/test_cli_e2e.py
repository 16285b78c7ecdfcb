"""End to end: the real CLI as a subprocess drives a full update on loop devices.

Real: two loop devices holding ext2 filesystems as slots A and B, a grubenv
file, a signed TUF repository made by kubesolo-release's code (Ed25519
keys, a gzip image) served on 127.0.0.1 and checked by the agent's TUF
client against the shipped root.json (--trust-root), kubectl against a
stand-in API server (tests/contract/fakeapi.py), a stand-in containerd socket
answering HTTP/2, the disk probe in a temp dir. The "reboot" is the GRUB
model applied to the grubenv plus a rewritten cmdline file and boot id.
Sequence: status, apply, activate, reboot, healthcheck, status --json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_adapters.sandbox import Sandbox, make_fs_image, release_server
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.publisher.sandbox import publish_signed, signed_repository
from tests.contract.fakeapi import FakeCluster, FakePod, fake_api
from tests.contract.loopdev import attached
from tests.contract.test_probes_local import FakeContainerd
from tests.tools import code_under_test, require_root, require_tool

NODE = "edge-e2e"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[dict[str, object]]:
    require_root()
    require_tool("losetup", "mkfs.ext2", "debugfs", "kubectl")
    sandbox = Sandbox(tmp_path)
    repo = signed_repository(tmp_path / "publisher")
    shipped_root = tmp_path / "os-root.json"
    shipped_root.write_bytes((repo.metadata_dir / "1.root.json").read_bytes())
    factory = make_fs_image(tmp_path, "1.0.0", size=2 << 20)
    old_b = make_fs_image(tmp_path, "0.9.0", size=2 << 20)
    for slot, content in ((Slot.A, factory), (Slot.B, old_b)):
        with sandbox.slot(slot).open("wb") as f:
            f.truncate(4 << 20)
            f.write(content)
    publish_signed(repo, "1.1.0", make_fs_image(tmp_path, "1.1.0", size=2 << 20))
    PythonBackend(sandbox.grubenv).set(
        {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
    )
    sandbox.boot()
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cluster = FakeCluster(
        node_name=NODE, pods=[FakePod(name="coredns", containers=[(long_ago, 0)])]
    )
    sock_dir = Path(f"/tmp/ksu-e2e-{os.getpid()}")  # unix socket paths are short
    sock_dir.mkdir(exist_ok=True)
    with ExitStack() as stack:
        dev_a = stack.enter_context(attached(sandbox.slot(Slot.A)))
        dev_b = stack.enter_context(attached(sandbox.slot(Slot.B)))
        api = stack.enter_context(fake_api(tmp_path, cluster))
        base = stack.enter_context(release_server(repo.served))
        # Callbacks run last-in first-out: the socket closes before its folder goes.
        stack.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        containerd = FakeContainerd(sock_dir / "containerd.sock")
        stack.callback(containerd.close)
        (tmp_path / "data").mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
            "HOME": str(tmp_path),
            "KUBESOLO_UPDATE_CONFIG": "/dev/null",
            "KUBESOLO_UPDATE_BOOT_ID": str(sandbox.boot_id),
            "KUBESOLO_UPDATE_SETTLE_TIMEOUT": "0",
            "KUBESOLO_UPDATE_LOG_FORMAT": "json",
            **code_under_test(),
        }
        flags = [
            "--state", str(tmp_path / "var" / "state.json"),
            "--server", f"{base}/",
            "--trust-root", str(shipped_root),
            "--bootloader", "grub",
            "--grubenv", str(sandbox.grubenv),
            "--slot-a", dev_a,
            "--slot-b", dev_b,
            "--cmdline", str(sandbox.cmdline),
            "--kubeconfig", str(api.kubeconfig),
            "--node-name", NODE,
            "--containerd-socket", str(containerd.path),
            "--data-dir", str(tmp_path / "data"),
        ]  # fmt: skip
        yield {"sandbox": sandbox, "env": env, "flags": flags, "devices": (dev_a, dev_b)}


def cli(box: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubesolo_entrypoints", *box["flags"], *args],  # type: ignore[misc]
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=box["env"],  # type: ignore[arg-type]
    )


def test_full_update_on_loop_devices(box: dict[str, object]) -> None:
    sandbox: Sandbox = box["sandbox"]  # type: ignore[assignment]
    dev_a, dev_b = box["devices"]  # type: ignore[misc]

    before = json.loads(cli(box, "status", "--json").stdout)
    assert [s["device"] for s in before["slots"]] == [dev_a, dev_b]
    assert [s["version"] for s in before["slots"]] == ["1.0.0", "0.9.0"]

    r = cli(box, "apply")
    assert r.returncode == 0, r.stderr
    assert "1.1.0 staged on slot B (verified)" in r.stdout
    # Logs are JSON lines on stderr when it is not a TTY.
    logged = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert "update.phase" in [e["event"] for e in logged]
    # versions are logged as their text (a fleet's log search asks for "1.1.0")
    assert {e.get("to_version") for e in logged if e["event"] == "update.phase"} == {"1.1.0"}
    # off a terminal, progress is a log event (here the end: the apply takes under 10 s)
    done = [e for e in logged if e["event"] == "update.progress"]
    assert done and done[-1]["done_bytes"] == done[-1]["total_bytes"] > 0, done

    r = cli(box, "activate")
    assert r.returncode == 0, r.stderr
    mid = json.loads(cli(box, "status", "--json").stdout)
    assert mid["state"]["phase"] == "activated" and mid["reboot_required"] is True

    slot, _ = sandbox.boot()
    assert slot is Slot.B
    r = cli(box, "healthcheck", "--kube-system-settle", "0", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    health = json.loads(r.stdout)
    assert health["healthy"] is True and health["state"]["phase"] == "success"

    r = cli(box, "status", "--json")
    assert r.returncode == 0, r.stderr
    after = json.loads(r.stdout)
    assert after["trust"]["mode"] == "tuf" and after["state"]["floor_version"] == "1.1.0"
    assert (tmp_state_dir(box) / "tuf" / "root_history" / "1.root.json").exists()
    assert after["booted_slot"] == "B" and after["next_boot"] == "B"
    assert after["boot"]["committed_slot"] == "B" and after["boot"]["boot_success"] is True
    slots = {s["slot"]: s for s in after["slots"]}
    assert slots["B"]["version"] == "1.1.0" and slots["B"]["booted"] is True
    assert slots["A"]["version"] == "1.0.0"
    assert after["state"]["to_version"] == "1.1.0" and after["state"]["last_error"] is None


def tmp_state_dir(box: dict[str, object]) -> Path:
    flags: list[str] = box["flags"]  # type: ignore[assignment]
    return Path(flags[flags.index("--state") + 1]).parent
