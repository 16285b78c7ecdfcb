"""Boot a disk image once under QEMU and read what GRUB said on the serial console.

Used by tests/hardware and handy for anyone checking an image before it goes
to a box. One :meth:`QemuRunner.boot` is one power-on: SeaBIOS (``bios``) or
OVMF (``efi``, a fresh copy of the VARS store every boot, so boots are
deterministic), ``-no-reboot`` so a reboot or a ``halt`` ends QEMU, the
serial console captured to a file, a hard time limit, and only our own
QEMU process (by pid) killed when the limit passes.

Acceleration is TCG unless asked otherwise: a /dev/kvm that exists is not a
KVM that runs firmware (on some CI hosts it is a paravirtual KVM on which
OVMF dies and SeaBIOS hangs), so ``accel="auto"`` first proves KVM by a probe
boot and falls back to TCG.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from kubesolo_core.errors import ConfigError, OperationFailed
from kubesolo_core.slots import Slot

__all__ = ["OVMF_CODE", "OVMF_VARS", "BootMarker", "BootResult", "QemuRunner", "parse_markers"]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
_MARKER = re.compile(
    # Under OVMF a duplicate of the line may follow on the same line: the raw
    # values end there or at the end of the line.
    r"KSOLO-BOOT slot=(?P<slot>[AB]) saved=(?P<saved>[01]) "
    r"counter=(?P<counter>.*?) success=(?P<success>.*?)(?=KSOLO-BOOT|$)",
    re.MULTILINE,
)
_CMDLINE_SLOT = re.compile(r"kubesolo\.slot=(?P<slot>\S+)")

#: KVM probe results per process: accel -> works
_KVM_PROBED: dict[str, bool] = {}


@attrs.frozen(kw_only=True)
class BootMarker:
    """One ``KSOLO-BOOT`` line printed by deploy/grub.cfg just before it boots a slot."""

    slot: Slot
    counter: str
    success: str
    saved: bool


@attrs.frozen(kw_only=True)
class BootResult:
    """What one power-on showed."""

    firmware: str
    accel: str
    returncode: int | None
    timed_out: bool
    seconds: float
    serial: str
    serial_log: Path | None
    markers: tuple[BootMarker, ...]
    #: values of ``kubesolo.slot=`` a Linux guest printed (its /proc/cmdline)
    cmdline_slots: tuple[str, ...]
    #: the ``watch`` callback of :meth:`QemuRunner.boot` pulled the plug (SIGKILL)
    power_cut: bool = False

    @property
    def slot(self) -> Slot | None:
        """The slot GRUB chose (the last marker), None if GRUB printed none."""
        return self.markers[-1].slot if self.markers else None

    @property
    def halted(self) -> bool:
        """GRUB's test switch halted the machine after choosing a slot."""
        return "KSOLO-HALT" in self.serial


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").replace("\r", "")
    return _ANSI.sub("", text)


def parse_markers(serial: str) -> tuple[BootMarker, ...]:
    """The ``KSOLO-BOOT`` markers in a cleaned serial log, in order.

    Under OVMF the same line may reach the serial port twice (GRUB's serial
    terminal and the firmware console mirrored onto the port): consecutive
    duplicates count once.
    """
    markers: list[BootMarker] = []
    for m in _MARKER.finditer(serial):
        marker = BootMarker(
            slot=Slot(m["slot"]),
            counter=m["counter"],
            success=m["success"],
            saved=m["saved"] == "1",
        )
        if not markers or markers[-1] != marker:
            markers.append(marker)
    return tuple(markers)


