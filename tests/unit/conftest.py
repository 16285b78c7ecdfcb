"""Prints the run-wide tallies of the simulation tests (crash points covered, boots...)."""

from __future__ import annotations

import pytest

from tests.unit import fuzzing
from tests.unit.harness import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.section("kubesolo-update: boot-sequence simulation")
        for key in sorted(TALLY):
            terminalreporter.write_line(f"{key}: {TALLY[key]}")
    if fuzzing.TALLY:
        terminalreporter.section(
            f"kubesolo-update: parser fuzzing (profile {fuzzing.PROFILE}, "
            f"{fuzzing.FUZZ_EXAMPLES} examples each)"
        )
        for name in sorted(fuzzing.TALLY):
            seconds = fuzzing.SECONDS.get(name, 0.0)
            terminalreporter.write_line(
                f"{name}: {fuzzing.TALLY[name]} examples in {seconds:.1f} s"
            )
        total = sum(fuzzing.SECONDS.values())
        terminalreporter.write_line(f"fuzz tier wall time: {total:.1f} s")
