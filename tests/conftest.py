"""Shared test configuration: tier markers by folder, hypothesis profiles, tool checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Profiles: `dev` is quick for a laptop; `ci` runs more examples with no deadline
# (shared CI machines are noisy). Chosen by KUBESOLO_HYPOTHESIS_PROFILE, or `ci`
# when CI is set.
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(
    os.environ.get("KUBESOLO_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)

_TIERS = ("unit", "contract", "hardware")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            tier = Path(item.path).relative_to(root).parts[0]
        except ValueError:
            continue
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The hostile-input catalogue's passed cases per family (tests/hostile.py)."""
    hostile = sys.modules.get("tests.hostile")
    tally: dict[str, int] = getattr(hostile, "TALLY", {})
    if tally:
        terminalreporter.section("kubesolo-update: hostile-input catalogue (passed cases)")
        for family in sorted(tally):
            terminalreporter.write_line(f"{family}: {tally[family]}")
        terminalreporter.write_line(f"total: {sum(tally.values())}")
