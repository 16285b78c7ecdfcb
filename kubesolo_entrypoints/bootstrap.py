"""The composition root: the one place that turns Settings into an Agent over real adapters.

Nothing here runs at import time. Each adapter module is imported inside the
function that needs it, and the ports a command may not touch (the HTTP
fetcher, kubectl, the local probes) are wrapped in lazy proxies that import
and build the real adapter on first use: ``status --json`` never imports
httpx, and never pays for urllib or kubectl it does not call.

Tests, the demo and library users pass any port explicitly (``overrides``)
and get the real adapters for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubesolo_core.services import Agent, HealthSettings
from kubesolo_core.slots import Slot

if TYPE_CHECKING:
    from kubesolo_core.adaptive import AdaptiveUpdater, ChunkSource, Fetched
    from kubesolo_core.chunks import Need
    from kubesolo_core.policies import PodInfo, ProbeResult, Unavailable
    from kubesolo_core.ports import (
        BootEnv,
        Fetcher,
        HealthProbes,
        Kube,
        Progress,
        SlotStore,
    )
    from kubesolo_core.release import ChunksSpec, ImageSpec
    from kubesolo_entrypoints.config import Settings

#: what services report: event name + fields
EventSink = Callable[..., None]


# --------------------------------------------------------------------------- lazy ports


class LazyFetcher:
    """The Fetcher port, importing httpx (through HttpFetcher) on the first fetch."""

    def __init__(self, factory: Callable[[], Fetcher]) -> None:
        self._factory = factory
        self._real: Fetcher | None = None

    def _get(self) -> Fetcher:
        if self._real is None:
            self._real = self._factory()
        return self._real

    def fetch_release(self, url: str) -> bytes:
        """See :meth:`kubesolo_core.ports.Fetcher.fetch_release`."""
        return self._get().fetch_release(url)

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        """See :meth:`kubesolo_core.ports.Fetcher.open_image`."""
        return self._get().open_image(release_url, image, progress)


class LazyChunkSource:
    """The ChunkSource port, importing httpx (through HttpChunkSource) on first use."""

    def __init__(self, factory: Callable[[], ChunkSource]) -> None:
        self._factory = factory
        self._real: ChunkSource | None = None

    def _get(self) -> ChunkSource:
        if self._real is None:
            self._real = self._factory()
        return self._real

    def fetch_index(self, release_url: str, spec: ChunksSpec) -> bytes:
        """See :class:`kubesolo_core.adaptive.ChunkSource`."""
        return self._get().fetch_index(release_url, spec)

    def fetch_chunks(
        self, release_url: str, spec: ChunksSpec, needs: Sequence[Need]
    ) -> Iterator[Fetched]:
        """See :class:`kubesolo_core.adaptive.ChunkSource`."""
        return self._get().fetch_chunks(release_url, spec, needs)


class LazyKube:
    """The Kube port, building KubectlKube on first use."""

    def __init__(self, factory: Callable[[], Kube]) -> None:
        self._factory = factory
        self._real: Kube | None = None

    def _get(self) -> Kube:
        if self._real is None:
            self._real = self._factory()
        return self._real

    def node_labels(self) -> Mapping[str, str] | Unavailable:
        """See :class:`kubesolo_core.ports.Kube`."""
        return self._get().node_labels()

    def node_ready(self) -> bool | Unavailable:
        """See :class:`kubesolo_core.ports.Kube`."""
        return self._get().node_ready()

    def kube_system_pods(self) -> Sequence[PodInfo] | Unavailable:
        """See :class:`kubesolo_core.ports.Kube`."""
        return self._get().kube_system_pods()

    def apiserver_ready(self) -> bool | Unavailable:
        """See :class:`kubesolo_core.ports.Kube`."""
        return self._get().apiserver_ready()


class LazyProbes:
    """The HealthProbes port, building LocalProbes on first use."""

    def __init__(self, factory: Callable[[], HealthProbes]) -> None:
        self._factory = factory
        self._real: HealthProbes | None = None

    def _get(self) -> HealthProbes:
        if self._real is None:
            self._real = self._factory()
        return self._real

    def containerd(self) -> ProbeResult:
        """See :class:`kubesolo_core.ports.HealthProbes`."""
        return self._get().containerd()

    def probe_url(self, url: str) -> ProbeResult:
        """See :class:`kubesolo_core.ports.HealthProbes`."""
        return self._get().probe_url(url)

    def disk_writable(self) -> ProbeResult:
        """See :class:`kubesolo_core.ports.HealthProbes`."""
        return self._get().disk_writable()


# --------------------------------------------------------------------------- builders


def resolve_bootloader(settings: Settings) -> str:
    """``grub`` or ``tryboot``: ``auto`` picks tryboot when the Pi firmware left its traces.

    The firmware publishes /proc/device-tree/chosen/bootloader on every Pi
    that boots through it; an autoboot.txt at the configured path is the
    other sign. Everything else is a GRUB box.
    """
    if settings.bootloader != "auto":
        return settings.bootloader
    if (settings.device_tree / "chosen" / "bootloader").exists() or settings.autoboot.exists():
        return "tryboot"
    return "grub"


def build_boot_env(settings: Settings, *, reboot: Callable[..., None] | None = None) -> BootEnv:
    """The BootEnv adapter the settings name."""
    from kubesolo_adapters.bootfacts import BootFacts

    facts = BootFacts(cmdline=settings.cmdline, boot_id_path=settings.boot_id)
    if resolve_bootloader(settings) == "tryboot":
        from kubesolo_adapters.tryboot import TrybootBootEnv

        tryboot: BootEnv = TrybootBootEnv(
            settings.autoboot, facts=facts, device_tree=settings.device_tree, reboot=reboot
        )
        return tryboot
    from kubesolo_adapters.grub import GrubBootEnv

    return GrubBootEnv(
        settings.grubenv, facts=facts, backend=settings.grubenv_backend, reboot=reboot
    )


def build_slots(settings: Settings) -> SlotStore:
    """Both slots as block devices, labels or image files."""
    from kubesolo_adapters.blockdev import BlockSlotStore

    return BlockSlotStore({Slot.A: settings.slot_a, Slot.B: settings.slot_b})


def build_adaptive(settings: Settings, slots: SlotStore) -> AdaptiveUpdater | None:
    """The adaptive ports over ``slots`` (block devices and image files), None when off."""
    from kubesolo_adapters.blockdev import BlockSlotStore

    if not settings.adaptive or not isinstance(slots, BlockSlotStore):
        return None
    from kubesolo_adapters.chunkwriter import BlockChunkedSlots
    from kubesolo_core.adaptive import AdaptiveUpdater

    def source() -> ChunkSource:
        from kubesolo_adapters.chunkfetch import HttpChunkSource

        return HttpChunkSource()

    return AdaptiveUpdater(source=LazyChunkSource(source), slots=BlockChunkedSlots(slots))


def _http_fetcher() -> Fetcher:
    from kubesolo_adapters.http import HttpFetcher

    return HttpFetcher()


def health_settings(settings: Settings) -> HealthSettings:
    """The health knobs of ``settings``."""
    return HealthSettings(
        healthcheck_url=settings.healthcheck_url,
        auto_rollback_after=settings.auto_rollback_after,
        kube_system_settle=settings.kube_system_settle,
        settle_timeout=settings.settle_timeout,
        # Poll a little faster than the settle time so a short settle is met promptly.
        poll_interval=min(5.0, max(settings.kube_system_settle / 3, 0.5)),
    )


def build_agent(
    settings: Settings,
    *,
    events: EventSink | None = None,
    **overrides: Any,
) -> Agent:
    """An Agent over the real adapters the settings describe.

    ``overrides`` replaces any port by name (``boot_env``, ``slots``,
    ``fetcher``, ``kube``, ``probes``, ``clock``, ``store``), ``health`` or
    ``adaptive`` (by default the chunked writer over real slots, when
    ``adaptive=true``).
    """
    unknown = set(overrides) - {
        "boot_env",
        "slots",
        "fetcher",
        "kube",
        "probes",
        "clock",
        "store",
        "health",
        "adaptive",
    }
    if unknown:
        raise TypeError(f"build_agent: unknown overrides {sorted(unknown)}")

    def port(name: str, make: Callable[[], Any]) -> Any:
        return overrides[name] if overrides.get(name) is not None else make()

    def clock() -> Any:
        from kubesolo_adapters.clock import SystemClock

        return SystemClock()

    def store() -> Any:
        from kubesolo_adapters.statefile import JsonStateStore

        return JsonStateStore(settings.state)

    def kube() -> Kube:
        from kubesolo_adapters.kubectl import KubectlKube

        return KubectlKube(node_name=settings.node_name, kubeconfig=settings.kubeconfig)

    def probes() -> HealthProbes:
        from kubesolo_adapters.probes import LocalProbes

        return LocalProbes(containerd_socket=settings.containerd_socket, data_dir=settings.data_dir)

    agent_events: dict[str, Any] = {"events": events} if events is not None else {}
    slots = port("slots", lambda: build_slots(settings))
    adaptive = overrides.get("adaptive")
    return Agent(
        boot_env=port("boot_env", lambda: build_boot_env(settings)),
        slots=slots,
        fetcher=port("fetcher", lambda: LazyFetcher(_http_fetcher)),
        kube=port("kube", lambda: LazyKube(kube)),
        probes=port("probes", lambda: LazyProbes(probes)),
        clock=port("clock", clock),
        store=port("store", store),
        server=settings.server,
        health=overrides.get("health") or health_settings(settings),
        adaptive=adaptive if adaptive is not None else build_adaptive(settings, slots),
        **agent_events,
    )


def state_path_sidecar(settings: Settings, name: str) -> Path:
    """A file next to state.json (the last check and health records of the metrics)."""
    return settings.state.with_name(name)
