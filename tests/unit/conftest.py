"""Prints the run-wide tallies of the simulation tests (crash points covered, boots...)."""

from __future__ import annotations

import pytest

from tests.unit.harness import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    terminalreporter.section("kubesolo-update: boot-sequence simulation")
    for key in sorted(TALLY):
        terminalreporter.write_line(f"{key}: {TALLY[key]}")