@attrs.define(kw_only=True)
class QemuRunner:
    """Boots ``image`` once per :meth:`boot` call.

    ``firmware`` is ``bios`` (SeaBIOS, about 0.5 s to GRUB's decision under
    TCG) or ``efi`` (OVMF, about 4-5 s). ``accel`` is ``tcg``, ``kvm`` or
    ``auto`` (KVM only if a probe boot of this image proves it works).
    ``memory_mib``: 256 is enough for GRUB alone, a Linux guest under OVMF
    wants 512.
    """

    image: Path
    firmware: str = "bios"
    accel: str = "tcg"
    memory_mib: int = 256
    timeout: float = 60.0
    qemu: str = "qemu-system-x86_64"
    ovmf_code: Path = OVMF_CODE
    ovmf_vars: Path = OVMF_VARS
    #: attach the disk read-only (a disk GRUB cannot write: its save_env fails)
    read_only: bool = False
    #: more disks, attached after ``image`` as further virtio drives (read-only)
    extra_disks: tuple[Path, ...] = ()
    #: the last QEMU pid started (tests use it to prove cleanup)
    last_pid: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.firmware not in ("bios", "efi"):
            raise ConfigError(f"firmware {self.firmware!r}: choose 'bios' or 'efi'")
        if self.accel not in ("tcg", "kvm", "auto"):
            raise ConfigError(f"accel {self.accel!r}: choose 'tcg', 'kvm' or 'auto'")

    def _argv(self, accel: str, vars_copy: Path | None) -> list[str]:
        argv = [
            self.qemu,
            "-machine", f"q35,accel={accel}",
            "-m", str(self.memory_mib),
            "-smp", "1",
            "-display", "none",
            "-monitor", "none",
            "-serial", "stdio",
            # No default devices (NIC, VGA, CD-ROM): a third less boot time
            # under TCG, and nothing on the serial port but GRUB and the guest.
            "-nodefaults",
            "-vga", "none",
            "-no-reboot",
        ]  # fmt: skip
        if vars_copy is not None:
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={self.ovmf_code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]  # fmt: skip
        ro = ",readonly=on" if self.read_only else ""
        argv += ["-drive", f"file={self.image},format=raw,if=virtio{ro}"]
        for disk in self.extra_disks:
            argv += ["-drive", f"file={disk},format=raw,if=virtio,readonly=on"]
        return argv

    def _resolve_accel(self) -> str:
        if self.accel != "auto":
            return self.accel
        key = f"{self.firmware}:{self.image}"
        if key not in _KVM_PROBED:
            works = False
            if os.access("/dev/kvm", os.R_OK | os.W_OK):
                probe = self._boot_once("kvm", None, min(self.timeout, 20.0))
                works = bool(probe.markers) and not probe.timed_out
            _KVM_PROBED[key] = works
        return "kvm" if _KVM_PROBED[key] else "tcg"

    def boot(
        self,
        *,
        serial_log: Path | None = None,
        timeout: float | None = None,
        watch: Callable[[str], bool] | None = None,
    ) -> BootResult:
        """Power the machine on once; return when it halts, reboots or the time limit passes.

        ``watch`` is called with the cleaned serial output so far, about every
        50 ms while the machine runs; when it returns True the power is cut
        (SIGKILL of our QEMU, by its pid) and the result says ``power_cut``.

        Note: the probe of ``accel="auto"`` is itself a boot of the image, so
        it may change the grubenv; use it on images where that does not matter.
        """
        return self._boot_once(self._resolve_accel(), serial_log, timeout or self.timeout, watch)

    def _boot_once(
        self,
        accel: str,
        serial_log: Path | None,
        timeout: float,
        watch: Callable[[str], bool] | None = None,
    ) -> BootResult:
        if shutil.which(self.qemu) is None:
            raise OperationFailed(
                f"{self.qemu} not found", way_out="apt-get install qemu-system-x86 ovmf"
            )
        if not self.image.is_file():
            raise ConfigError(f"disk image {self.image} does not exist")
        with tempfile.TemporaryDirectory(prefix="ksolo-qemu-") as tmp:
            vars_copy = None
            if self.firmware == "efi":
                vars_copy = Path(tmp) / "vars.fd"
                shutil.copyfile(self.ovmf_vars, vars_copy)
            out = serial_log or Path(tmp) / "serial.log"
            started = time.monotonic()
            with out.open("wb") as sink:
                proc = subprocess.Popen(
                    self._argv(accel, vars_copy),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.last_pid = proc.pid
                timed_out = False
                power_cut = False
                try:
                    if watch is None:
                        returncode: int | None = proc.wait(timeout=timeout)
                    else:
                        power_cut = _watch(proc, out, watch, started + timeout)
                        returncode = proc.wait(timeout=30)
                        if power_cut:
                            returncode = None
                except subprocess.TimeoutExpired:
                    timed_out = True
                    # Only our own QEMU, by its pid (it is its own session leader).
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    returncode = None
                except BaseException:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    raise
            seconds = time.monotonic() - started
            serial = _clean(out.read_bytes())
        return BootResult(
            firmware=self.firmware,
            accel=accel,
            returncode=returncode,
            timed_out=timed_out,
            seconds=seconds,
            serial=serial,
            serial_log=serial_log,
            markers=parse_markers(serial),
            cmdline_slots=tuple(m["slot"] for m in _CMDLINE_SLOT.finditer(serial)),
            power_cut=power_cut,
        )


def _watch(
    proc: subprocess.Popen[bytes], log: Path, watch: Callable[[str], bool], deadline: float
) -> bool:
    """Poll the serial log until QEMU ends (False) or ``watch`` says cut (SIGKILL, True).

    Raises TimeoutExpired at ``deadline``, like ``Popen.wait``.
    """
    seen = b""
    while True:
        ended = proc.poll() is not None
        with log.open("rb") as fh:
            fh.seek(len(seen))
            seen += fh.read()
        if watch(_clean(seen)) and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            return True
        if ended:
            return False
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, deadline)
        time.sleep(0.05)
