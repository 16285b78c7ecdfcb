"""The ports: what the services need from the world, as typing.Protocol classes.

Each port has an in-memory implementation with fault injection in
``kubesolo_adapters.fakes`` and real ones in the other adapter modules; one
contract suite per port (tests/contract) holds them to the same behaviour.
Ports raise the errors of :mod:`kubesolo_core.errors`; "could not ask" answers
of the Kube port are :class:`~kubesolo_core.policies.Unavailable` values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from kubesolo_core.slots import Slot

if TYPE_CHECKING:  # annotations only: a port costs nothing to import
    from kubesolo_core.bootmodel import Bootloader, BootView
    from kubesolo_core.lifecycle import UpdateState
    from kubesolo_core.policies import PodInfo, ProbeResult, Unavailable
    from kubesolo_core.release import ImageSpec

#: progress callback: (bytes done, bytes expected or None)
Progress = Callable[[int, int | None], None]

#: what the services report on each step worth a log line: ``(event, **fields)``
EventSink = Callable[..., None]


class Clock(Protocol):
    """Time, passed into the core as values."""

    def now(self) -> dt.datetime:
        """Wall-clock time, timezone-aware UTC (for timestamps)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back (for durations)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (the in-memory clock just advances)."""


class StateStore(Protocol):
    """Where UpdateState lives between runs. Saves are atomic: old or new, never half."""

    def load(self) -> UpdateState:
        """The saved state; an absent store gives the idle default.

        A garbage, truncated or future-schema store raises
        :class:`~kubesolo_core.errors.CorruptState` naming it, after setting it
        aside, so the next load starts from idle.
        """

    def save(self, state: UpdateState) -> None:
        """Persist ``state`` durably (one durable write)."""


class BootEnv(Protocol):
    """The bootloader's persistent env plus what the running kernel says about this boot."""

    @property
    def kind(self) -> Bootloader:
        """Which bootloader: its rules (a plain reboot starting a trial or not) follow."""

    def read(self) -> BootView:
        """The env as a kind-neutral view. Raises BootEnvError if unreadable."""

    def activate(self, slot: Slot) -> None:
        """Start a bounded trial of ``slot`` at the next boot (one durable write)."""

    def mark_good(self, slot: Slot) -> None:
        """Commit ``slot``, the one running its trial (one durable write)."""

    def force_rollback(self, to: Slot) -> None:
        """Commit ``to`` now, cancelling any trial (one durable write)."""

    def booted_slot(self) -> Slot | None:
        """The slot this kernel was booted from (kubesolo.slot=), None if unknown."""

    def boot_id(self) -> str | None:
        """An id unique to this boot (/proc/sys/kernel/random/boot_id)."""

    def request_reboot(self) -> None:
        """Reboot in the way the pending trial needs (tryboot: ``reboot "0 tryboot"``)."""


@attrs.frozen(kw_only=True)
class SlotInfo:
    """A slot as found on this box."""

    slot: Slot
    spec: str
    device: str | None
    size: int | None
    exists: bool
    #: why the slot cannot be used (no such label, two devices with it, ...), or None
    problem: str | None = None


@attrs.frozen(kw_only=True)
class WriteResult:
    """What a verified slot write did."""

    written: int
    raw_sha256: str
    served_sha256: str


class SlotStore(Protocol):
    """The two system slots: find, size, read the version, write an image verified."""

    def describe(self, slot: Slot) -> SlotInfo:
        """Resolve the spec (LABEL=, device or image file); never raises for a missing slot."""

    def capacity(self, slot: Slot) -> int | None:
        """Bytes an image may occupy on ``slot``; None when the slot is missing."""

    def read_version(self, slot: Slot) -> str | None:
        """The ``version`` file at the root of the slot's filesystem, None if unreadable."""

    def check_writable(self, slot: Slot) -> None:
        """Prove that writing ``slot`` cannot touch the other slot or the running system.

        By identity, never by the spelling of the specs: raise
        :class:`~kubesolo_core.errors.SlotConflict`, naming both specs and what
        they resolve to, when ``slot`` is the other slot under another name,
        overlaps it, or holds a mounted filesystem. A missing slot passes (the
        preflight reports it). ``write_image`` repeats this check on the open
        slot, right before its first byte.
        """

    def write_image(
        self,
        slot: Slot,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Stream ``chunks`` (served bytes) onto ``slot``, decompressing per ``image``.

        Then flush, read back exactly ``image.raw_size`` bytes and compare with
        ``image.raw_sha256``; raise VerifyError on any mismatch. The served
        bytes' hash is checked by the Fetcher as the stream ends. One durable
        write (a power cut leaves the slot torn, never the other slot touched).
        """


class Fetcher(Protocol):
    """The release server (https, http, file)."""

    def fetch_release(self, url: str) -> bytes:
        """The raw release document at ``url``."""

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        """Stream the served image bytes (URL relative to the document).

        Resumes cut connections with Range, never yields more than
        ``image.size`` bytes, and raises FetchError at the end of the stream if
        the SHA-256 of what was served is not ``image.sha256``.
        """


class Kube(Protocol):
    """The local Kubernetes node. Every answer may be Unavailable: a value, not an error."""

    def node_labels(self) -> Mapping[str, str] | Unavailable:
        """Labels of this node."""

    def node_ready(self) -> bool | Unavailable:
        """The node's Ready condition."""

    def kube_system_pods(self) -> Sequence[PodInfo] | Unavailable:
        """Pods of the kube-system namespace."""

    def apiserver_ready(self) -> bool | Unavailable:
        """``/readyz`` of the API server."""


class HealthProbes(Protocol):
    """Local probes of the health check."""

    def containerd(self) -> ProbeResult:
        """containerd answers on its socket."""

    def probe_url(self, url: str) -> ProbeResult:
        """The operator's probe URL answers 200 in bounded time."""

    def disk_writable(self) -> ProbeResult:
        """A 1 KiB probe file can be written, fsynced, read and removed under the data dir."""
