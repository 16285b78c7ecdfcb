"""The error hierarchy of kubesolo-update.

Every error names what was checked, the value seen and the way out. The CLI
maps each class to one documented exit code (kubesolo_entrypoints.cli); library
users catch :class:`KubesoloError` or a subclass.
"""

from __future__ import annotations


class KubesoloError(Exception):
    """Base of every error the agent raises on purpose."""

    #: a short hint on how to get past the error (a flag, a config key), or ""
    way_out: str = ""

    def __init__(self, message: str, *, way_out: str = "") -> None:
        super().__init__(message)
        self.message = message
        if way_out:
            self.way_out = way_out

    def __str__(self) -> str:
        if self.way_out:
            return f"{self.message} (way out: {self.way_out})"
        return self.message


class OperationFailed(KubesoloError):
    """An operation could not complete (network, disk, bootloader). Nothing committed."""


class Busy(OperationFailed):
    """Another kubesolo-update holds the run lock (apply, activate, ...): nothing was done."""


class FetchError(OperationFailed):
    """The release document or the image could not be fetched, or did not match."""


class SlotError(OperationFailed):
    """A slot is missing, too small, busy, or its write or read-back failed."""


class VerifyError(SlotError):
    """What was written to the passive slot is not what the release promised."""


class BootEnvError(OperationFailed):
    """The bootloader environment could not be read or written."""


class PreflightRefused(KubesoloError):
    """The update was refused before any byte of the passive slot was touched."""

    def __init__(
        self,
        reasons: list[str] | tuple[str, ...],
        *,
        way_out: str = "",
        codes: tuple[str, ...] = (),
    ) -> None:
        self.reasons = tuple(reasons)
        #: the machine reason of each refusal (see kubesolo_core.refusals)
        self.codes = tuple(codes)
        super().__init__("refused by preflight: " + "; ".join(self.reasons), way_out=way_out)


class InvalidOperation(KubesoloError):
    """The command does not apply in the current phase (e.g. activate with nothing staged)."""


class IllegalTransition(InvalidOperation):
    """The lifecycle table forbids this phase change. The state is left as it was."""


class CorruptInput(KubesoloError):
    """A file or document the agent reads is not what it should be."""


class CorruptState(CorruptInput):
    """state.json is garbage, truncated, empty or from a future schema."""


class InvalidRelease(CorruptInput):
    """The release document is malformed."""


class InvalidUrl(CorruptInput):
    """A URL is malformed or not allowed where it was given (kubesolo_core.urls).

    Callers that know where the URL came from re-raise it as the error of that
    source, naming the key or field: ConfigError for configuration,
    InvalidRelease for a release document.
    """


class ConfigError(KubesoloError):
    """A configuration key, value or file is wrong (usage error)."""


class SlotConflict(ConfigError):
    """The passive slot's spec resolves to the running system: the booted or committed
    slot, a mounted filesystem, or a disk holding them. Nothing was written."""

    way_out = (
        "point slot_a=/slot_b= (--slot-a/--slot-b) at the two distinct slot partitions "
        "(see `kubesolo-update status`)"
    )
