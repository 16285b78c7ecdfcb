"""A whole KubeSolo box for the full-cycle tests: disk image, real GRUB, real agent adapters.

* the disk: :func:`build_disk_image` with slot A (ext2, version 1.0.0)
  committed and slot B holding an older image; GRUB halts after its choice
  (the slots carry no kernel), so a "reboot" is one real QEMU boot of about
  a second;
* the agent: kubesolo_core.services.Agent over the real adapters
  (GrubBootEnv, BlockSlotStore on loop devices over the slot partitions
  (``losetup -o OFFSET --sizelimit SIZE``), HttpFetcher against a loopback
  HTTP server, JsonStateStore, SystemClock, BootFacts over a cmdline file and a
  boot_id file written after each boot from GRUB's marker). Kube and
  HealthProbes are the in-memory adapters, set healthy or unhealthy per
  scenario: there is no Kubernetes in this tier.
* the ESP: this tier's container kernel has no vfat driver, so the ESP is
  reached with mtools: the grubenv is copied out to a host file before the
  agent runs and copied back before the next boot, as unmounting would.

Loop devices are attached only while the agent runs (QEMU writes the image
file itself), and detached in every case, including failures.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from kubesolo_core.slots import Slot
from tests.hardware.diskimage import (
    DiskLayout,
    build_disk_image,
    make_slot_filesystem,
    read_esp_file,
    write_esp_file,
)
from tests.hardware.harness import GRUB_CFG, TEST_ENV_FILES, GrubRig, counted_boot, tail
from tests.hardware.qemu import BootResult

RUNNING = "Running"


# --------------------------------------------------------------------------- release server


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _ReleaseServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep the test output quiet

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # Serve in small pieces; when throttled, slowly, and say when half is out.
        sent = 0
        while True:
            piece = source.read(64 * 1024)
            if not piece:
                break
            try:
                outputfile.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                return
            sent += len(piece)
            if self.server.throttle:
                if sent >= self.server.half:
                    self.server.half_sent.set()
                time.sleep(self.server.throttle)


class _ReleaseServer(http.server.ThreadingHTTPServer):
    throttle: float = 0.0
    half: int = 0
    half_sent: threading.Event


@contextlib.contextmanager
def release_server(root: Path) -> Iterator[_ReleaseServer]:
    """An HTTP server on 127.0.0.1 serving ``root``, stopped and closed on exit."""

    def handler(*args: Any, **kwargs: Any) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)

    server = _ReleaseServer(("127.0.0.1", 0), handler)
    server.half_sent = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------- loop devices


def _losetup(image: Path, offset: int, size: int) -> str:
    done = subprocess.run(
        ["losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(size), str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def _detach(device: str) -> None:
    subprocess.run(["losetup", "-d", device], capture_output=True, check=False, timeout=30)


# --------------------------------------------------------------------------- the box


@attrs.define
class Box:
    """A disk image, its power button (QEMU) and the agent's files on the host."""

    workdir: Path
    layout: DiskLayout
    server_url: str
    #: the release server (tests throttle it to open a window for a power cut)
    server: Any = None
    boots: list[BootResult] = attrs.field(factory=list)

    @property
    def cmdline(self) -> Path:
        return self.workdir / "cmdline"

    @property
    def boot_id(self) -> Path:
        return self.workdir / "boot_id"

    @property
    def state(self) -> Path:
        return self.workdir / "state.json"

    @property
    def grubenv(self) -> Path:
        return self.workdir / "esp" / "EFI" / "BOOT" / "grubenv"

    @classmethod
    def build(cls, workdir: Path, server_url: str) -> Box:
        slots = {
            Slot.A: make_slot_filesystem(
                workdir / "slotA.img", label="KSOLOA", size_mib=4, files={"version": b"1.0.0\n"}
            ),
            Slot.B: make_slot_filesystem(
                workdir / "slotB.img", label="KSOLOB", size_mib=4, files={"version": b"0.9.0\n"}
            ),
        }
        layout = build_disk_image(
            workdir / "disk.img",
            slot_a=slots[Slot.A],
            slot_b=slots[Slot.B],
            grub_cfg=GRUB_CFG,
            esp_files=TEST_ENV_FILES,
            firmware=("bios",),
        )
        return cls(workdir=workdir, layout=layout, server_url=server_url)

    def power_on(self) -> BootResult:
        """One real boot; the booted slot goes to the cmdline file, a fresh boot id too."""
        rig = GrubRig(layout=self.layout, workdir=self.workdir)
        result = counted_boot(rig.runner("bios"))
        if result.timed_out or not result.halted or result.slot is None:
            raise AssertionError(f"the box did not boot to GRUB's halt:\n{tail(result)}")
        self.cmdline.write_text(
            f"BOOT_IMAGE=/vmlinuz console=ttyS0,115200 kubesolo.slot={result.slot.value} ro\n"
        )
        self.boot_id.write_text(f"{uuid.uuid4()}\n")
        self.boots.append(result)
        return result

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, Any]]:
        """The box is up: slot loop devices attached, the grubenv reachable; undone on exit."""
        devices: list[str] = []
        self.grubenv.parent.mkdir(parents=True, exist_ok=True)
        raw = read_esp_file(self.layout.path, self.layout.esp.offset, self.layout.grubenv_path)
        if raw is None:
            self.grubenv.unlink(missing_ok=True)
        else:
            self.grubenv.write_bytes(raw)
        try:
            for slot in Slot:
                part = self.layout.slot(slot)
                devices.append(_losetup(self.layout.path, part.offset, part.size))
            yield {
                "grubenv": str(self.grubenv),
                "cmdline": str(self.cmdline),
                "boot_id": str(self.boot_id),
                "state": str(self.state),
                "slot_a": devices[0],
                "slot_b": devices[1],
                "server": self.server_url,
            }
        finally:
            for device in devices:
                _detach(device)
            if self.grubenv.exists():
                write_esp_file(
                    self.layout.path,
                    self.layout.esp.offset,
                    self.layout.grubenv_path,
                    self.grubenv.read_bytes(),
                )

    def env(self) -> dict[str, str] | None:
        rig = GrubRig(layout=self.layout, workdir=self.workdir)
        return rig.read_env()


