"""In-memory adapters of every port, with fault injection.

Shipped in the package on purpose: library users test their provisioning code
against them, the simulator runs on them, and tests/contract holds them to the
same suites as the real adapters, so they stay faithful fakes.

Faults you can inject:

* :class:`~kubesolo_adapters.fakes.power.Power` cuts the power after the N-th
  durable write (state saves, boot-env writes, slot writes): the write in
  progress is lost (state and env are atomic) or torn (a slot);
* :class:`MemoryFetcher` fails, stalls or truncates the next N requests;
* :class:`MemorySlotStore` fills the disk (``capacity``), loses a slot, flips
  a bit on the way to the disk, or is misconfigured so that one slot is the
  other under another name;
* :class:`MemoryKube` blocks the node, or becomes unavailable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

from kubesolo_adapters.fakes.images import image_meta
from kubesolo_adapters.fakes.power import Power, PowerCut
from kubesolo_adapters.streams import hashed, raw_chunks, tapped
from kubesolo_core.bootmodel import Bootloader, BootModel, BootView
from kubesolo_core.codec import dumps_state, loads_state, looks_like_state
from kubesolo_core.errors import CorruptState, FetchError, SlotConflict, SlotError, VerifyError
from kubesolo_core.lifecycle import UpdateState
from kubesolo_core.policies import BLOCK_LABEL, PodInfo, ProbeResult, Unavailable
from kubesolo_core.ports import Progress, SlotInfo, WriteResult
from kubesolo_core.release import ImageSpec, verify_written
from kubesolo_core.slots import Slot

__all__ = [
    "MemoryBootEnv",
    "MemoryClock",
    "MemoryFetcher",
    "MemoryKube",
    "MemoryProbes",
    "MemorySlotStore",
    "MemoryStateStore",
]

E = TypeVar("E")


# --------------------------------------------------------------------------- clock


@attrs.define
class MemoryClock:
    """A clock that only moves when told to (or when something sleeps)."""

    start: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    elapsed: float = 0.0

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.elapsed += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.elapsed += seconds


# --------------------------------------------------------------------------- state


@attrs.define
class MemoryStateStore:
    """state.json in memory: atomic saves, corrupt text set aside like the real store."""

    power: Power = attrs.field(factory=Power)
    text: str | None = None
    set_aside: list[str] = attrs.field(factory=list)

    def load(self) -> UpdateState:
        if self.text is None:
            return UpdateState()
        try:
            return loads_state(self.text, source="memory:state.json")
        except CorruptState as exc:
            if not looks_like_state(self.text):  # as the real store: never move a foreign file
                exc.message += " (left in place: not a state file)"
                raise
            self.set_aside.append(self.text)
            self.text = None
            exc.message += " (set aside; the next run starts from idle)"
            raise

    def save(self, state: UpdateState) -> None:
        self.power.durable("state.save")
        self.text = dumps_state(state)


# --------------------------------------------------------------------------- boot env


@attrs.define
class MemoryBootEnv(Generic[E]):
    """A bootloader env driven by its pure model, plus the running boot's facts."""

    model: BootModel[E]
    env: E
    power: Power = attrs.field(factory=Power)
    booted: Slot | None = Slot.A
    current_boot_id: str | None = "boot-0"
    reboot_requested: bool = False

    @property
    def kind(self) -> Bootloader:
        return self.model.kind

    def read(self) -> BootView:
        return self.model.view(self.env)

    def activate(self, slot: Slot) -> None:
        self.power.durable("bootenv.activate")
        self.env = self.model.activate(self.env, slot)

    def mark_good(self, slot: Slot) -> None:
        self.power.durable("bootenv.mark_good")
        self.env = self.model.mark_good(self.env, slot)

    def force_rollback(self, to: Slot) -> None:
        self.power.durable("bootenv.force_rollback")
        self.env = self.model.force_rollback(self.env, to)

    def booted_slot(self) -> Slot | None:
        return self.booted

    def boot_id(self) -> str | None:
        return self.current_boot_id

    def request_reboot(self) -> None:
        self.reboot_requested = True


# --------------------------------------------------------------------------- slots


