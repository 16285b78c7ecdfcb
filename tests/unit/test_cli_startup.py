"""Start-up: what ``status --json`` must not load, and that it starts no process.

Not the HTTP client, TUF, prometheus_client, rich or pydantic (libraries),
nor what only check, apply and healthcheck need: cattrs (state.json is read
past it), sockets, threads, hashing, the health policies, the release and
chunk formats, the slot writer and the download machinery (bench/cli_startup.py
times the rest). And no debugfs: the slots' versions are read directly.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubesolo_adapters import sandbox
from kubesolo_core.codec import dumps_state
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot
from tests.tools import require_tool

FORBIDDEN = (
    "httpx",
    "httpcore",
    "tuf",
    "securesystemslib",
    "prometheus_client",
    "rich",
    "pydantic",
    "cattrs",
    "socket",
    "ssl",
    "concurrent",
    "queue",
    "hashlib",
    "tempfile",
    "kubesolo_core.policies",
    "kubesolo_core.release",
    "kubesolo_core.channel",
    "kubesolo_core.chunks",
    "kubesolo_core.adaptive",
    "kubesolo_core.outcomes",
    "kubesolo_adapters.kubectl",
    "kubesolo_adapters.probes",
    "kubesolo_adapters.slotwriter",
    "kubesolo_adapters.slotguard",
    "kubesolo_adapters.download",
    "kubesolo_adapters.streams",
    "kubesolo_adapters.chunkfetch",
    "kubesolo_adapters.chunkwriter",
)

PROBE = """
import subprocess, sys
watch = set(sys.argv.pop(1).split(","))
started = []
class Popen(subprocess.Popen):
    def __init__(self, args, *rest, **kw):
        started.append(str(args))
        super().__init__(args, *rest, **kw)
subprocess.Popen = Popen
from kubesolo_entrypoints.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
names = set(sys.modules) | {m.split(".")[0] for m in sys.modules}
sys.stderr.write("LOADED=" + ",".join(sorted(names & watch)) + "\\n")
sys.stderr.write("STARTED=" + ";".join(started) + "\\n")
sys.exit(code)
"""


@pytest.mark.parametrize("trust", ["none", "tuf"])
def test_status_json_loads_only_what_it_needs_and_starts_no_process(
    tmp_path: Path, trust: str
) -> None:
    require_tool("mkfs.ext2")
    box = sandbox.Sandbox(tmp_path)
    for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "1.1.0")):
        box.slot(slot).write_bytes(sandbox.make_fs_image(tmp_path, version, size=1 << 20))
    box.cmdline.write_text("kubesolo.slot=A\n")
    box.boot_id.write_text("one\n")
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    state = UpdateState(
        phase=Phase.SUCCESS,
        from_version="1.1.0",
        to_version="1.0.0",
        target_slot=Slot.A,
        attempt_count=1,
        started_at=now,
        updated_at=now,
    )
    (tmp_path / "state.json").write_text(dumps_state(state))
    # a signed box builds the TUF fetcher, which loads python-tuf only when it fetches
    signed = ["--trust-root", str(tmp_path / "root.json")] if trust == "tuf" else []
    args = [*box.cli_args(tmp_path / "state.json"), *signed, "status", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # debugfs is on PATH: not using it is the reader's doing
        env={
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id),
        },
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["booted_slot"] == "A"
    assert [row["version"] for row in doc["slots"]] == ["1.0.0", "1.1.0"]
    assert doc["state"]["to_version"] == "1.0.0"
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("LOADED=")] == ["LOADED="], proc.stderr
    assert [line for line in lines if line.startswith("STARTED=")] == ["STARTED="], proc.stderr


def test_probe_would_see_a_heavy_import_and_a_process() -> None:
    """The probe itself works: a library, a module of ours and a process all show up."""
    before_main = "import httpx, kubesolo_core.policies\nsubprocess.run(['true'])\n"
    probe = PROBE.replace(
        "from kubesolo_entrypoints.cli", before_main + "from kubesolo_entrypoints.cli"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "httpx,kubesolo_core.policies", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "LOADED=httpx,kubesolo_core.policies" in proc.stderr
    assert "STARTED=['true']" in proc.stderr