# --------------------------------------------------------------------------- the agent


def make_agent(
    paths: dict[str, Any],
    *,
    healthy: bool = True,
    auto_rollback_after: int = 0,
    activate_delay: float = 0.0,
) -> Any:
    """The real agent over the box's devices (Kube/HealthProbes: in-memory, see module doc)."""
    import datetime as dt

    from kubesolo_adapters.blockdev import BlockSlotStore
    from kubesolo_adapters.bootfacts import BootFacts
    from kubesolo_adapters.clock import SystemClock
    from kubesolo_adapters.fakes import MemoryKube, MemoryProbes
    from kubesolo_adapters.grub import GrubBootEnv
    from kubesolo_adapters.http import HttpFetcher
    from kubesolo_adapters.statefile import JsonStateStore
    from kubesolo_core.policies import PodInfo
    from kubesolo_core.results import HealthSettings
    from kubesolo_core.services import Agent

    facts = BootFacts(cmdline=paths["cmdline"], boot_id_path=paths["boot_id"])
    boot_env: Any = GrubBootEnv(paths["grubenv"], facts=facts, reboot=lambda: None)
    if activate_delay:
        boot_env = _SlowActivate(real=boot_env, delay=activate_delay)
    since = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    kube = MemoryKube(pods=[PodInfo(name="coredns", phase=RUNNING, running_since=since)])
    return Agent(
        boot_env=boot_env,
        slots=BlockSlotStore({Slot.A: paths["slot_a"], Slot.B: paths["slot_b"]}),
        fetcher=HttpFetcher(retries=1, backoff=0.05, connect_timeout=5, read_timeout=10),
        kube=kube,
        probes=MemoryProbes(containerd_ok=healthy),
        clock=SystemClock(),
        store=JsonStateStore(paths["state"]),
        server=paths["server"],
        health=HealthSettings(
            auto_rollback_after=auto_rollback_after,
            kube_system_settle=0.0,
            settle_timeout=0.3,
            poll_interval=0.1,
        ),
    )


@attrs.define
class _SlowActivate:
    """The real GrubBootEnv, but activate waits first: a window for the power cut."""

    real: Any
    delay: float

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @property
    def kind(self) -> str:
        return str(self.real.kind)

    def activate(self, slot: Slot) -> None:
        time.sleep(self.delay)
        self.real.activate(slot)


def start_child(paths: dict[str, Any], operation: str, **options: Any) -> subprocess.Popen[bytes]:
    """Run one agent operation in a child process (so it can be SIGKILLed mid-way)."""
    spec = json.dumps({"paths": paths, "operation": operation, "options": options})
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hardware.box", spec],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(child: subprocess.Popen[bytes]) -> None:
    """The power cut: SIGKILL the writer, by its pid."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    if child.stdout is not None:
        child.stdout.close()


if __name__ == "__main__":  # the child of start_child
    spec = json.loads(sys.argv[1])
    agent = make_agent(spec["paths"], **spec["options"])
    getattr(agent, spec["operation"])()
    print("child done", flush=True)
