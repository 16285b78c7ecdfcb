"""Hardware tier fixtures: the tools it needs, the shared GRUB rig, and the boot count summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardware.harness import STATS, GrubRig
from tests.hardware.wholebox.driver import summary_lines
from tests.tools import in_ci, require_tool

TOOLS = (
    "qemu-system-x86_64",
    "grub-mkimage",
    "grub-editenv",
    "grub-script-check",
    "sfdisk",
    "mkfs.vfat",
    "mkfs.ext2",
    "mcopy",
    "mmd",
    "mdel",
)


@pytest.fixture(scope="session")
def hardware_tools() -> None:
    """Skip (laptop) or fail (CI) unless QEMU, GRUB and the image tools are installed."""
    require_tool(*TOOLS)
    for firmware in (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/lib/grub/i386-pc")):
        if not firmware.exists():
            message = f"{firmware} not found (packages ovmf, grub-pc-bin)"
            if in_ci():
                pytest.fail(f"{message} (CI must not skip: fix .ci/run)", pytrace=False)
            pytest.skip(message)


@pytest.fixture(scope="session")
def grub_rig(hardware_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrubRig]:
    """One image for the whole differential test; each sequence resets its grubenv."""
    workdir = tmp_path_factory.mktemp("grub-rig")
    rig = GrubRig.build(workdir)
    yield rig
    rig.layout.path.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STATS.boots and not STATS.sequences:
        return
    terminalreporter.write_sep("-", "hardware tier: real GRUB under QEMU")
    for line in STATS.lines():
        terminalreporter.write_line(line)
    whole_box = summary_lines()
    if whole_box:
        terminalreporter.write_sep("-", "whole box: the agent inside a real Linux guest")
        for line in whole_box:
            terminalreporter.write_line(line)
