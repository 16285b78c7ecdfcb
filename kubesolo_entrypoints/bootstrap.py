"""The composition root: the one place that turns Settings into an Agent.

:func:`bootstrap` builds the real adapter for every port the caller does not
pass (cosmicpython's ``bootstrap``): tests, the demo and library users hand in
fakes by keyword, typed. Nothing here runs at import time, each adapter
module is imported by the builder that needs it, and the adapters import their
heavy libraries (httpx, ssl, python-tuf) only in the methods that use them:
``status --json`` builds a fetcher but never loads httpx or tuf. The ports
only check, apply and healthcheck use (Kubernetes, the probes, the adaptive
chunk ports) are built on first use (:class:`OnFirstUse`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from kubesolo_core.bootmodel import Bootloader
from kubesolo_core.results import HealthSettings
from kubesolo_core.services import Agent
from kubesolo_core.slots import Slot

if TYPE_CHECKING:
    from kubesolo_core.adaptive import AdaptiveUpdater
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
    from kubesolo_entrypoints.config import Settings

T = TypeVar("T")


# --------------------------------------------------------------------------- builders


def resolve_bootloader(settings: Settings) -> Bootloader:
    """``grub`` or ``tryboot``: ``auto`` picks tryboot when the Pi firmware left its traces.

    The firmware publishes /proc/device-tree/chosen/bootloader on every Pi
    that boots through it; an autoboot.txt at the configured path is the
    other sign. Everything else is a GRUB box.
    """
    if settings.bootloader != "auto":
        return Bootloader(settings.bootloader)
    if (settings.device_tree / "chosen" / "bootloader").exists() or settings.autoboot.exists():
        return Bootloader.TRYBOOT
    return Bootloader.GRUB


def build_boot_env(settings: Settings, *, reboot: Callable[..., None] | None = None) -> BootEnv:
    """The BootEnv adapter the settings name."""
    from kubesolo_adapters.bootfacts import BootFacts

    facts = BootFacts(cmdline=settings.cmdline, boot_id_path=settings.boot_id)
    if resolve_bootloader(settings) is Bootloader.TRYBOOT:
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
    """The adaptive ports over ``slots`` (block devices and image files); None when off.

    ``adaptive=false`` in update.conf, or slots that are not the real block
    slots (a fake given by a test), leave the agent on full images. The
    ports are built when ``apply`` first uses them (:class:`OnFirstUse`).
    """
    from kubesolo_adapters.blockdev import BlockSlotStore

    if not settings.adaptive or not isinstance(slots, BlockSlotStore):
        return None

    def build() -> AdaptiveUpdater:
        from kubesolo_adapters.chunkfetch import HttpChunkSource
        from kubesolo_adapters.chunkwriter import BlockChunkedSlots
        from kubesolo_core.adaptive import AdaptiveUpdater

        return AdaptiveUpdater(source=HttpChunkSource(), slots=BlockChunkedSlots(slots))

    return cast("AdaptiveUpdater", OnFirstUse(build))


class OnFirstUse(Generic[T]):
    """A port whose adapter is built the first time the agent uses it.

    Some ports serve only check, apply and healthcheck (Kubernetes, the
    health probes, the adaptive chunk fetcher and writer), and their modules
    (the health policies, threads, hashing, zstd, the chunk index) cost more
    to load than everything ``status`` does. Built on first use, they cost a
    command that never calls them nothing (bench/cli_startup.py). Every
    attribute is the built adapter's.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._built: T | None = None

    def built(self) -> T:
        """The adapter (built on the first call)."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_build", "_built"):
            raise AttributeError(name)  # copy/pickle probes, or a half-made instance
        return getattr(self.built(), name)

    def __repr__(self) -> str:
        return f"OnFirstUse({self._built!r})" if self._built is not None else "OnFirstUse(...)"


def build_kube(settings: Settings) -> Kube:
    """The Kube port over kubectl."""
    from kubesolo_adapters.kubectl import KubectlKube

    return KubectlKube(node_name=settings.node_name, kubeconfig=settings.kubeconfig)


def build_probes(settings: Settings) -> HealthProbes:
    """The HealthProbes port over this box."""
    from kubesolo_adapters.probes import LocalProbes

    return LocalProbes(containerd_socket=settings.containerd_socket, data_dir=settings.data_dir)


def health_settings(settings: Settings) -> HealthSettings:
    """The health knobs of ``settings``."""
    return HealthSettings(
        healthcheck_url=settings.healthcheck_url,
        auto_rollback_after=settings.auto_rollback_after,
        kube_system_settle=settings.kube_system_settle,
        settle_timeout=settings.settle_timeout,
    )


def bootstrap(
    settings: Settings,
    *,
    events: EventSink | None = None,
    boot_env: BootEnv | None = None,
    slots: SlotStore | None = None,
    fetcher: Fetcher | None = None,
    kube: Kube | None = None,
    probes: HealthProbes | None = None,
    clock: Clock | None = None,
    store: StateStore | None = None,
    health: HealthSettings | None = None,
    adaptive: AdaptiveUpdater | None = None,
) -> Agent:
    """An Agent over the adapters ``settings`` describe; any port given is used instead.

    ``adaptive`` (chunked updates) defaults to the chunk source and chunked
    writer over the real slots, when ``settings.adaptive`` is on.
    """
    if fetcher is None:
        from kubesolo_entrypoints.trust import build_fetcher

        fetcher = build_fetcher(settings)
    if kube is None:
        kube = cast("Kube", OnFirstUse(lambda: build_kube(settings)))
    if probes is None:
        probes = cast("HealthProbes", OnFirstUse(lambda: build_probes(settings)))
    if clock is None:
        from kubesolo_adapters.clock import SystemClock

        clock = SystemClock()
    if store is None:
        from kubesolo_adapters.statefile import JsonStateStore

        store = JsonStateStore(settings.state)
    slots = slots or build_slots(settings)
    return Agent(
        boot_env=boot_env or build_boot_env(settings),
        slots=slots,
        fetcher=fetcher,
        kube=kube,
        probes=probes,
        clock=clock,
        store=store,
        server=settings.server,
        health=health or health_settings(settings),
        adaptive=adaptive if adaptive is not None else build_adaptive(settings, slots),
        **({"events": events} if events is not None else {}),
    )
