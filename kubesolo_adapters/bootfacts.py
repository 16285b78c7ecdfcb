"""What the running kernel says about this boot (slot, boot id), and how to end it (reboot).

The kernel command line's ``kubesolo.slot=A|B`` is the authority on the
booted slot (DESIGN.md 2.1): the bootloader env says what *should* boot, the
command line what *did*. The boot id changes at every boot; the agent keeps
the one of the activation to tell a pending reboot from a failed tryboot.

Both paths are arguments so that tests, the demo and the simulator point
them at plain files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from kubesolo_adapters.inputs import NotRegularFile, read_input
from kubesolo_core.errors import BootEnvError
from kubesolo_core.slots import Slot

__all__ = ["SLOT_PARAM", "BootFacts", "slot_from_cmdline", "system_reboot"]

#: the kernel parameter naming the booted slot
SLOT_PARAM = "kubesolo.slot"


def slot_from_cmdline(cmdline: str) -> Slot | None:
    """The slot named by the last ``kubesolo.slot=`` parameter, None if absent or garbage.

    The last occurrence wins, as for any parameter given twice (a boot
    loader appending to a built-in command line). Quotes around the value
    are dropped.
    """
    value: str | None = None
    for token in cmdline.split():
        name, sep, rest = token.partition("=")
        if sep and name == SLOT_PARAM:
            value = rest.strip('"')
    return Slot.parse(value) if value is not None else None


#: a kernel command line is at most a few KiB (COMMAND_LINE_SIZE); a boot id is 37 bytes
_LIMIT = 64 << 10


def _read_text(path: Path, what: str) -> str | None:
    """The text of ``path``; None when missing or unreadable; BootEnvError for a special file.

    A FIFO or a device named as the command line is a mistake to report, not
    an unknown to live with: reading a FIFO would hang the agent.
    """
    try:
        return read_input(path, limit=_LIMIT).decode("utf-8", errors="replace")
    except NotRegularFile as exc:
        raise BootEnvError(
            f"{what} {path}: {exc.strerror}",
            way_out="point it at /proc/cmdline (--cmdline) or /proc/sys/kernel/random/boot_id",
        ) from None
    except OSError:
        return None


@attrs.define
class BootFacts:
    """The booted slot and boot id, read from /proc (or files standing in for it).

    A missing or unreadable file is "unknown" (None), never an error: the
    agent then says so instead of guessing.
    """

    cmdline: Path = attrs.field(default=Path("/proc/cmdline"), converter=Path)
    boot_id_path: Path = attrs.field(
        default=Path("/proc/sys/kernel/random/boot_id"), converter=Path
    )

    def booted_slot(self) -> Slot | None:
        """``kubesolo.slot=`` of the kernel command line, None when absent or not A/B."""
        text = _read_text(self.cmdline, "kernel command line")
        return None if text is None else slot_from_cmdline(text)

    def boot_id(self) -> str | None:
        """This boot's id, None when unreadable or empty."""
        text = _read_text(self.boot_id_path, "boot id")
        if text is None:
            return None
        value = text.strip()
        return value or None


def system_reboot(argument: str = "") -> None:
    """Ask the init system to reboot (``reboot`` or ``reboot ARG``, argument list, no shell)."""
    argv = ["reboot", argument] if argument else ["reboot"]
    try:
        subprocess.run(argv, check=True, timeout=60, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BootEnvError(
            f"could not request a reboot with {argv}: {exc}",
            way_out="reboot the box by hand",
        ) from None
