"""A whole simulated box: two slots, a bootloader, a node, a server, one power rail."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs

from kubesolo_adapters.fakes.images import image_meta, make_image
from kubesolo_adapters.fakes.memory import (
    MemoryBootEnv,
    MemoryClock,
    MemoryFetcher,
    MemoryKube,
    MemoryProbes,
    MemorySlotStore,
    MemoryStateStore,
)
from kubesolo_adapters.fakes.power import Power
from kubesolo_adapters.sandbox import build_release
from kubesolo_core.adaptive import AdaptiveUpdater
from kubesolo_core.bootmodel import Bootloader, BootModel, GrubModel, TrybootModel
from kubesolo_core.policies import PodInfo
from kubesolo_core.release import release_document
from kubesolo_core.results import HealthSettings
from kubesolo_core.services import Agent
from kubesolo_core.slots import Slot

__all__ = ["SERVER", "MemoryBox"]

E = TypeVar("E")


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
    #: adaptive ports (kubesolo_adapters.fakes.chunks.enable_adaptive); None = full images only
    adaptive: AdaptiveUpdater | None = None

    @classmethod
    def create(
        cls,
        bootloader: str | Bootloader = Bootloader.GRUB,
        *,
        version: str = "1.0.0",
        image_size: int = 4096,
        capacity: int = 1 << 16,
    ) -> MemoryBox[Any]:
        """A fresh box committed on slot A running ``version``; slot B empty."""
        kind = Bootloader(bootloader)  # anything else is a ValueError, never a silent tryboot
        model: BootModel[Any] = GrubModel() if kind is Bootloader.GRUB else TrybootModel()
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
        release, served = build_release(
            version,
            image,
            compression="none",
            url=f"kubesolo-os-{version}.img",
            min_from=min_from_version,
        )
        self.fetcher.publish(self.server, release_document(release), served)
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
        for _ in range(max_attempts):
            outcome = self.model.boot(env, clean_shutdown=clean)
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
            clean = False
        self.boot_env.env = env
        raise RuntimeError(f"box did not boot in {max_attempts} attempts: bricked")
