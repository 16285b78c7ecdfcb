"""Static checks of the shipped deploy/grub.cfg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.hardware.diskimage import GRUB_MODULES
from tests.hardware.harness import GRUB_CFG
from tests.tools import require_tool


def test_grub_script_check_accepts_the_shipped_grub_cfg() -> None:
    require_tool("grub-script-check")
    done = subprocess.run(
        ["grub-script-check", str(GRUB_CFG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grub_script_check_rejects_a_broken_script(tmp_path: Path) -> None:
    """The check above can fail: an unterminated if is refused."""
    require_tool("grub-script-check")
    broken = tmp_path / "grub.cfg"
    broken.write_text(GRUB_CFG.read_text().replace("\nfi\n", "\n", 1))
    done = subprocess.run(["grub-script-check", str(broken)], capture_output=True, check=False)
    assert done.returncode != 0


@pytest.mark.parametrize(
    "command",
    ["load_env", "save_env", "regexp", "sleep", "search", "linux", "halt", "serial", "reboot"],
)
def test_every_command_the_script_uses_is_in_the_image(command: str) -> None:
    """GRUB loads no modules at run time from our ESP: grub-mkimage must embed them all."""
    module_of = {"load_env": "loadenv", "save_env": "loadenv"}
    assert command in GRUB_CFG.read_text()
    assert module_of.get(command, command) in GRUB_MODULES


def test_menu_entries_and_marker() -> None:
    text = GRUB_CFG.read_text()
    for wanted in ("debug", "emergency shell", "slot A by hand", "slot B by hand"):
        assert wanted in text
    assert 'echo "KSOLO-BOOT slot=' in text
    assert "set timeout=0" in text
