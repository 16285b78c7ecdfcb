"""A box made of files: the one sandbox behind the demo, the benches and the test worlds.

What a real box has and a sandbox cannot, stood in for once, here:

* the firmware at power-on: :class:`GrubFirmware` plays
  :class:`~kubesolo_core.bootmodel.GrubModel` over a real grubenv file
  (load_env, the model's step, save_env of the three variables, as
  deploy/grub.cfg does, proven equal to it under QEMU), and
  :class:`TrybootFirmware` plays the Raspberry Pi firmware over a real
  autoboot.txt and device tree;
* the kernel's facts: :class:`KernelFacts` writes the /proc/cmdline
  (``kubesolo.slot=``) and boot id files the real BootFacts adapter reads;
* the release server: :func:`build_release` makes an image's served bytes
  and its release document, :func:`publish` writes both into a folder, and
  :func:`release_server` serves the folder on 127.0.0.1;
* a slot image: :func:`make_fs_image` makes a real ext2 filesystem holding a
  ``version`` file (the synthetic image of the fakes when mkfs.ext2 is missing).

:class:`Sandbox` puts these together as the demo's box: two image-file slots,
a grubenv, a cmdline and a boot id in one folder.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from kubesolo_core.bootmodel import BootOutcome, GrubModel, TrybootModel
from kubesolo_core.release import ImageSpec, Release, release_document
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version

__all__ = [
    "GrubFirmware",
    "KernelFacts",
    "Sandbox",
    "TrybootFirmware",
    "build_release",
    "find_tool",
    "make_fs_image",
    "publish",
    "release_server",
]


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin or /sbin (which a non-root PATH may lack)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return None


# --------------------------------------------------------------------------- slot images


def make_fs_image(workdir: Path, version: str, size: int = 3 << 20) -> bytes:
    """A slot image carrying ``version``: an ext2 filesystem if mkfs.ext2 exists.

    Without mkfs.ext2 it is the synthetic image of the fakes (a real slot
    store then cannot read its version).
    """
    mkfs = find_tool("mkfs.ext2")
    if mkfs is None:
        from kubesolo_adapters.fakes.images import make_image

        return make_image(version, size=size)
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


# --------------------------------------------------------------------------- releases


def build_release(
    version: str,
    raw: bytes,
    *,
    compression: str = "gzip",
    url: str | None = None,
    min_from: str | None = None,
) -> tuple[Release, bytes]:
    """The release of ``raw`` as ``version`` and the bytes a server serves for it."""
    if compression == "gzip":
        served = gzip.compress(raw, compresslevel=6, mtime=0)
    elif compression == "zstd":
        import zstandard

        served = zstandard.ZstdCompressor().compress(raw)
    elif compression == "none":
        served = raw
    else:
        raise ValueError(f"unknown compression {compression!r}")
    suffix = {"gzip": ".gz", "zstd": ".zst", "none": ""}[compression]
    image = ImageSpec(
        url=url or f"kubesolo-os-{version}-amd64.img{suffix}",
        sha256=hashlib.sha256(served).hexdigest(),
        size=len(served),
        compression=compression,
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )
    release = Release(
        schema=1,
        version=Version.parse(version),
        image=image,
        min_from_version=Version.parse(min_from) if min_from else None,
    )
    return release, served


def publish(
    www: Path, version: str, raw: bytes, *, compression: str = "gzip", name: str = "release.json"
) -> Release:
    """Write the image and its release document (``name``) into the folder ``www``."""
    release, served = build_release(version, raw, compression=compression)
    (www / release.image.url).write_bytes(served)
    (www / name).write_text(json.dumps(release_document(release), indent=2) + "\n")
    return release


@contextlib.contextmanager
def release_server(www: Path) -> Iterator[str]:
    """Serve ``www`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

    handler = functools.partial(Quiet, directory=str(www))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="sandbox-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- the kernel


@attrs.define
class KernelFacts:
    """The files a booted kernel shows the agent: /proc/cmdline and the boot id."""

    cmdline: Path
    boot_id: Path
    #: what the command line says besides kubesolo.slot=
    before: str = "BOOT_IMAGE=/vmlinuz ro"
    after: str = ""

    def set_booted(self, slot: Slot | None) -> None:
        """The command line of a kernel booted from ``slot`` (None: no kubesolo.slot=)."""
        words = [self.before, f"kubesolo.slot={slot.value}" if slot else "", self.after]
        self.cmdline.write_text(" ".join(w for w in words if w) + "\n")

    def set_boot_id(self, boot_id: str | None) -> None:
        """This boot's id (None: the file is gone)."""
        if boot_id is None:
            self.boot_id.unlink(missing_ok=True)
        else:
            self.boot_id.write_text(boot_id + "\n")

    def boot(self, slot: Slot | None) -> None:
        """A new kernel from ``slot``: its command line and a fresh boot id."""
        self.set_booted(slot)
        self.set_boot_id(str(uuid.uuid4()))


# --------------------------------------------------------------------------- firmware


@attrs.define
class GrubFirmware:
    """GRUB at power-on as deploy/grub.cfg drives it, over a real grubenv file.

    load_env (a missing file loads nothing and saves nothing), the model's
    step, save_env of the three variables: written with the real
    grub-editenv when ``editenv`` and the binary is there (the bytes GRUB's
    save_env leaves), else by the pure-Python writer (byte-identical).
    """

    grubenv: Path
    model: GrubModel = attrs.field(factory=GrubModel)
    editenv: bool = False

    def power_on(self, *, clean_shutdown: bool = True) -> BootOutcome[dict[str, str]]:
        """One boot: the slot GRUB picks and the env it leaves."""
        from kubesolo_adapters.grub import MANAGED
        from kubesolo_adapters.grubenvfile import PythonBackend

        backend = PythonBackend(self.grubenv)
        outcome = self.model.boot(backend.read(), clean_shutdown=clean_shutdown)
        if outcome.wrote and self.grubenv.exists():
            values = {name: outcome.env[name] for name in MANAGED if name in outcome.env}
            tool = find_tool("grub-editenv") if self.editenv else None
            if tool:
                args = [f"{name}={value}" for name, value in values.items()]
                subprocess.run(
                    [tool, str(self.grubenv), "set", *args],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            else:
                backend.set(values)
        return outcome


#: autoboot.txt as the Raspberry Pi documentation shows it
DOCUMENTED_AUTOBOOT = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


@attrs.define
class TrybootFirmware:
    """The Raspberry Pi firmware at power-on over a real autoboot.txt and device tree.

    A reboot carrying the one-shot tryboot flag uses ``[tryboot]
    boot_partition`` when ``tryboot_a_b=1``; every other boot ``[all]
    boot_partition``. It then fills /proc/device-tree/chosen/bootloader's
    ``tryboot`` and ``partition`` (big-endian u32).
    """

    autoboot: Path
    device_tree: Path
    model: TrybootModel = attrs.field(factory=TrybootModel)

    def set_device_tree(self, *, tryboot: int | None, partition: int | None) -> None:
        """What the firmware tells the kernel about this boot (None: the property is absent)."""
        node = self.device_tree / "chosen" / "bootloader"
        node.mkdir(parents=True, exist_ok=True)
        for name, value in (("tryboot", tryboot), ("partition", partition)):
            if value is None:
                (node / name).unlink(missing_ok=True)
            else:
                (node / name).write_bytes(struct.pack(">I", value))

    def power_on(self, *, flag: bool) -> Slot:
        """One boot, with or without the tryboot flag: the slot it boots."""
        from kubesolo_adapters.autoboot import parse_autoboot

        text = self.autoboot.read_text() if self.autoboot.exists() else DOCUMENTED_AUTOBOOT
        settings = parse_autoboot(text)
        use_trial = flag and settings.tryboot_a_b
        partition = settings.trial if use_trial else settings.committed
        slot = self.model.slot_of(partition) if partition is not None else None
        if slot is None:
            raise RuntimeError(f"partition {partition} holds no slot: the box is bricked")
        self.set_device_tree(tryboot=int(use_trial), partition=partition)
        return slot


# --------------------------------------------------------------------------- the demo's box


@attrs.define
class Sandbox:
    """The files of a sandboxed GRUB box: two image-file slots, grubenv, cmdline, boot id."""

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

    def boot(self, *, clean_shutdown: bool = True) -> tuple[Slot, str]:
        """Power on: GRUB picks a slot and saves its env, a new kernel starts; says how."""
        from kubesolo_adapters.grubenvfile import PythonBackend

        counter = PythonBackend(self.grubenv).read().get("boot_counter")
        outcome = GrubFirmware(self.grubenv).power_on(clean_shutdown=clean_shutdown)
        KernelFacts(self.cmdline, self.boot_id).boot(outcome.slot)
        if outcome.rolled_back:
            how = "no trial boots left: GRUB rolls back"
        elif outcome.trial:
            how = f"trial boot, boot_counter {counter} -> {outcome.env.get('boot_counter')}"
        else:
            how = "committed boot, env untouched"
        return outcome.slot, how
