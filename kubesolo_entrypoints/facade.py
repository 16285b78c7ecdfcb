"""The library facade: an update agent for provisioning tools, without the CLI.

Build an agent from a configuration mapping (the keys of update.conf), or
from adapters of your own with ``Agent(boot_env=..., slots=..., ...)``; call
its operations, get attrs values back. Nothing
here prints, exits or configures logging; errors are the classes of
:mod:`kubesolo_core.errors` (catch :class:`KubesoloError`)::

    from kubesolo_entrypoints.facade import agent_from_config

    agent = agent_from_config({"server": "https://updates.example.com/kubesolo-os/",
                               "trust_root": "/etc/kubesolo/root.json",
                               "slot_a": "/dev/sda2", "slot_b": "/dev/sda3"})
    result = agent.check()          # CheckResult
    if result.update_available:
        agent.apply()               # ApplyResult
        agent.activate()            # ActivateResult

For tests of provisioning code, :func:`memory_agent` gives an agent over a
whole simulated box (:class:`~kubesolo_adapters.fakes.MemoryBox`), with its
fault injection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubesolo_core.adaptive import AdaptiveUpdater
from kubesolo_core.bootmodel import Bootloader
from kubesolo_core.errors import KubesoloError
from kubesolo_core.ports import (
    BootEnv,
    Clock,
    EventSink,
    Fetcher,
    HealthProbes,
    Kube,
    SlotStore,
    StateStore,
)
from kubesolo_core.results import (
    ActivateResult,
    ApplyResult,
    CheckResult,
    HealthOutcome,
    HealthSettings,
    StatusReport,
)
from kubesolo_core.services import Agent

__all__ = [
    "ActivateResult",
    "Agent",
    "ApplyResult",
    "CheckResult",
    "HealthOutcome",
    "HealthSettings",
    "KubesoloError",
    "StatusReport",
    "agent_from_config",
    "memory_agent",
    "settings_from_config",
]


def settings_from_config(
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Any:
    """Resolve :class:`~kubesolo_entrypoints.config.Settings` from a mapping.

    ``config`` holds update.conf keys (strings are parsed as in the file).
    Unlike the CLI, the process environment and /etc/kubesolo/update.conf
    are ignored unless asked for: pass ``environ=os.environ`` and/or
    ``config_file``.
    """
    from kubesolo_entrypoints.config import load_settings

    flags = {"config": config_file or "/dev/null"}
    return load_settings(flags, environ if environ is not None else {}, config=config)


def agent_from_config(
    config: Mapping[str, Any] | None = None,
    *,
    events: EventSink | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    boot_env: BootEnv | None = None,
    slots: SlotStore | None = None,
    fetcher: Fetcher | None = None,
    kube: Kube | None = None,
    probes: HealthProbes | None = None,
    clock: Clock | None = None,
    store: StateStore | None = None,
    adaptive: AdaptiveUpdater | None = None,
) -> Agent:
    """An Agent over the real adapters described by ``config``.

    Any port given replaces its real adapter (e.g. a different Kube);
    ``adaptive`` the chunked-update ports (by default built over real slots).
    ``events`` receives ``(event, **fields)`` for each step. An agent over
    adapters you built yourself is just ``Agent(boot_env=..., slots=..., ...)``.
    """
    from kubesolo_entrypoints.bootstrap import bootstrap

    settings = settings_from_config(config, environ=environ, config_file=config_file)
    return bootstrap(
        settings,
        events=events,
        boot_env=boot_env,
        slots=slots,
        fetcher=fetcher,
        kube=kube,
        probes=probes,
        clock=clock,
        store=store,
        adaptive=adaptive,
    )


def memory_agent(bootloader: str = "grub", *, version: str = "1.0.0") -> tuple[Agent, Any]:
    """An Agent over a simulated box (GRUB or tryboot) and the box itself.

    Publish releases with ``box.publish("1.1.0")``, reboot with
    ``box.reboot()``, inject faults through ``box.power``, ``box.fetcher``...
    """
    from kubesolo_adapters.fakes import MemoryBox

    try:
        kind = Bootloader(bootloader)
    except ValueError:
        raise KubesoloError(
            f"unknown bootloader {bootloader!r}", way_out="use 'grub' or 'tryboot'"
        ) from None
    box = MemoryBox.create(kind, version=version)
    return box.agent(), box
