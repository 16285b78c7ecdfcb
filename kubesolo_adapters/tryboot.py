"""The BootEnv port on Raspberry Pi tryboot: autoboot.txt, the device tree, ``reboot "0 tryboot"``.

autoboot.txt (specs/BOOTLOADER-FACTS.md section 3) holds the committed
partition in ``[all] boot_partition`` and the trial one in
``[tryboot] boot_partition``, with ``[all] tryboot_a_b=1``. The transitions
and the view come from :class:`kubesolo_core.bootmodel.TrybootModel`; this
module only maps its :class:`~kubesolo_core.bootmodel.TrybootEnv` to and from
the file, the marker and the device tree.

The file's format lives in :mod:`kubesolo_adapters.autoboot` (edits keep
every line they need not change). The result must fit the firmware's 512
bytes, or nothing is written. The file is replaced atomically (temp file,
fsync, rename: the best a FAT partition offers).

The one-shot tryboot flag lives in the firmware, not in any file, and is only
set by a clean ``reboot "0 tryboot"``. Decision: the model's ``flag`` (and so
``BootView.trial_slot``) is "a trial this agent requested *in this boot* and
the reboot has not happened yet". :meth:`TrybootBootEnv.activate` records it
in a marker file next to autoboot.txt (``autoboot.txt.kubesolo-trial``)
holding the slot, the partition and this boot's id; the trial is pending
while the marker names the ``[tryboot]`` partition and the current boot id.
Any reboot (the tryboot itself, a crash, a power cut) changes the boot id and
so ends the pending trial, exactly as the firmware clears its flag. Without a
readable boot id the marker counts as pending unless the device tree says
this boot already is the tryboot of that partition. The device tree's
``tryboot`` property is reported as ``BootView.booted_in_trial``.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from kubesolo_adapters.atomic import atomic_write, fsync_dir
from kubesolo_adapters.autoboot import parse_autoboot, render_autoboot
from kubesolo_adapters.bootfacts import BootFacts, system_reboot
from kubesolo_adapters.inputs import read_input
from kubesolo_core.bootmodel import Bootloader, BootView, TrybootEnv, TrybootModel
from kubesolo_core.errors import BootEnvError
from kubesolo_core.slots import Slot

__all__ = [
    "TRYBOOT_ARGUMENT",
    "TrybootBootEnv",
    "read_u32",
]

#: reading stops here: a file this big is no autoboot.txt (the firmware reads 512 bytes)
AUTOBOOT_FILE_LIMIT = 64 << 10
#: the reboot argument that sets the firmware's one-shot tryboot flag
TRYBOOT_ARGUMENT = "0 tryboot"
_MARKER_SUFFIX = ".kubesolo-trial"
_DEFAULT_PARTITIONS: Mapping[Slot, int] = {Slot.A: 2, Slot.B: 3}


# --------------------------------------------------------------------------- device tree


def read_u32(path: Path) -> int | None:
    """A big-endian u32 device-tree property, None when absent or not 4 bytes."""
    try:
        data = read_input(path, limit=64)
    except OSError:
        return None
    if len(data) != 4:
        return None
    value: int = struct.unpack(">I", data)[0]
    return value


# --------------------------------------------------------------------------- the adapter


@attrs.frozen(kw_only=True)
class _Marker:
    slot: Slot
    partition: int
    boot_id: str


def _default_partitions() -> dict[Slot, int]:
    return dict(_DEFAULT_PARTITIONS)


@attrs.define
class TrybootBootEnv:
    """BootEnv over autoboot.txt and the device tree, for Raspberry Pis with tryboot."""

    autoboot: Path = attrs.field(converter=Path)
    facts: BootFacts = attrs.field(kw_only=True)
    device_tree: Path = attrs.field(kw_only=True, default=Path("/proc/device-tree"), converter=Path)
    partitions: Mapping[Slot, int] = attrs.field(kw_only=True, factory=_default_partitions)
    reboot: Callable[[str], None] | None = attrs.field(kw_only=True, default=None)
    #: where the pending-trial marker lives (default: next to autoboot.txt)
    marker: Path | None = attrs.field(kw_only=True, default=None)
    model: TrybootModel = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if set(self.partitions) != {Slot.A, Slot.B} or len(set(self.partitions.values())) != 2:
            raise BootEnvError(
                f"tryboot partition map {dict(self.partitions)} must give A and B "
                "two different partitions",
                way_out="e.g. A=2, B=3",
            )
        self.model = TrybootModel(partitions=dict(self.partitions))
        if self.marker is None:
            self.marker = self.autoboot.with_name(self.autoboot.name + _MARKER_SUFFIX)

    @property
    def kind(self) -> Bootloader:
        """``tryboot``."""
        return self.model.kind

    # ------------------------------------------------------------------ files

    def _marker_path(self) -> Path:
        assert self.marker is not None  # noqa: S101  (set in __attrs_post_init__)
        return self.marker

    def _text(self) -> str | None:
        try:
            data = read_input(self.autoboot, limit=AUTOBOOT_FILE_LIMIT)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BootEnvError(
                f"could not read {self.autoboot}: {exc.strerror or exc}",
                way_out="check that the boot selector partition is mounted",
            ) from None
        return data.decode("utf-8", "surrogateescape")

    def _env_from(self, text: str | None) -> TrybootEnv:
        fresh = self.model.initial(Slot.A)
        if text is None:
            return fresh
        settings = parse_autoboot(text)
        committed = fresh.committed if settings.committed is None else settings.committed
        trial = committed if settings.trial is None else settings.trial
        return TrybootEnv(
            committed=committed,
            trial=trial,
            flag=self._pending(trial),
            tryboot_a_b=settings.tryboot_a_b,
        )

    def _load_marker(self) -> _Marker | None:
        try:
            text = read_input(self._marker_path(), limit=4096).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        slot = Slot.parse(fields.get("slot", ""))
        try:
            partition = int(fields.get("partition", ""))
        except ValueError:
            return None
        if slot is None:
            return None
        return _Marker(slot=slot, partition=partition, boot_id=fields.get("boot_id", ""))

    def _dt(self, name: str) -> int | None:
        return read_u32(self.device_tree / "chosen" / "bootloader" / name)

    def _pending(self, trial_partition: int) -> bool:
        marker = self._load_marker()
        if marker is None or marker.partition != trial_partition:
            return False
        current = self.facts.boot_id()
        if current is not None and marker.boot_id:
            return marker.boot_id == current
        # No boot id to compare: pending unless this boot is already that tryboot.
        return not (self._dt("tryboot") == 1 and self._dt("partition") == marker.partition)

    def _write_env(self, what: str, env: TrybootEnv) -> None:
        text = self._text()
        new = render_autoboot(
            text or "",
            committed=env.committed,
            trial=env.trial,
            tryboot_a_b=env.tryboot_a_b,
            source=str(self.autoboot),
        )
        if new == text:
            return  # spare the SD card a write that changes nothing
        target = self.autoboot.resolve() if self.autoboot.is_symlink() else self.autoboot
        try:
            atomic_write(target, new.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            raise BootEnvError(
                f"{what}: could not write {target}: {exc.strerror or exc}; the old file is intact",
                way_out="check that the boot selector partition is mounted read-write",
            ) from None

    def _clear_marker(self) -> None:
        path = self._marker_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    # ------------------------------------------------------------------ the port

    def read(self) -> BootView:
        """The model's view, plus what the device tree says about this boot."""
        env = self._env_from(self._text())
        view = self.model.view(env)
        tryboot = self._dt("tryboot")
        partition = self._dt("partition")
        raw = dict(view.raw)
        raw["tryboot_a_b"] = "1" if env.tryboot_a_b else "0"
        if tryboot is not None:
            raw["dt_tryboot"] = str(tryboot)
        if partition is not None:
            raw["dt_partition"] = str(partition)
        return attrs.evolve(
            view, booted_in_trial=None if tryboot is None else tryboot == 1, raw=raw
        )

    def activate(self, slot: Slot) -> None:
        """Write ``[tryboot] boot_partition`` and mark the trial pending for this boot."""
        env = self.model.activate(self._env_from(self._text()), slot)
        self._write_env(f"activate {slot.value}", env)
        body = f"slot={slot.value}\npartition={env.trial}\nboot_id={self.facts.boot_id() or ''}\n"
        try:
            atomic_write(self._marker_path(), body.encode("utf-8"))
        except OSError as exc:
            raise BootEnvError(
                f"activate {slot.value}: could not write {self._marker_path()}: "
                f"{exc.strerror or exc}",
                way_out="check that the boot selector partition is mounted read-write",
            ) from None

    def mark_good(self, slot: Slot) -> None:
        """Commit ``slot``: swap the two ``boot_partition`` values."""
        env = self.model.mark_good(self._env_from(self._text()), slot)
        self._write_env(f"mark_good {slot.value}", env)
        self._clear_marker()

    def force_rollback(self, to: Slot) -> None:
        """Commit ``to`` now and forget any pending trial."""
        env = self.model.force_rollback(self._env_from(self._text()), to)
        self._write_env(f"force_rollback {to.value}", env)
        self._clear_marker()

    def booted_slot(self) -> Slot | None:
        """``kubesolo.slot=``, else the slot of the device tree's boot partition."""
        slot = self.facts.booted_slot()
        if slot is not None:
            return slot
        partition = self._dt("partition")
        return None if partition is None else self.model.slot_of(partition)

    def boot_id(self) -> str | None:
        """This boot's id."""
        return self.facts.boot_id()

    def request_reboot(self) -> None:
        """``reboot "0 tryboot"`` while a trial is pending, a plain reboot otherwise.

        The injected callable gets the argument: ``"0 tryboot"`` or ``""``.
        """
        text = self._text()
        pending = text is not None and self._env_from(text).flag
        argument = TRYBOOT_ARGUMENT if pending else ""
        if self.reboot is not None:
            self.reboot(argument)
        else:
            system_reboot(argument)
