"""The hexagon of kubesolo-update: a pure domain with no I/O, no clock and no logging config.

What a library user imports from here: the :class:`Agent` and the values its
operations return, the ports it needs (``typing.Protocol`` classes), the
domain values (slots, versions, the update state, the bootloader models) and
the errors (catch :class:`KubesoloError`; an untrusted release is a
:class:`TrustRefused` carrying a :class:`Refusal`). Serialisation lives in
:mod:`kubesolo_core.codec`, the safety invariants in
:mod:`kubesolo_core.invariants`.
"""

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
