"""Start-up: ``status --json`` imports no HTTP client, TUF, prometheus_client, rich or pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubesolo_adapters import sandbox
from kubesolo_core.slots import Slot

FORBIDDEN = (
    "httpx",
    "httpcore",
    "tuf",
    "securesystemslib",
    "prometheus_client",
    "rich",
    "pydantic",
)

PROBE = """
import sys
watch = set(sys.argv.pop(1).split(","))
from kubesolo_entrypoints.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & watch)
sys.stderr.write("LOADED=" + ",".join(loaded) + "\\n")
sys.exit(code)
"""


@pytest.mark.parametrize("trust", ["none", "tuf"])
def test_status_json_does_not_import_heavy_modules(tmp_path: Path, trust: str) -> None:
    box = sandbox.Sandbox(tmp_path)
    for slot in Slot:
        box.slot(slot).write_bytes(b"\0" * 65536)
    box.cmdline.write_text("kubesolo.slot=A\n")
    box.boot_id.write_text("one\n")
    # a signed box builds the TUF fetcher, which loads python-tuf only when it fetches
    signed = ["--trust-root", str(tmp_path / "root.json")] if trust == "tuf" else []
    args = [*box.cli_args(tmp_path / "state.json"), *signed, "status", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id)},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["booted_slot"] == "A"
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("LOADED=")]
    assert loaded == ["LOADED="], proc.stderr


def test_probe_would_see_a_heavy_import() -> None:
    """The probe itself works: importing httpx shows up."""
    proc = subprocess.run(
        [sys.executable, "-c", "import httpx\n" + PROBE, "httpx", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "LOADED=httpx" in proc.stderr
