"""The host side of the whole-box tests: power the box on again and again, then look at its disk.

One :meth:`WholeBox.boot` is one power-on: QEMU (TCG, OVMF, ``-no-reboot``)
on the box's disk plus the release disk, until the guest powers off or
reboots (either ends QEMU), the kernel panics and reboots, the time limit
passes, or the host cuts the power when the guest says ``KSOLO-CUT-NOW``.
The next boot is the next call: the disk keeps whatever the last one left.

After every boot the host inspects the disk image file without root and
without mounting it: the grubenv on the ESP with mtools, the data partition
(state.json, the agent's TUF metadata cache, the guest's boots.log) with
debugfs on a copy whose journal e2fsck has replayed (after a power cut the
last fsynced writes may still sit in the journal, as they would for the next
boot's kernel), and each slot's /version with debugfs.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from kubesolo_core.slots import Slot
from kubesolo_entrypoints.publisher.repo import Repository
from tests.hardware.diskimage import DiskLayout, DiskSizes, Partition, build_disk_image
from tests.hardware.diskimage import read_grubenv as _read_grubenv
from tests.hardware.harness import GRUB_CFG, STATS
from tests.hardware.qemu import BootResult, QemuRunner
from tests.hardware.wholebox import release, signing
from tests.hardware.wholebox.rootfs import MIB, SlotVariant, base_tree, slot_image

__all__ = ["RUN", "SCENARIOS", "STOP", "Boot", "ScenarioStats", "WholeBox", "summary_lines"]

#: one boot's time limit: an apply of a full slot under TCG takes a minute or two
BOOT_TIMEOUT = 420.0
_STEP = re.compile(r"KSOLO-STEP name=(\S+) rc=(\d+) seconds=([0-9.]+)")
_INIT = re.compile(r"KSOLO-INIT slot=(\S*) version=(\S*) uptime=([0-9.]+)")
_INITRAMFS = re.compile(r"KSOLO-INITRAMFS uptime=([0-9.]+)")
_END = re.compile(r"KSOLO-END (reboot|poweroff)")
_STATUS = re.compile(r"KSOLO-STATUS-BEGIN\n(.*?)\nKSOLO-STATUS-END", re.DOTALL)
_DOC = re.compile(r"KSOLO-JSON-BEGIN name=(\S+)\n(.*?)\nKSOLO-JSON-END", re.DOTALL)
_WRITTEN = re.compile(r"KSOLO-WRITTEN name=(\S+) device=\S+ sectors=(-?\d+)")


@attrs.frozen(kw_only=True)
class Step:
    """One command the guest's init ran: its exit code and wall time inside the guest."""

    name: str
    rc: int
    seconds: float


@attrs.define(kw_only=True)
class Boot:
    """What one power-on showed, on the serial console and then on the disk."""

    number: int
    plan: str
    result: BootResult
    #: seconds from QEMU's start to GRUB's decision and to the slot's init, seen by the host
    grub_at: float | None = None
    init_at: float | None = None
    # filled from the serial log
    grub_slot: Slot | None = None
    guest_slot: str | None = None
    version: str | None = None
    #: the guest kernel's uptime when the initramfs and then the slot's init started
    initramfs_uptime: float | None = None
    init_uptime: float | None = None
    steps: list[Step] = attrs.field(factory=list)
    end: str | None = None
    panicked: bool = False
    status: dict[str, Any] | None = None
    #: step name -> the JSON document its ``--json`` command printed (None: not JSON)
    documents: dict[str, Any] = attrs.field(factory=dict)
    #: step name -> sectors the kernel wrote to the passive partition during it
    written: dict[str, int] = attrs.field(factory=dict)
    # filled by the host's look at the disk afterwards
    env: dict[str, str] | None = None
    state: dict[str, Any] | None = None

    @property
    def power_cut(self) -> bool:
        return self.result.power_cut

    def step(self, name: str) -> Step | None:
        """The last run of step ``name`` in this boot."""
        found = [s for s in self.steps if s.name == name]
        return found[-1] if found else None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.result.serial.strip().splitlines()[-lines:])

    def output(self, name: str) -> str:
        """What the last run of step ``name`` printed on the console (its markers included)."""
        serial = self.result.serial
        begin = serial.rfind(f"KSOLO-STEP-BEGIN name={name}\n")
        if begin < 0:
            return f"(no step {name} in this boot)\n{self.tail()}"
        end = serial.find(f"KSOLO-STEP name={name} ", begin)
        return serial[begin:] if end < 0 else serial[begin : serial.find("\n", end) + 1 or None]

    def summary(self) -> str:
        steps = " ".join(f"{s.name}={s.rc}/{s.seconds:.1f}s" for s in self.steps)
        how = (
            "power cut" if self.power_cut
            else "panic" if self.panicked
            else "timed out" if self.result.timed_out
            else self.end or "?"
        )  # fmt: skip
        return (
            f"boot {self.number}: GRUB {self.grub_slot.value if self.grub_slot else '?'}"
            f" -> {self.version or '-'}; {how} after {self.result.seconds:.1f} s"
            f" (GRUB at {_secs(self.grub_at)}, init at {_secs(self.init_at)},"
            f" kernel uptime at init {_secs(self.init_uptime)}) {steps}"
        )


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


