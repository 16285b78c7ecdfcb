"""The single-file build: scripts/build-zipapp.sh, then run it with a clean interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubesolo_core.slots import Slot
from kubesolo_entrypoints import demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "kubesolo-update.pyz"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/build-zipapp.sh"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def run(
    pyz: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # -I: isolated (no site-packages, no PYTHON* variables, no user site):
    # only what is inside the archive can be imported.
    return subprocess.run(
        [sys.executable, "-I", str(pyz), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **(env or {})},
    )


def test_help_from_the_zipapp(pyz: Path) -> None:
    proc = run(pyz, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes: 0 ok" in proc.stdout and "healthcheck" in proc.stdout


def test_status_json_from_the_zipapp(pyz: Path, tmp_path: Path) -> None:
    box = demo.Sandbox(tmp_path)
    box.slot(Slot.A).write_bytes(b"\0" * 65536)
    box.slot(Slot.B).write_bytes(b"\0" * 65536)
    box.cmdline.write_text("kubesolo.slot=B\n")
    box.boot_id.write_text("z\n")
    proc = run(
        pyz,
        *box.cli_args(tmp_path / "state.json"),
        "status", "--json",
        env={"KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["booted_slot"] == "B" and doc["state"]["phase"] == "idle"


def test_the_archive_is_self_contained(pyz: Path) -> None:
    """A usage error from inside the archive is one line and exit 2, not an ImportError."""
    proc = run(pyz, "--slot-a", "UUID=x", "status")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "--slot-a" in proc.stderr


def test_cloud_init_from_the_zipapp(pyz: Path, tmp_path: Path) -> None:
    """PyYAML travels in the archive (its pure-Python part: the C accelerator is left out)."""
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#cloud-config\nx: &s\n  server: https://u.example/r.json\nupdates:\n  <<: *s\n"
        "  auto_rollback_after: 2\n"
    )
    proc = run(pyz, "config", "from-cloud-init", str(userdata))
    assert proc.returncode == 0, proc.stderr
    assert "server=https://u.example/r.json" in proc.stdout
    assert "auto_rollback_after=2" in proc.stdout