@attrs.define
class MemorySlotStore:
    """Two slots as byte strings with capacities."""

    power: Power = attrs.field(factory=Power)
    contents: dict[Slot, bytes] = attrs.field(factory=dict)
    capacities: dict[Slot, int | None] = attrs.field(
        factory=lambda: {Slot.A: 1 << 20, Slot.B: 1 << 20}
    )
    #: flip one bit of the next write on its way to the "disk"
    flip_next_write: bool = False
    #: a misconfiguration: this slot is another name for the other slot (a
    #: symlink to its file, say), so its bytes are the other slot's bytes
    alias_of_other: Slot | None = None

    def _medium(self, slot: Slot) -> Slot:
        return slot.other() if slot is self.alias_of_other else slot

    def check_writable(self, slot: Slot) -> None:
        if self._medium(slot) is not slot:
            raise SlotConflict(
                f"refusing to write: slot {slot.value} 'memory:{slot.value}' resolves to "
                f"memory:{slot.other().value}, the same as slot {slot.other().value}: they are "
                "one slot; nothing was written"
            )

    def describe(self, slot: Slot) -> SlotInfo:
        size = self.capacities.get(slot)
        return SlotInfo(
            slot=slot,
            spec=f"memory:{slot.value}",
            device=f"memory:{slot.value}",
            size=size,
            exists=size is not None,
            problem=None if size is not None else f"slot {slot.value} not found",
        )

    def capacity(self, slot: Slot) -> int | None:
        return self.capacities.get(slot)

    def read_version(self, slot: Slot) -> str | None:
        meta = image_meta(self.contents.get(self._medium(slot)))
        version = meta.get("version") if meta else None
        return version if isinstance(version, str) else None

    def write_image(
        self,
        slot: Slot,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> WriteResult:
        capacity = self.capacities.get(slot)
        if capacity is None:
            raise SlotError(f"slot {slot.value} not found")
        self.check_writable(slot)  # as the real store: the guard right before the first byte
        slot = self._medium(slot)
        served = hashlib.sha256()
        if image.raw_size > capacity:
            raise SlotError(
                f"slot {slot.value} holds {capacity} bytes, the image needs {image.raw_size}"
            )
        buf = bytearray()
        for raw in raw_chunks(tapped(chunks, served), image.compression, piece=1 << 16):
            buf += raw
            if len(buf) > image.raw_size:
                # What hit the disk before the excess was noticed: torn.
                self.contents[slot] = bytes(buf[: image.raw_size])
                raise VerifyError(
                    f"slot {slot.value}: the stream decompresses to more than "
                    f"the {image.raw_size} bytes announced"
                )
            if progress is not None:
                progress(len(buf), image.raw_size)
        if self.flip_next_write and buf:
            buf[len(buf) // 2] ^= 0x01
            self.flip_next_write = False
        try:
            self.power.durable(f"slot.write:{slot.value}")
        except PowerCut:
            self.contents[slot] = bytes(buf[: len(buf) // 2])  # torn
            raise
        self.contents[slot] = bytes(buf)
        back = self.contents[slot][: image.raw_size]
        digest = hashlib.sha256(back).hexdigest()
        verify_written(image, length=len(back), sha256=digest, where=f"slot {slot.value}")
        return WriteResult(written=len(buf), raw_sha256=digest, served_sha256=served.hexdigest())


# --------------------------------------------------------------------------- fetcher


@attrs.define
class MemoryFetcher:
    """A release server in memory: documents and images by URL, with a flaky network."""

    documents: dict[str, bytes] = attrs.field(factory=dict)
    images: dict[str, bytes] = attrs.field(factory=dict)
    #: the next N requests fail (connection refused)
    fail_next: int = 0
    #: the next N image streams are cut after this many bytes
    truncate_next: int = 0
    truncate_at: int = 100
    #: the next N requests stall until the timeout
    stall_next: int = 0
    chunk_size: int = 1024
    requests: int = 0

    def publish(self, url: str, document: Mapping[str, Any], image: bytes | None = None) -> None:
        """Serve ``document`` at ``url`` and ``image`` at its image URL."""
        self.documents[url] = json.dumps(document).encode()
        if image is not None:
            self.images[_resolve(url, str(document["image"]["url"]))] = image

    def _fault(self, url: str) -> None:
        self.requests += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise FetchError(f"{url}: connection refused (injected)")
        if self.stall_next > 0:
            self.stall_next -= 1
            raise FetchError(f"{url}: timed out (injected stall)")

    def fetch_release(self, url: str) -> bytes:
        self._fault(url)
        if url not in self.documents:
            raise FetchError(f"{url}: 404 not found")
        return self.documents[url]

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        url = _resolve(release_url, image.url)
        self._fault(url)
        if url not in self.images:
            raise FetchError(f"{url}: 404 not found")
        data = self.images[url]
        if self.truncate_next > 0:
            self.truncate_next -= 1
            data = data[: self.truncate_at]

        def stream() -> Iterator[bytes]:
            for i in range(0, len(data), self.chunk_size):
                yield data[i : i + self.chunk_size]

        return hashed(stream(), size=image.size, sha256=image.sha256, what=url)


def _resolve(base: str, url: str) -> str:
    # Enough of RFC 3986 for the fake: absolute URLs stay, others sit next to the document.
    if "://" in url:
        return url
    return base.rsplit("/", 1)[0] + "/" + url


# --------------------------------------------------------------------------- kube + probes


@attrs.define
class MemoryKube:
    """The local node and its kube-system pods."""

    labels: dict[str, str] = attrs.field(factory=dict)
    ready: bool = True
    apiserver: bool = True
    pods: list[PodInfo] = attrs.field(factory=list)
    unavailable: str | None = None

    def block(self, blocked: bool = True) -> None:
        """Put (or take off) the label that blocks updates."""
        if blocked:
            self.labels[BLOCK_LABEL] = "true"
        else:
            self.labels.pop(BLOCK_LABEL, None)

    def node_labels(self) -> Mapping[str, str] | Unavailable:
        return Unavailable(reason=self.unavailable) if self.unavailable else dict(self.labels)

    def node_ready(self) -> bool | Unavailable:
        return Unavailable(reason=self.unavailable) if self.unavailable else self.ready

    def kube_system_pods(self) -> Sequence[PodInfo] | Unavailable:
        return Unavailable(reason=self.unavailable) if self.unavailable else list(self.pods)

    def apiserver_ready(self) -> bool | Unavailable:
        return Unavailable(reason=self.unavailable) if self.unavailable else self.apiserver


@attrs.define
class MemoryProbes:
    """containerd, the probe URL and the disk, each settable."""

    containerd_ok: bool = True
    url_status: dict[str, int] = attrs.field(factory=dict)
    disk_ok: bool = True

    def containerd(self) -> ProbeResult:
        return ProbeResult(
            ok=self.containerd_ok,
            reason="" if self.containerd_ok else "containerd socket refused the connection",
        )

    def probe_url(self, url: str) -> ProbeResult:
        status = self.url_status.get(url, 200)
        return ProbeResult(
            ok=status == 200, reason="" if status == 200 else f"{url} answered {status}"
        )

    def disk_writable(self) -> ProbeResult:
        return ProbeResult(
            ok=self.disk_ok,
            reason="" if self.disk_ok else "probe file could not be written (read-only or full)",
        )