@attrs.define(kw_only=True)
class ScenarioStats:
    """Boots and wall time of one scenario, for the tier's closing summary."""

    name: str
    boots: list[Boot] = attrs.field(factory=list)
    started: float = attrs.field(factory=time.monotonic)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        qemu = sum(b.result.seconds for b in self.boots)
        head = (
            f"{self.name}: {len(self.boots)} boots, {self.seconds:.0f} s wall "
            f"({qemu:.0f} s in QEMU)"
        )
        return [head, *(f"    {b.summary()}" for b in self.boots)]


#: every scenario run in this session, printed by tests/hardware/conftest.py
SCENARIOS: list[ScenarioStats] = []
#: how the scenarios ran: wall seconds of the whole run, of building the images, parallel jobs
RUN: dict[str, float] = {}
#: set to stop every box before its next power-on (the test session is ending)
STOP = threading.Event()
_LOCK = threading.Lock()


def _median(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.2f} s (n={len(ordered)})"


def summary_lines() -> list[str]:
    """Per scenario its boots and times, then where a boot's time goes (medians)."""
    if not SCENARIOS:
        return []
    boots = [b for s in SCENARIOS for b in s.boots]
    lines = [line for s in SCENARIOS for line in s.lines()]
    steps: dict[str, list[float]] = {}
    for boot in boots:
        for step in boot.steps:
            steps.setdefault(step.name, []).append(step.seconds)
    lines += [
        (
            f"whole box: {len(SCENARIOS)} scenarios, {len(boots)} boots in "
            f"{RUN.get('wall', 0):.0f} s wall ({RUN.get('jobs', 1):.0f} at a time; building "
            f"the images {RUN.get('setup', 0):.0f} s of it); load average now "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
        ),
        "  power-on to GRUB's decision (OVMF): "
        + _median([b.grub_at for b in boots if b.grub_at is not None]),
        "  GRUB's decision to the slot's init (kernel+initramfs load, kernel boot): "
        + _median([b.init_at - b.grub_at for b in boots if b.init_at and b.grub_at]),
        "  kernel uptime when the slot's init starts (kernel boot inside the guest): "
        + _median([b.init_uptime for b in boots if b.init_uptime is not None]),
        "  inside the guest: python3 -c pass "
        + _median(steps.get("python-start", []))
        + "; kubesolo-update --version "
        + _median(steps.get("agent-version", []))
        + "; status --json "
        + _median(steps.get("agent-status", []))
        + "; boot helper (healthcheck) "
        + _median(steps.get("boot-helper", []))
        + "; apply "
        + _median(steps.get("apply", [])),
    ]
    return lines


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, **kwargs)


def _debugfs_cat(image: Path, path: str) -> bytes | None:
    done = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False, timeout=60
    )
    if done.returncode != 0 or b"File not found" in done.stderr:
        return None
    return done.stdout


