"""The library facade: attrs values back, nothing printed, nothing exited."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubesolo_adapters.fakes import MemoryKube, MemoryProbes
from kubesolo_core.errors import ConfigError, InvalidOperation, KubesoloError
from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.bootstrap import OnFirstUse
from kubesolo_entrypoints.facade import (
    ActivateResult,
    Agent,
    ApplyResult,
    CheckResult,
    HealthSettings,
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
    activated = agent.activate()
    assert isinstance(activated, ActivateResult) and not activated.needs_tryboot_reboot
    assert box.reboot() is Slot.B
    outcome = agent.healthcheck()
    assert outcome.state.phase is Phase.SUCCESS
    assert capsys.readouterr() == ("", "")


def test_memory_agent_tryboot_and_errors_are_exceptions() -> None:
    agent, box = memory_agent("tryboot")
    with pytest.raises(InvalidOperation):
        agent.activate()
    box.publish("1.1.0")
    agent.apply()
    assert agent.activate().needs_tryboot_reboot  # the tryboot rule, from the core
    with pytest.raises(KubesoloError, match="lilo"):
        memory_agent("lilo")


def test_an_agent_over_adapters_of_your_own() -> None:
    _, box = memory_agent("grub", version="2.0.0")
    box.boot_env.booted = Slot.B  # a box that runs slot B: no default agent says that
    agent = Agent(
        boot_env=box.boot_env,
        slots=box.slots,
        fetcher=box.fetcher,
        kube=box.kube,
        probes=box.probes,
        clock=box.clock,
        store=box.store,
        server=box.server,
        health=HealthSettings(kube_system_settle=0, settle_timeout=0),
    )
    report = agent.status()
    assert report.booted_slot is Slot.B and report.reboot_required  # GRUB boots A next
    assert {row.info.slot: row.version for row in report.slots} == {Slot.A: "2.0.0", Slot.B: None}


def files_box(tmp_path: Path) -> dict[str, str]:
    """The config of a GRUB box made of files under ``tmp_path``."""
    return {
        "state": str(tmp_path / "state.json"),
        "bootloader": "grub",
        "grubenv": str(tmp_path / "grubenv"),
        "slot_a": str(tmp_path / "a.img"),
        "slot_b": str(tmp_path / "b.img"),
        "cmdline": str(tmp_path / "cmdline"),
    }


def test_agent_from_config_builds_real_adapters(tmp_path: Path) -> None:
    events: list[str] = []
    kube = MemoryKube()
    agent = agent_from_config(
        {
            **files_box(tmp_path),
            # a plain release document (unsigned mode, asked for by name): the HTTP fetcher
            "allow_unsigned": "true",
        },
        events=lambda name, **_: events.append(name),
        kube=kube,
        probes=MemoryProbes(),
    )
    assert agent.kube is kube  # the port given replaces the real one
    (tmp_path / "cmdline").write_text("kubesolo.slot=A\n")
    report = agent.status()
    assert report.boot.kind == "grub"
    assert [s.info.exists for s in report.slots] == [False, False]
    assert type(agent.slots).__name__ == "BlockSlotStore"
    assert type(agent.fetcher).__name__ == "HttpFetcher"
    agent.events("update.test")
    assert events == ["update.test"]
    # with a trust root the fetcher is the TUF client; with neither, nothing is fetched
    signed = agent_from_config({"trust_root": str(tmp_path / "root.json")})
    assert type(signed.fetcher).__name__ == "TufFetcher"
    with pytest.raises(ConfigError, match="trust_root"):
        agent_from_config({"server": "https://x.example/"}).check()


def test_agent_from_config_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBESOLO_UPDATE_SEVER", "x")  # would be an error for the CLI
    agent_from_config({"server": "https://x.example/r.json"})
    with pytest.raises(ConfigError):
        agent_from_config({"server": "ftp://nope"})


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [("slot_b", ["/dev/sda3"], "list"), ("server", b"https://x.example/", "bytes"),
     ("auto_rollback_after", {"n": 3}, "dict")],
)  # fmt: skip
def test_a_mapping_value_with_no_one_text_form_is_refused(
    key: str, value: object, kind: str
) -> None:
    """An embedder's list or bytes is refused by name, not turned into "['/dev/sda3']"."""
    with pytest.raises(ConfigError, match=f"key '{key}': a {kind} is not a value"):
        agent_from_config({key: value})


def test_typed_mapping_values_are_parsed_like_text(tmp_path: Path) -> None:
    agent = agent_from_config(
        {"slot_b": tmp_path / "b.img", "kube_system_settle": 2.5, "auto_rollback_after": 3}
    )
    assert agent.health.kube_system_settle == 2.5 and agent.health.auto_rollback_after == 3


def test_ports_only_check_apply_and_healthcheck_use_are_built_on_first_use(
    tmp_path: Path,
) -> None:
    """status leaves Kubernetes, the probes and the adaptive ports unbuilt; a call builds one."""
    (tmp_path / "a.img").write_bytes(b"\0" * 4096)
    (tmp_path / "b.img").write_bytes(b"\0" * 4096)
    (tmp_path / "cmdline").write_text("kubesolo.slot=A\n")
    agent = agent_from_config({**files_box(tmp_path), "data_dir": str(tmp_path / "data")})
    agent.status()
    deferred = [agent.kube, agent.probes, agent.adaptive]
    assert all(isinstance(port, OnFirstUse) and port._built is None for port in deferred)
    (tmp_path / "data").mkdir()
    assert agent.probes.disk_writable().ok  # the real probe, built now, once
    probes = agent.probes
    assert isinstance(probes, OnFirstUse)
    assert type(probes.built()).__name__ == "LocalProbes"
    assert probes.built() is probes.built()
    adaptive = agent.adaptive
    assert isinstance(adaptive, OnFirstUse)
    assert type(adaptive.built()).__name__ == "AdaptiveUpdater"
