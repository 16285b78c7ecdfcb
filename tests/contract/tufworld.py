"""A box and a signed repository for the TUF tests.

Real: a kubesolo-release workspace (Ed25519 keys, python-tuf metadata),
the agent's TufFetcher over HttpFetcher (file://, nginx or the fault server),
ext2 image files as slots (BlockSlotStore), a real grubenv file and
state.json. In memory: the Kubernetes node and the probes.

``mirror()`` copies the served directory: the attacks edit the copy, as a
compromised mirror or CDN would, while the publisher's directory stays honest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from kubesolo_adapters.blockdev import BlockSlotStore
from kubesolo_adapters.fakes import MemoryKube, MemoryProbes
from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_adapters.http import HttpFetcher
from kubesolo_adapters.sandbox import Sandbox, make_fs_image
from kubesolo_adapters.tuf import TufFetcher
from kubesolo_core.policies import PodInfo
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.bootstrap import bootstrap
from kubesolo_entrypoints.config import load_settings
from kubesolo_entrypoints.publisher.repo import Repository
from kubesolo_entrypoints.publisher.sandbox import publish_signed

#: bigger than the slot writer's held-back head (1 MiB), so "nothing written" is the
#: chunk checks' doing, not only the head-last rule's
IMAGE_BYTES = 3 << 20


def padded_images(work: Path, versions: tuple[str, ...]) -> dict[str, bytes]:
    """A 1 MiB ext2 filesystem per version (its version file readable) padded with random
    bytes to IMAGE_BYTES: two images differ all along, so a byte that reaches a slot shows."""
    return {
        v: make_fs_image(work, v, size=1 << 20) + os.urandom(IMAGE_BYTES - (1 << 20))
        for v in versions
    }


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@attrs.define
class TufWorld:
    """A box (slot files, grubenv, state) and a publisher workspace."""

    root: Path
    box: Sandbox
    repo: Repository
    images: dict[str, bytes]
    kube: MemoryKube = attrs.field(factory=MemoryKube)
    probes: MemoryProbes = attrs.field(factory=MemoryProbes)
    #: the root.json the OS image ships (copied at creation, before any rotation)
    shipped_root: Path = attrs.field(init=False)

    @classmethod
    def create(
        cls,
        root: Path,
        images: dict[str, bytes],
        *,
        clock: Callable[[], dt.datetime] | None = None,
        slot_size: int = 2 * IMAGE_BYTES,
        **init: Any,
    ) -> TufWorld:
        root.mkdir(parents=True, exist_ok=True)
        box = Sandbox(root)
        for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "0.9.0")):
            with box.slot(slot).open("wb") as f:
                f.truncate(slot_size)
                f.write(images[version])
        PythonBackend(box.grubenv).set(
            {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
        )
        box.boot()
        repo = Repository(root / "publisher", now=clock or now)
        repo.init(**init)
        repo.now = now
        world = cls(root=root, box=box, repo=repo, images=images)
        since = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        world.kube.pods = [PodInfo(name="coredns", phase="Running", running_since=since)]
        world.shipped_root = root / "os-root.json"
        shutil.copyfile(repo.metadata_dir / "1.root.json", world.shipped_root)
        return world

    @property
    def state(self) -> Path:
        return self.root / "state" / "state.json"

    @property
    def cache(self) -> Path:
        return self.state.parent / "tuf"

    def publish(
        self, version: str, *, channel: str = "stable", compress: str = "gzip", chunks: bool = False
    ) -> None:
        """Publish an image; without a chunk index unless asked, so that the attacks on the
        image target meet the full download (with an index the box would not fetch it)."""
        publish_signed(self.repo, version, self.images[version], channel=channel,
                       compress=compress, chunks=chunks)  # fmt: skip

    def url(self, served: Path | None = None) -> str:
        return (served or self.repo.served).as_uri() + "/"

    def mirror(self, name: str = "mirror") -> Path:
        """A copy of what the publisher serves now (a mirror the attacker controls)."""
        dest = self.root / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.repo.served, dest)
        return dest

    def flags(self, server: str, **extra: str | None) -> dict[str, str | None]:
        """The settings of this box as update.conf keys (``extra`` wins)."""
        return {
            "config": "/dev/null",
            "state": str(self.state),
            "server": server,
            "trust_root": str(self.shipped_root),
            "bootloader": "grub",
            "grubenv": str(self.box.grubenv),
            "slot_a": str(self.box.slot(Slot.A)),
            "slot_b": str(self.box.slot(Slot.B)),
            "cmdline": str(self.box.cmdline),
            "boot_id": str(self.box.boot_id),
            "kube_system_settle": "0",
            "settle_timeout": "0",
            **extra,
        }

    def settings(self, server: str, **extra: str) -> Any:
        return load_settings(self.flags(server, **extra), environ={})

    def agent(
        self,
        server: str | None = None,
        *,
        http: HttpFetcher | None = None,
        events: Callable[..., None] | None = None,
    ) -> Any:
        settings = self.settings(server or self.url())
        fetcher = TufFetcher(
            trust_root=self.shipped_root,
            cache_dir=self.cache,
            channel=settings.channel,
            http=http or HttpFetcher(retries=1, backoff=0.01, max_backoff=0.05),
        )
        # Small write batches: the slot writer flushes every 64 KiB, so any byte let
        # through would reach the file (its default 4 MiB batch would hide a 3 MiB image).
        slots = BlockSlotStore(
            {Slot.A: str(self.box.slot(Slot.A)), Slot.B: str(self.box.slot(Slot.B))},
            chunk_size=64 << 10,
        )
        return bootstrap(
            settings,
            fetcher=fetcher,
            slots=slots,
            kube=self.kube,
            probes=self.probes,
            events=events,
        )

    def slot_digest(self, slot: Slot = Slot.B) -> str:
        return hashlib.sha256(self.box.slot(slot).read_bytes()).hexdigest()

    def commit_cycle(self, agent: Any) -> None:
        """apply -> activate -> reboot -> healthcheck: the update is committed."""
        agent.apply()
        agent.activate()
        self.box.boot()
        assert agent.healthcheck().state.phase.value == "success"