def _extract(disk: Path, part: Partition, into: Path) -> Path:
    with disk.open("rb") as src, into.open("wb") as dst:
        src.seek(part.offset)
        left = part.size
        while left:
            block = src.read(min(left, 4 * MIB))
            if not block:
                break
            dst.write(block)
            left -= len(block)
    return into


@attrs.define(kw_only=True)
class WholeBox:
    """A KubeSolo test box: its disk, its release disk, and every boot so far."""

    workdir: Path
    layout: DiskLayout
    release_disk: Path
    stats: ScenarioStats
    #: the agent settings of box.env, kept across boots (KUBESOLO_UPDATE_*)
    settings: dict[str, str] = attrs.field(factory=dict)
    boots: list[Boot] = attrs.field(factory=list)
    #: the releases published so far, in order, and the signed repository serving them
    releases: list[SlotVariant] = attrs.field(factory=list)
    repository: Repository | None = None

    @classmethod
    def build(
        cls,
        workdir: Path,
        name: str,
        *,
        slot_a: SlotVariant,
        slot_b: SlotVariant | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> WholeBox:
        """A box committed on slot A (``slot_a``); slot B empty or holding ``slot_b``."""
        base = base_tree()
        # Room for the image plus the agent's 10 % preflight headroom, and a little more.
        slot_mib = math.ceil(base.filesystem_mib * 1.15) + 4
        layout = build_disk_image(
            workdir / "disk.img",
            slot_a=slot_image(slot_a, base),
            slot_b=slot_image(slot_b, base) if slot_b else None,
            grub_cfg=GRUB_CFG,
            # UEFI: OVMF costs 3-4 s at power-on, but its GRUB loads the kernel and
            # initramfs from ext4 in about 4 s where SeaBIOS' int 13h takes 13 s (TCG).
            firmware=("efi",),
            sizes=DiskSizes(slot_mib=slot_mib, data_mib=32),
        )
        stats = ScenarioStats(name=name)
        SCENARIOS.append(stats)
        box = cls(
            workdir=workdir,
            layout=layout,
            release_disk=workdir / "release.img",
            stats=stats,
            settings=dict(settings or {}),
        )
        release.build_release_disk(box.release_disk, {}, box._control(""))
        return box

    def _control(self, plan: str) -> dict[str, str]:
        return {**self.settings, "KSOLO_PLAN": plan}

    def publish(self, variant: SlotVariant, *, attacks: Sequence[str] = ()) -> Repository:
        """Sign ``variant`` as this box's next release and offer it on the release disk.

        The disk serves the box's signed repository with every release so far
        published in order (so its metadata versions only rise, as the
        guest's metadata cache demands); ``attacks`` (see
        :data:`signing.ATTACKS`) add what a compromised mirror would serve.
        """
        self.releases.append(variant)
        repo = signing.published([(v.version, slot_image(v)) for v in self.releases])
        mirrors = {
            how: signing.attack(repo, how, self.workdir / "attacks" / how) for how in attacks
        }
        files = release.release_files(repo.served, mirrors)
        release.build_release_disk(self.release_disk, files, self._control(""))
        self.repository = repo
        return repo

    # ----------------------------------------------------------------- power

    def boot(self, plan: str = "", *, cut: bool = False, timeout: float = BOOT_TIMEOUT) -> Boot:
        """Power on once with ``plan`` (comma-separated init actions); inspect the disk after.

        ``cut``: pull the plug when the guest prints ``KSOLO-CUT-NOW``.
        """
        if STOP.is_set():
            raise RuntimeError("the test session is stopping: no more power-ons")
        release.write_control(self.release_disk, self._control(plan))
        number = len(self.boots) + 1
        seen: dict[str, float] = {}
        started = time.monotonic()

        def watch(serial: str) -> bool:
            at = time.monotonic() - started
            if "grub" not in seen and "KSOLO-BOOT slot=" in serial:
                seen["grub"] = at
            if "init" not in seen and "KSOLO-INIT " in serial:
                seen["init"] = at
            return cut and "KSOLO-CUT-NOW" in serial

        runner = QemuRunner(
            image=self.layout.path,
            firmware="efi",
            memory_mib=512,
            timeout=timeout,
            extra_disks=(self.release_disk,),
        )
        result = runner.boot(serial_log=self.workdir / f"serial-{number:02d}.log", watch=watch)
        with _LOCK:
            STATS.boots["efi"] += 1
            STATS.boot_seconds += result.seconds
        boot = Boot(
            number=number,
            plan=plan,
            result=result,
            grub_at=seen.get("grub"),
            init_at=seen.get("init"),
        )
        _parse_serial(boot)
        boot.env = self.env()
        boot.state = self.state()
        self.boots.append(boot)
        self.stats.boots.append(boot)
        self.stats.seconds = time.monotonic() - self.stats.started
        return boot

    # ----------------------------------------------------------------- inspection

    def env(self) -> dict[str, str] | None:
        """The grubenv on the ESP, as GRUB will read it at the next power-on."""
        return _read_grubenv(self.layout.path, self.layout.esp.offset)

    def _data_file(self, path: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="ksolo-data-", dir=self.workdir) as tmp:
            copy = _extract(self.layout.path, self.layout.data, Path(tmp) / "data.img")
            # Replay the journal on the copy, as the guest's kernel will at its next mount.
            fsck = _run(["e2fsck", "-p", "-E", "journal_only", str(copy)])
            if fsck.returncode >= 4:
                raise AssertionError(f"e2fsck on the data partition: {fsck.stderr or fsck.stdout}")
            return _debugfs_cat(copy, path)

    def tuf_metadata(self, role: str) -> bytes | None:
        """The agent's trusted ``role`` metadata, cached next to state.json (data partition)."""
        return self._data_file(f"/update/tuf/{role}.json")

    def state(self) -> dict[str, Any] | None:
        """state.json on the data partition; None when the agent never wrote one."""
        raw = self._data_file("/update/state.json")
        return None if raw is None else dict(json.loads(raw))

    def boots_log(self) -> list[str]:
        """The guest's own record of its boots (one line per boot: slot, version, boot id)."""
        raw = self._data_file("/boots.log")
        return [] if raw is None else raw.decode().splitlines()

    def slot_version(self, slot: Slot) -> str | None:
        """/version of the slot's filesystem, None when unreadable (an empty or torn slot)."""
        with tempfile.TemporaryDirectory(prefix="ksolo-slot-", dir=self.workdir) as tmp:
            copy = _extract(self.layout.path, self.layout.slot(slot), Path(tmp) / "slot.img")
            raw = _debugfs_cat(copy, "/version")
        return raw.decode().strip() or None if raw else None

    def cleanup(self) -> None:
        """Remove the disk images (a few hundred MiB); the serial logs stay."""
        for image in (self.layout.path, self.release_disk):
            image.unlink(missing_ok=True)
        shutil.rmtree(self.workdir / "attacks", ignore_errors=True)


def _parse_serial(boot: Boot) -> None:
    serial = boot.result.serial
    boot.grub_slot = boot.result.slot
    if (m := _INIT.search(serial)) is not None:
        boot.guest_slot, boot.version, boot.init_uptime = m[1], m[2] or None, float(m[3])
    if (m := _INITRAMFS.search(serial)) is not None:
        boot.initramfs_uptime = float(m[1])
    boot.steps = [
        Step(name=m[1], rc=int(m[2]), seconds=float(m[3])) for m in _STEP.finditer(serial)
    ]
    ends = _END.findall(serial)
    boot.end = ends[-1] if ends else None
    boot.panicked = "Kernel panic" in serial
    if (m := _STATUS.search(serial)) is not None:
        try:
            boot.status = json.loads(m[1])
        except ValueError:
            boot.status = None
    for m in _DOC.finditer(serial):
        try:
            boot.documents[m[1]] = json.loads(m[2])
        except ValueError:
            boot.documents[m[1]] = None
    boot.written = {m[1]: int(m[2]) for m in _WRITTEN.finditer(serial)}
