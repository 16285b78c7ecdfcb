"""In-memory adapters for every port, with fault injection, plus a whole simulated box.

Shipped in the package on purpose: library users test their provisioning code
against it, the simulator runs on it, and tests/contract holds it to the same
suite as the real adapters, so it stays a faithful fake.

Faults you can inject:

* :class:`Power` cuts the power after the N-th durable write (state saves,
  boot-env writes, slot writes): the write in progress is lost (state and env
  are atomic) or torn (a slot);
* :class:`MemoryBox` boots images that crash (``bootable=False``), that come
  up unhealthy (``healthy=False``), and torn slots that never boot;
* :class:`MemoryFetcher` fails, stalls or truncates the next N requests;
* :class:`MemorySlotStore` fills the disk (``capacity``), loses a slot, or
  flips a bit on the way to the disk;
* :class:`MemoryKube` blocks the node, or becomes unavailable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

from kubesolo_adapters.streams import hashed, raw_chunks, tapped
from kubesolo_core.adaptive import AdaptiveUpdater
from kubesolo_core.bootmodel import BootModel, BootView, GrubModel, TrybootModel
from kubesolo_core.codec import dumps_state, loads_state
from kubesolo_core.errors import CorruptState, FetchError, SlotError, VerifyError
from kubesolo_core.lifecycle import UpdateState
from kubesolo_core.policies import BLOCK_LABEL, PodInfo, ProbeResult, Unavailable
from kubesolo_core.ports import Progress, SlotInfo, WriteResult
from kubesolo_core.release import ImageSpec
from kubesolo_core.services import Agent, HealthSettings
from kubesolo_core.slots import Slot

E = TypeVar("E")

IMAGE_MAGIC = b"KSOLO-IMAGE\n"


class PowerCut(BaseException):
    """The power went off. A BaseException so that no ``except Exception`` survives it."""


@attrs.define
class Power:
    """Counts durable writes; cuts the power after ``cut_after`` of them."""

    cut_after: int | None = None
    writes: int = 0
    log: list[str] = attrs.field(factory=list)

    def durable(self, what: str) -> None:
        """Called before a durable write; raises PowerCut instead of the write past the budget."""
        if self.cut_after is not None and self.writes >= self.cut_after:
            raise PowerCut(what)
        self.writes += 1
        self.log.append(what)


# --------------------------------------------------------------------------- images


def make_image(
    version: str, *, size: int = 4096, bootable: bool = True, healthy: bool = True
) -> bytes:
    """A small synthetic slot image that the memory adapters understand."""
    header = (
        IMAGE_MAGIC
        + json.dumps(
            {"version": version, "bootable": bootable, "healthy": healthy}, sort_keys=True
        ).encode()
        + b"\n"
    )
    if len(header) > size:
        raise ValueError(f"image size {size} is smaller than its header")
    body = hashlib.sha256(version.encode()).digest() * (size // 32 + 1)
    return header + body[: size - len(header)]


def image_meta(content: bytes | None) -> dict[str, Any] | None:
    """The header of a synthetic image, or None for a torn, empty or foreign slot."""
    if not content or not content.startswith(IMAGE_MAGIC):
        return None
    line = content[len(IMAGE_MAGIC) :].split(b"\n", 1)[0]
    try:
        meta = json.loads(line)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


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
    def kind(self) -> str:
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
        meta = image_meta(self.contents.get(slot))
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
        if len(back) != image.raw_size or digest != image.raw_sha256:
            raise VerifyError(
                f"slot {slot.value} read back {len(back)} bytes with SHA-256 {digest}, "
                f"expected {image.raw_size} bytes with {image.raw_sha256}"
            )
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


# --------------------------------------------------------------------------- the box


SERVER = "https://updates.example.invalid/stable/release.json"


@attrs.define
class MemoryBox(Generic[E]):
    """A whole box: two slots, a bootloader, a node, a server, one power rail.

    ``reboot()`` plays the firmware through the pure bootloader model: a slot
    that does not hold a bootable image crashes at once and the bootloader
    counts on; the node comes up healthy or not as the booted image says.
    """

    model: BootModel[E]
    power: Power
    clock: MemoryClock
    boot_env: MemoryBootEnv[E]
    slots: MemorySlotStore
    fetcher: MemoryFetcher
    kube: MemoryKube
    probes: MemoryProbes
    store: MemoryStateStore
    server: str = SERVER
    boots: int = 0
    boot_log: list[tuple[Slot, bool]] = attrs.field(factory=list)
    #: adaptive ports (kubesolo_adapters.memory_chunks.enable_adaptive); None = full images only
    adaptive: AdaptiveUpdater | None = None

    @classmethod
    def create(
        cls,
        bootloader: str = "grub",
        *,
        version: str = "1.0.0",
        image_size: int = 4096,
        capacity: int = 1 << 16,
    ) -> MemoryBox[Any]:
        """A fresh box committed on slot A running ``version``; slot B empty."""
        model: BootModel[Any] = GrubModel() if bootloader == "grub" else TrybootModel()
        power = Power()
        box: MemoryBox[Any] = MemoryBox(
            model=model,
            power=power,
            clock=MemoryClock(),
            boot_env=MemoryBootEnv(model=model, env=model.initial(Slot.A), power=power),
            slots=MemorySlotStore(
                power=power,
                contents={Slot.A: make_image(version, size=image_size)},
                capacities={Slot.A: capacity, Slot.B: capacity},
            ),
            fetcher=MemoryFetcher(),
            kube=MemoryKube(),
            probes=MemoryProbes(),
            store=MemoryStateStore(power=power),
        )
        box.apply_image_health()
        return box

    def agent(self, health: HealthSettings | None = None) -> Agent:
        """An Agent over this box's ports."""
        return Agent(
            boot_env=self.boot_env,
            slots=self.slots,
            fetcher=self.fetcher,
            kube=self.kube,
            probes=self.probes,
            clock=self.clock,
            store=self.store,
            server=self.server,
            health=health or HealthSettings(kube_system_settle=0, settle_timeout=0),
            adaptive=self.adaptive,
        )

    def publish(
        self,
        version: str,
        *,
        bootable: bool = True,
        healthy: bool = True,
        size: int = 4096,
        min_from_version: str | None = None,
    ) -> bytes:
        """Publish a release of ``version`` on the box's server; returns the image."""
        image = make_image(version, size=size, bootable=bootable, healthy=healthy)
        sha = hashlib.sha256(image).hexdigest()
        doc: dict[str, Any] = {
            "schema": 1,
            "version": version,
            "image": {
                "url": f"kubesolo-os-{version}.img",
                "sha256": sha,
                "size": len(image),
                "raw_size": len(image),
                "raw_sha256": sha,
            },
        }
        if min_from_version:
            doc["min_from_version"] = min_from_version
        self.fetcher.publish(self.server, doc, image)
        return image

    def bootable(self, slot: Slot) -> bool:
        """True when ``slot`` holds an image that boots."""
        meta = image_meta(self.slots.contents.get(slot))
        return bool(meta and meta.get("bootable", False))

    def apply_image_health(self) -> None:
        """Make the node's health follow the booted image's ``healthy`` flag."""
        slot = self.boot_env.booted
        meta = image_meta(self.slots.contents.get(slot)) if slot else None
        healthy = bool(meta and meta.get("healthy", False))
        self.kube.ready = healthy
        self.kube.apiserver = healthy
        since = self.clock.now()
        self.kube.pods = [
            PodInfo(
                name="coredns",
                phase="Running" if healthy else "CrashLoopBackOff",
                running_since=since if healthy else None,
            )
        ]

    def reboot(self, *, clean: bool = True, max_attempts: int = 16) -> Slot:
        """Power-cycle through the bootloader model until a slot boots (bounded).

        ``clean=False`` is a power cut or a watchdog: a tryboot flag that only a
        clean ``reboot "0 tryboot"`` would carry is lost.
        """
        self.power.cut_after = None
        env = self.boot_env.env
        if not clean and hasattr(env, "flag"):
            env = attrs.evolve(env, flag=False)  # type: ignore[misc]
        for _ in range(max_attempts):
            outcome = self.model.boot(env)
            env = outcome.env
            self.boots += 1
            ok = self.bootable(outcome.slot)
            self.boot_log.append((outcome.slot, ok))
            if ok:
                self.boot_env.env = env
                self.boot_env.booted = outcome.slot
                self.boot_env.current_boot_id = f"boot-{self.boots}"
                self.boot_env.reboot_requested = False
                self.apply_image_health()
                return outcome.slot
            # The kernel crashed: a watchdog (not a clean reboot) restarts the box.
            if hasattr(env, "flag"):
                env = attrs.evolve(env, flag=False)  # type: ignore[misc]
        self.boot_env.env = env
        raise RuntimeError(f"box did not boot in {max_attempts} attempts: bricked")
