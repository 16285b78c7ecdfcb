"""The library facade: attrs values back, nothing printed, nothing exited."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesolo_adapters.memory import MemoryKube, MemoryProbes
from kubesolo_core.errors import ConfigError, InvalidOperation, KubesoloError
from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.facade import (
    ApplyResult,
    CheckResult,
    agent_from_adapters,
    agent_from_config,
    memory_agent,
)


def test_memory_agent_full_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    agent, box = memory_agent("grub")
    box.publish("1.1.0")
    check = agent.check()
    assert isinstance(check, CheckResult) and check.update_available
    applied = agent.apply()
    assert isinstance(applied, ApplyResult) and applied.state.phase is Phase.STAGED
    agent.activate()
    assert box.reboot() is Slot.B
    outcome = agent.healthcheck()
    assert outcome.state.phase is Phase.SUCCESS
    assert capsys.readouterr() == ("", "")


def test_memory_agent_tryboot_and_errors_are_exceptions() -> None:
    agent, _ = memory_agent("tryboot")
    with pytest.raises(InvalidOperation):
        agent.activate()
    with pytest.raises(KubesoloError):
        memory_agent("lilo")


def test_agent_from_adapters_uses_what_it_is_given() -> None:
    _, box = memory_agent()
    agent = agent_from_adapters(
        boot_env=box.boot_env,
        slots=box.slots,
        fetcher=box.fetcher,
        kube=box.kube,
        probes=box.probes,
        clock=box.clock,
        store=box.store,
        server=box.server,
    )
    assert agent.status().booted_slot is Slot.A


def test_agent_from_config_builds_real_adapters(tmp_path: Path) -> None:
    events: list[str] = []
    agent = agent_from_config(
        {
            "state": str(tmp_path / "state.json"),
            "bootloader": "grub",
            "grubenv": str(tmp_path / "grubenv"),
            "slot_a": str(tmp_path / "a.img"),
            "slot_b": str(tmp_path / "b.img"),
            "cmdline": str(tmp_path / "cmdline"),
        },
        events=lambda name, **_: events.append(name),
        kube=MemoryKube(),
        probes=MemoryProbes(),
    )
    (tmp_path / "cmdline").write_text("kubesolo.slot=A\n")
    report = agent.status()
    assert report.boot.kind == "grub"
    assert [s.info.exists for s in report.slots] == [False, False]
    assert type(agent.slots).__name__ == "BlockSlotStore"


def test_agent_from_config_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBESOLO_UPDATE_SEVER", "x")  # would be an error for the CLI
    agent_from_config({"server": "https://x.example/r.json"})
    with pytest.raises(ConfigError):
        agent_from_config({"server": "ftp://nope"})
