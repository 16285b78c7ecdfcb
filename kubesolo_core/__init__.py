"""The hexagon of kubesolo-update: a pure domain with no I/O, no clock and no logging config.

What a library user imports from here: the :class:`Agent` and the values its
operations return, the ports it needs (``typing.Protocol`` classes), the
domain values (slots, versions, the update state, the bootloader models) and
the errors (catch :class:`KubesoloError`; an untrusted release is a
:class:`TrustRefused` carrying a :class:`Refusal`). Serialisation lives in
:mod:`kubesolo_core.codec`, the safety invariants in
:mod:`kubesolo_core.invariants`.

The public names are loaded on first use (PEP 562), so that importing one
submodule (``kubesolo_core.errors``) does not load the Agent and every value
class with it: a command pays only for the modules it uses
(bench/cli_startup.py times ``status --json``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubesolo_core.bootmodel import Bootloader, BootModel, BootView, GrubModel, TrybootModel
    from kubesolo_core.errors import (
        ConfigError,
        CorruptInput,
        CorruptState,
        InvalidOperation,
        KubesoloError,
        OperationFailed,
        PreflightRefused,
        SlotConflict,
    )
    from kubesolo_core.lifecycle import Phase, UpdateState
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
    from kubesolo_core.refusals import Refusal, TrustRefused
    from kubesolo_core.release import ImageSpec, Release
    from kubesolo_core.results import (
        ActivateResult,
        ApplyResult,
        CheckResult,
        HealthOutcome,
        HealthSettings,
        StatusReport,
    )
    from kubesolo_core.services import Agent
    from kubesolo_core.slots import Slot
    from kubesolo_core.versions import Version

__all__ = [
    "ActivateResult",
    "Agent",
    "ApplyResult",
    "BootEnv",
    "BootModel",
    "BootView",
    "Bootloader",
    "CheckResult",
    "Clock",
    "ConfigError",
    "CorruptInput",
    "CorruptState",
    "EventSink",
    "Fetcher",
    "GrubModel",
    "HealthOutcome",
    "HealthProbes",
    "HealthSettings",
    "ImageSpec",
    "InvalidOperation",
    "Kube",
    "KubesoloError",
    "OperationFailed",
    "Phase",
    "PreflightRefused",
    "Refusal",
    "Release",
    "Slot",
    "SlotConflict",
    "SlotStore",
    "StateStore",
    "StatusReport",
    "TrustRefused",
    "TrybootModel",
    "UpdateState",
    "Version",
]

#: where each public name lives
_HOME = {
    "ActivateResult": "kubesolo_core.results",
    "Agent": "kubesolo_core.services",
    "ApplyResult": "kubesolo_core.results",
    "BootEnv": "kubesolo_core.ports",
    "BootModel": "kubesolo_core.bootmodel",
    "BootView": "kubesolo_core.bootmodel",
    "Bootloader": "kubesolo_core.bootmodel",
    "CheckResult": "kubesolo_core.results",
    "Clock": "kubesolo_core.ports",
    "ConfigError": "kubesolo_core.errors",
    "CorruptInput": "kubesolo_core.errors",
    "CorruptState": "kubesolo_core.errors",
    "EventSink": "kubesolo_core.ports",
    "Fetcher": "kubesolo_core.ports",
    "GrubModel": "kubesolo_core.bootmodel",
    "HealthOutcome": "kubesolo_core.results",
    "HealthProbes": "kubesolo_core.ports",
    "HealthSettings": "kubesolo_core.results",
    "ImageSpec": "kubesolo_core.release",
    "InvalidOperation": "kubesolo_core.errors",
    "Kube": "kubesolo_core.ports",
    "KubesoloError": "kubesolo_core.errors",
    "OperationFailed": "kubesolo_core.errors",
    "Phase": "kubesolo_core.lifecycle",
    "PreflightRefused": "kubesolo_core.errors",
    "Refusal": "kubesolo_core.refusals",
    "Release": "kubesolo_core.release",
    "Slot": "kubesolo_core.slots",
    "SlotConflict": "kubesolo_core.errors",
    "SlotStore": "kubesolo_core.ports",
    "StateStore": "kubesolo_core.ports",
    "StatusReport": "kubesolo_core.results",
    "TrustRefused": "kubesolo_core.refusals",
    "TrybootModel": "kubesolo_core.bootmodel",
    "UpdateState": "kubesolo_core.lifecycle",
    "Version": "kubesolo_core.versions",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
