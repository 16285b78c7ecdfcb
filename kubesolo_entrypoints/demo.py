"""``kubesolo-update demo``: the whole update lifecycle in a throw-away sandbox.

No root, no network beyond 127.0.0.1, a few seconds. What is real and what
stands in:

* real: the grubenv file (:class:`~kubesolo_adapters.grub.GrubBootEnv`,
  the 1024-byte GRUB env block), the two slots as image files
  (:class:`~kubesolo_adapters.blockdev.BlockSlotStore`) carrying ext2
  filesystems with a ``version`` file when ``mkfs.ext2`` is available (read
  back with ``debugfs``, no mount), a release server on 127.0.0.1 (Python's
  http.server) fetched with :class:`~kubesolo_adapters.http.HttpFetcher`,
  a gzip-compressed image decompressed on the fly and verified, and
  state.json (:class:`~kubesolo_adapters.statefile.JsonStateStore`);
* stand-ins: the Kubernetes node (:class:`~kubesolo_adapters.memory.MemoryKube`
  and :class:`~kubesolo_adapters.memory.MemoryProbes`, since no cluster runs
  here) and the firmware: at each "reboot" the GRUB model
  (:meth:`kubesolo_core.bootmodel.GrubModel.boot`, which deploy/grub.cfg is
  proven equal to) is applied to the grubenv file's variables, and the
  kernel command line file gets ``kubesolo.slot=X`` and a new boot id.

It shows apply -> activate -> reboot -> healthcheck -> commit, then a second
update whose node never gets healthy, until GRUB runs out of trial boots and
rolls back, with ``status`` between the steps.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import typer

from kubesolo_core.errors import HealthCheckFailed
from kubesolo_core.policies import PodInfo
from kubesolo_core.slots import Slot

SLOT_BYTES = 6 << 20
IMAGE_BYTES = 3 << 20


def _say(text: str = "") -> None:
    # The demo's narrative is its output: one stream keeps it in order when piped.
    typer.echo(text)


def _show(text: str) -> None:
    typer.echo(text)


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return None


def make_image(workdir: Path, version: str, size: int = IMAGE_BYTES) -> bytes:
    """A slot image carrying ``version``: an ext2 filesystem if mkfs.ext2 exists.

    Without mkfs.ext2 it is the synthetic image of the memory adapters (the
    slot store then cannot read its version, and the demo says so).
    """
    mkfs = _tool("mkfs.ext2")
    if mkfs is None:
        from kubesolo_adapters.memory import make_image as synthetic

        return synthetic(version, size=size)
    root = workdir / f"root-{version}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "version").write_text(version + "\n")
    (root / "os-release").write_text(f'NAME="KubeSolo OS"\nVERSION_ID="{version}"\n')
    image = workdir / f"fs-{version}.img"
    subprocess.run(
        [mkfs, "-q", "-F", "-L", "KSOLO", "-d", str(root), str(image), f"{size // 1024}k"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = image.read_bytes()
    image.unlink()
    shutil.rmtree(root)
    return data


def release_doc(
    version: str, raw: bytes, name: str, *, level: int = 6
) -> tuple[dict[str, Any], bytes]:
    """The release document for ``raw`` served gzip-compressed as ``name``, and the bytes served."""
    served = gzip.compress(raw, compresslevel=level, mtime=0)
    doc = {
        "schema": 1,
        "version": version,
        "image": {
            "url": name,
            "sha256": hashlib.sha256(served).hexdigest(),
            "size": len(served),
            "compression": "gzip",
            "raw_size": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
        },
    }
    return doc, served


def publish(www: Path, version: str, raw: bytes) -> None:
    """Write ``release.json`` and the gzip image for ``version`` into ``www``."""
    name = f"kubesolo-os-{version}-amd64.img.gz"
    doc, served = release_doc(version, raw, name)
    (www / name).write_bytes(served)
    (www / "release.json").write_text(json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def release_server(www: Path) -> Iterator[str]:
    """Serve ``www`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

    handler = functools.partial(Quiet, directory=str(www))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="demo-release-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@attrs.define
class Sandbox:
    """The files of the demo box."""

    root: Path

    @property
    def grubenv(self) -> Path:
        return self.root / "grubenv"

    @property
    def cmdline(self) -> Path:
        return self.root / "cmdline"

    @property
    def boot_id(self) -> Path:
        return self.root / "boot_id"

    def slot(self, slot: Slot) -> Path:
        return self.root / f"slot-{slot.value}.img"

    def cli_args(self, state: Path) -> list[str]:
        """Global options that point the CLI at this box (no config file, GRUB)."""
        return [
            "--config", "/dev/null",
            "--state", str(state),
            "--bootloader", "grub",
            "--grubenv", str(self.grubenv),
            "--slot-a", str(self.slot(Slot.A)),
            "--slot-b", str(self.slot(Slot.B)),
            "--cmdline", str(self.cmdline),
        ]  # fmt: skip

    def boot(self) -> tuple[Slot, str]:
        """Play the firmware: the GRUB model on the grubenv variables, then a new kernel."""
        from kubesolo_adapters.grub import MANAGED
        from kubesolo_adapters.grubenv import PythonBackend
        from kubesolo_core.bootmodel import GrubModel

        backend = PythonBackend(self.grubenv)
        before = backend.read()
        outcome = GrubModel().boot(before)
        if outcome.wrote:  # GRUB's save_env
            backend.set({name: outcome.env[name] for name in MANAGED if name in outcome.env})
        slot = outcome.slot
        self.cmdline.write_text(
            f"BOOT_IMAGE=/vmlinuz root=LABEL=KSOLO{slot.value} ro kubesolo.slot={slot.value}\n"
        )
        self.boot_id.write_text(f"{uuid.uuid4()}\n")
        if outcome.rolled_back:
            how = "no trial boots left: GRUB rolls back"
        elif outcome.trial:
            how = f"trial boot, boot_counter {before.get('boot_counter')} -> " + str(
                outcome.env.get("boot_counter")
            )
        else:
            how = "committed boot, env untouched"
        return slot, how


@attrs.frozen(kw_only=True)
class DemoResult:
    """Checkpoints of a demo run (for tests)."""

    sandbox: Path
    first_phase: str
    first_booted: str
    second_phase: str
    second_booted: str
    boots: int


def run_demo(*, keep: bool = False, workdir: Path | None = None) -> DemoResult:
    """Run the demo; everything it shows goes to stdout, in order."""
    from kubesolo_adapters.memory import MemoryKube, MemoryProbes
    from kubesolo_entrypoints import render
    from kubesolo_entrypoints.bootstrap import build_agent
    from kubesolo_entrypoints.config import load_settings

    # debugfs and mkfs live in sbin, which a non-root PATH may lack.
    path = os.environ.get("PATH", "")
    extra = [d for d in ("/usr/sbin", "/sbin") if d not in path.split(os.pathsep)]
    if extra:
        os.environ["PATH"] = os.pathsep.join([path, *extra]) if path else os.pathsep.join(extra)

    root = Path(tempfile.mkdtemp(prefix="kubesolo-demo-", dir=workdir))
    box = Sandbox(root)
    try:
        www = root / "www"
        www.mkdir()
        factory = make_image(root, "1.0.0")
        for slot in Slot:
            with box.slot(slot).open("wb") as f:
                f.truncate(SLOT_BYTES)
                if slot is Slot.A:
                    f.write(factory)
        real_fs = _tool("mkfs.ext2") is not None
        with release_server(www) as base:
            settings = load_settings(
                {
                    "config": "/dev/null",
                    "state": str(root / "state" / "state.json"),
                    "server": f"{base}/release.json",
                    "bootloader": "grub",
                    "grubenv": str(box.grubenv),
                    "slot_a": str(box.slot(Slot.A)),
                    "slot_b": str(box.slot(Slot.B)),
                    "cmdline": str(box.cmdline),
                    "boot_id": str(box.boot_id),
                    "data_dir": str(root),
                    "kube_system_settle": "0",
                    "settle_timeout": "0",
                    "node_name": "demo-node",
                },
                environ={},
            )
            kube = MemoryKube()
            probes = MemoryProbes()

            def event(name: str, **fields: object) -> None:
                detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
                _say(f"    . {name} {detail}")

            agent = build_agent(settings, events=event, kube=kube, probes=probes)
            sick = {"1.2.0"}

            def reboot() -> Slot:
                slot, how = box.boot()
                version = agent.slots.read_version(slot)
                healthy = version not in sick
                kube.ready = healthy
                kube.pods = [
                    PodInfo(
                        name="coredns",
                        phase="Running" if healthy else "CrashLoopBackOff",
                        running_since=agent.clock.now() if healthy else None,
                    )
                ]
                _say(f"  reboot: GRUB boots slot {slot.value} ({version}): {how}")
                return slot

            def status(title: str) -> None:
                _say(f"\n$ kubesolo-update status   # {title}")
                _show(render.status_text(agent.status(), where=str(box.grubenv)))

            def healthcheck() -> bool:
                _say("$ kubesolo-update healthcheck   # what init runs at every boot")
                try:
                    outcome = agent.healthcheck()
                except HealthCheckFailed as exc:
                    outcome = exc.report  # type: ignore[assignment]
                _show(render.health_text(outcome))  # type: ignore[arg-type]
                return bool(outcome.healthy)  # type: ignore[union-attr]

            _say(f"kubesolo-update demo: a box in a sandbox at {root}")
            _say(
                "  real: grubenv file, "
                + (
                    "ext2 image files"
                    if real_fs
                    else "image files (no mkfs.ext2: versions unknown)"
                )
                + f" as slots, release server {base}, gzip image, state.json"
            )
            _say("  stand-ins: the node (in-memory Kubernetes), the firmware (the GRUB model)")
            agent.boot_env.force_rollback(Slot.A)  # a fresh env, committed on A
            reboot()
            status("a fresh box on 1.0.0")

            _say("\n== first update: 1.1.0, a good release ==")
            publish(www, "1.1.0", make_image(root, "1.1.0"))
            _say("$ kubesolo-update check")
            _show(agent.check().reason)
            _say("$ kubesolo-update apply")
            _show(agent.apply().message)
            _say("$ kubesolo-update activate")
            state = agent.activate()
            _show(f"slot {state.target_slot.value if state.target_slot else '?'} activated")
            status("activated, before the reboot")
            reboot()
            healthcheck()
            status("after the trial boot and the health check")
            first = agent.status()

            _say("\n== second update: 1.2.0, its node never gets Ready ==")
            publish(www, "1.2.0", make_image(root, "1.2.0"))
            _say("$ kubesolo-update apply")
            _show(agent.apply().message)
            _say("$ kubesolo-update activate")
            agent.activate()
            boots = 0
            for _ in range(8):  # bounded: GRUB gives up after three trial boots
                slot = reboot()
                boots += 1
                healthy = healthcheck()
                if healthy or agent.status().state.phase.value == "rolled_back":
                    break
                _say(f"  (init reboots: the trial of slot {slot.value} is unhealthy)")
            status("after GRUB rolled back")
            second = agent.status()
        _say(f"\ndone: {'kept' if keep else 'removing'} the sandbox {root}")
        return DemoResult(
            sandbox=root,
            first_phase=first.state.phase.value,
            first_booted=first.booted_slot.value if first.booted_slot else "?",
            second_phase=second.state.phase.value,
            second_booted=second.booted_slot.value if second.booted_slot else "?",
            boots=boots,
        )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
