"""Build a KubeSolo OS disk image as a plain file: GPT, ESP, slots A/B, data, GRUB.

For provisioning tools (write the result to a disk or a USB stick) and for
tests/hardware (boot it under QEMU). Everything is file operations, no root:
``sfdisk`` on the image file, each filesystem made as its own file
(``mkfs.vfat``, ``mkfs.ext2 -d``) and copied into place, the ESP filled with
mtools, GRUB built with ``grub-mkimage`` for x86_64-efi and i386-pc.

The layout (DESIGN.md 2.1; GPT partition numbers in this order)::

    1  KSOLOEFI   ESP, FAT16: EFI/BOOT/BOOTX64.EFI, grub.cfg, grubenv
    2  KSOLOA     system slot A (an ext2/ext4 filesystem image)
    3  KSOLOB     system slot B
    4  KSOLODATA  data, ext4
    5  (none)     1 MiB BIOS boot partition holding GRUB's i386-pc core.img

``grub-bios-setup`` refuses an image file, so the legacy-BIOS path is
embedded by hand, the way grub-bios-setup does it for a GPT disk: core.img
into the BIOS boot partition, its first sector's blocklist pointed at the
rest, and GRUB's boot.img as the MBR code pointing at core.img (the
protective MBR's partition table and the disk signature are kept).

The grubenv lives next to grub.cfg on the ESP. GRUB cannot create a missing
grubenv, so the image gets one unless the caller asks for none (the tests do,
to prove a missing env never bricks). :func:`read_esp_file`,
:func:`write_esp_file`, :func:`read_grubenv` and :func:`write_grubenv` reach
files inside the ESP of an image with mtools (``-i IMAGE@@OFFSET``).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from kubesolo_adapters import grubenv
from kubesolo_core.errors import ConfigError, OperationFailed
from kubesolo_core.slots import DATA_LABEL, DEFAULT_LABELS, ESP_LABEL, Slot

__all__ = [
    "DEFAULT_GRUBENV",
    "ESP_DIR",
    "GRUB_MODULES",
    "DiskLayout",
    "DiskSizes",
    "Partition",
    "build_disk_image",
    "decode_grubenv",
    "encode_grubenv",
    "make_slot_filesystem",
    "read_esp_file",
    "read_grubenv",
    "write_esp_file",
    "write_grubenv",
]

MIB = 1024 * 1024
SECTOR = 512

#: the folder on the ESP holding GRUB, grub.cfg and grubenv (the EFI fallback path)
ESP_DIR = "EFI/BOOT"

#: what a fresh box starts with: committed on slot A
DEFAULT_GRUBENV: Mapping[str, str] = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}

#: GRUB modules both images carry: what deploy/grub.cfg uses, nothing loaded at run time
GRUB_MODULES: tuple[str, ...] = (
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "normal",
    "configfile",
    "loadenv",
    "echo",
    "test",
    "regexp",
    "sleep",
    "halt",
    "reboot",
    "serial",
    "terminal",
    "search",
    "search_label",
    "search_fs_uuid",
    "search_fs_file",
    "linux",
    "boot",
)

_ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
_GRUB_LIB = Path("/usr/lib/grub")

Firmware = str  # "bios" | "efi"


@attrs.frozen(kw_only=True)
class DiskSizes:
    """Partition sizes in MiB. The defaults make an 83 MiB image that boots a Debian kernel."""

    esp_mib: int = 32
    slot_mib: int = 16
    data_mib: int = 16
    bios_mib: int = 1


@attrs.frozen(kw_only=True)
class Partition:
    """One GPT partition of the image: where it is, in bytes."""

    number: int
    name: str
    label: str | None
    offset: int
    size: int

    @property
    def first_lba(self) -> int:
        """The first 512-byte sector."""
        return self.offset // SECTOR


@attrs.frozen(kw_only=True)
class DiskLayout:
    """What :func:`build_disk_image` made: the file and where each partition lives."""

    path: Path
    size: int
    esp: Partition
    slot_a: Partition
    slot_b: Partition
    data: Partition
    bios_boot: Partition
    firmware: tuple[Firmware, ...]

    def slot(self, slot: Slot) -> Partition:
        """The partition of ``slot``."""
        return self.slot_a if slot is Slot.A else self.slot_b

    @property
    def partitions(self) -> tuple[Partition, ...]:
        """All partitions in GPT order."""
        return (self.esp, self.slot_a, self.slot_b, self.data, self.bios_boot)

    @property
    def grubenv_path(self) -> str:
        """The grubenv's path inside the ESP."""
        return f"{ESP_DIR}/grubenv"


# --------------------------------------------------------------------------- tools


def _run(
    argv: Sequence[str | os.PathLike[str]], *, what: str, input_text: str | None = None
) -> str:
    """Run a tool, turning a missing binary or a failure into one readable error."""
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"},
            timeout=120,
        )
    except FileNotFoundError as exc:
        raise OperationFailed(
            f"{what}: tool {argv[0]!s} not found",
            way_out="install grub-common grub-pc-bin grub-efi-amd64-bin mtools dosfstools "
            "fdisk e2fsprogs (scripts/install-system-deps.sh)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(f"{what}: {argv[0]!s} did not finish in 120 s") from exc
    if done.returncode != 0:
        raise OperationFailed(
            f"{what}: {Path(str(argv[0])).name} exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[:500]}"
        )
    return done.stdout


def _image_spec(image: Path, offset: int) -> str:
    # mtools reaches a filesystem inside a bigger file with IMAGE@@OFFSET.
    return f"{image}@@{offset}"


# --------------------------------------------------------------------------- ESP files


def read_esp_file(image: Path, esp_offset: int, path: str) -> bytes | None:
    """The bytes of ``path`` (e.g. ``EFI/BOOT/grubenv``) inside the ESP, None when absent."""
    with tempfile.TemporaryDirectory(prefix="ksolo-esp-") as tmp:
        out = Path(tmp) / "file"
        done = subprocess.run(
            ["mcopy", "-n", "-i", _image_spec(image, esp_offset), f"::/{path}", str(out)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"},
            timeout=60,
        )
        if done.returncode != 0:
            if "not found" in done.stderr.lower():
                return None
            raise OperationFailed(
                f"reading ::/{path} from the ESP of {image} at offset {esp_offset}: "
                f"{done.stderr.strip()[:300]}"
            )
        return out.read_bytes()


def write_esp_file(image: Path, esp_offset: int, path: str, data: bytes | None) -> None:
    """Write (or with ``data=None`` delete) ``path`` inside the ESP of ``image``."""
    spec = _image_spec(image, esp_offset)
    if data is None:
        done = subprocess.run(
            ["mdel", "-i", spec, f"::/{path}"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"},
            timeout=60,
        )
        if done.returncode != 0 and "not found" not in done.stderr.lower():
            raise OperationFailed(f"deleting ::/{path} from {image}: {done.stderr.strip()[:300]}")
        return
    with tempfile.TemporaryDirectory(prefix="ksolo-esp-") as tmp:
        src = Path(tmp) / Path(path).name
        src.write_bytes(data)
        _run(["mcopy", "-o", "-i", spec, src, f"::/{path}"], what=f"writing ::/{path}")


def encode_grubenv(variables: Mapping[str, str]) -> bytes:
    """A fresh 1024-byte GRUB env block holding ``variables`` (as grub-editenv writes it)."""
    return grubenv.set_vars(grubenv.create(), variables, source="the initial grubenv")


def decode_grubenv(block: bytes, *, source: str = "<grubenv>") -> dict[str, str]:
    """The variables of a GRUB env block as GRUB's load_env sets them (the last duplicate wins)."""
    return grubenv.last_wins(grubenv.parse(block, source=source))


def read_grubenv(
    image: Path, esp_offset: int, path: str = f"{ESP_DIR}/grubenv"
) -> dict[str, str] | None:
    """The grubenv's variables inside the ESP of ``image``, None when the file is absent."""
    block = read_esp_file(image, esp_offset, path)
    return None if block is None else decode_grubenv(block, source=f"{image}:ESP/{path}")


def write_grubenv(
    image: Path,
    esp_offset: int,
    variables: Mapping[str, str] | None,
    path: str = f"{ESP_DIR}/grubenv",
) -> None:
    """Replace the grubenv inside the ESP with a fresh block of ``variables`` (None: delete it)."""
    write_esp_file(
        image, esp_offset, path, None if variables is None else encode_grubenv(variables)
    )


# --------------------------------------------------------------------------- filesystems


def make_slot_filesystem(
    path: Path,
    *,
    label: str,
    size_mib: int,
    files: Mapping[str, bytes | Path] | None = None,
    fstype: str = "ext2",
) -> Path:
    """An ext2/ext4 filesystem image at ``path``, populated without a mount (``mkfs -d``).

    ``files`` maps paths inside the filesystem (``vmlinuz``, ``version``) to
    bytes or to a host file to copy.
    """
    if fstype not in ("ext2", "ext3", "ext4"):
        raise ConfigError(f"slot filesystem type {fstype!r} is not ext2/ext3/ext4")
    with tempfile.TemporaryDirectory(prefix="ksolo-slot-") as tmp:
        root = Path(tmp)
        for name, content in (files or {}).items():
            target = root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_bytes(content)
        path.unlink(missing_ok=True)
        _run(
            [f"mkfs.{fstype}", "-q", "-F", "-L", label, "-d", root, path, f"{size_mib}M"],
            what=f"making the {label} filesystem",
        )
    return path


# --------------------------------------------------------------------------- GRUB


def _grub_images(workdir: Path, firmware: Sequence[Firmware]) -> dict[Firmware, Path]:
    images: dict[Firmware, Path] = {}
    if "efi" in firmware:
        efi = workdir / "BOOTX64.EFI"
        _run(
            ["grub-mkimage", "-O", "x86_64-efi", "-p", f"/{ESP_DIR}", "-o", efi, *GRUB_MODULES],
            what="building GRUB for x86_64-efi",
        )
        images["efi"] = efi
    if "bios" in firmware:
        core = workdir / "core.img"
        # The prefix names the ESP explicitly: the BIOS path has no "device
        # the firmware loaded me from" to default to.
        _run(
            [
                "grub-mkimage",
                "-O",
                "i386-pc",
                "-p",
                f"(hd0,gpt1)/{ESP_DIR}",
                "-o",
                core,
                "biosdisk",
                *GRUB_MODULES,
            ],
            what="building GRUB for i386-pc",
        )
        images["bios"] = core
    return images


def _embed_bios(image: Path, core: Path, bios_boot: Partition) -> None:
    """Install GRUB's legacy-BIOS boot code the way grub-bios-setup would on GPT."""
    core_bytes = bytearray(core.read_bytes())
    if len(core_bytes) % SECTOR:
        core_bytes += bytes(SECTOR - len(core_bytes) % SECTOR)
    sectors = len(core_bytes) // SECTOR
    if len(core_bytes) > bios_boot.size:
        raise OperationFailed(
            f"GRUB core.img is {len(core_bytes)} bytes, the BIOS boot partition only "
            f"{bios_boot.size}",
            way_out="a bigger bios_mib in DiskSizes",
        )
    lba = bios_boot.first_lba
    # diskboot.img (core.img's first sector) loads the rest from one blocklist
    # entry at 0x1F4: start LBA (u64), sector count (u16), segment (u16, kept).
    segment = struct.unpack_from("<H", core_bytes, 0x1FE)[0]
    struct.pack_into("<QHH", core_bytes, 0x1F4, lba + 1, sectors - 1, segment)
    boot = bytearray((_GRUB_LIB / "i386-pc" / "boot.img").read_bytes())
    with image.open("r+b") as disk:
        disk.seek(lba * SECTOR)
        disk.write(core_bytes)
        disk.seek(0)
        mbr = bytearray(disk.read(SECTOR))
        # Keep the disk's BPB area and its signature + protective partition table.
        boot[0x03:0x5A] = mbr[0x03:0x5A]
        boot[0x1B8:0x200] = mbr[0x1B8:0x200]
        struct.pack_into("<Q", boot, 0x5C, lba)  # KERNEL_SECTOR: where core.img starts
        boot[0x66:0x68] = b"\x90\x90"  # grub-bios-setup NOPs the drive check this way
        disk.seek(0)
        disk.write(boot)
        disk.flush()
        os.fsync(disk.fileno())


# --------------------------------------------------------------------------- the image


def _layout(path: Path, sizes: DiskSizes, firmware: tuple[Firmware, ...]) -> DiskLayout:
    offset = MIB  # first-lba 2048: room for the primary GPT
    parts: list[Partition] = []
    for number, (name, label, mib) in enumerate(
        (
            ("esp", ESP_LABEL, sizes.esp_mib),
            ("slot_a", DEFAULT_LABELS[Slot.A], sizes.slot_mib),
            ("slot_b", DEFAULT_LABELS[Slot.B], sizes.slot_mib),
            ("data", DATA_LABEL, sizes.data_mib),
            ("bios_boot", None, sizes.bios_mib),
        ),
        start=1,
    ):
        parts.append(
            Partition(number=number, name=name, label=label, offset=offset, size=mib * MIB)
        )
        offset += mib * MIB
    total = offset + MIB  # room for the backup GPT
    return DiskLayout(
        path=path,
        size=total,
        esp=parts[0],
        slot_a=parts[1],
        slot_b=parts[2],
        data=parts[3],
        bios_boot=parts[4],
        firmware=firmware,
    )


def _place(image: Path, source: Path, part: Partition) -> None:
    size = source.stat().st_size
    if size > part.size:
        raise ConfigError(
            f"{source} is {size} bytes, partition {part.name} holds {part.size}",
            way_out="a smaller filesystem image or bigger DiskSizes",
        )
    with source.open("rb") as src, image.open("r+b") as dst:
        dst.seek(part.offset)
        shutil.copyfileobj(src, dst, 4 * MIB)
        dst.flush()
        os.fsync(dst.fileno())


def build_disk_image(
    path: Path,
    *,
    slot_a: Path | None,
    slot_b: Path | None,
    grub_cfg: Path,
    initial_env: Mapping[str, str] | None = DEFAULT_GRUBENV,
    firmware: Sequence[Firmware] = ("bios", "efi"),
    sizes: DiskSizes | None = None,
    esp_files: Mapping[str, bytes] | None = None,
) -> DiskLayout:
    """Build a bootable GPT disk image at ``path`` and return where everything is.

    ``slot_a``/``slot_b`` are filesystem images (labelled KSOLOA/KSOLOB, as
    GRUB finds a slot by label); None makes an empty ext2 with the right
    label. ``initial_env`` is the grubenv's variables (None: no grubenv at all).
    ``esp_files`` adds files to the ESP (paths relative to its root).
    """
    firmware = tuple(firmware)
    unknown = set(firmware) - {"bios", "efi"}
    if unknown or not firmware:
        raise ConfigError(f"firmware {firmware!r}: choose from 'bios' and 'efi'")
    if not grub_cfg.is_file():
        raise ConfigError(f"grub.cfg {grub_cfg} does not exist", way_out="pass deploy/grub.cfg")
    sizes = sizes or DiskSizes()
    layout = _layout(path, sizes, firmware)
    with tempfile.TemporaryDirectory(prefix="ksolo-disk-") as tmp:
        work = Path(tmp)
        path.unlink(missing_ok=True)
        with path.open("wb") as f:
            f.truncate(layout.size)
        script = ["label: gpt", "first-lba: 2048"]
        types = {
            "esp": _ESP_TYPE,
            "slot_a": _LINUX_TYPE,
            "slot_b": _LINUX_TYPE,
            "data": _LINUX_TYPE,
            "bios_boot": _BIOS_BOOT_TYPE,
        }
        for part in layout.partitions:
            gpt_name = part.label or "BIOSBOOT"
            script.append(
                f"start={part.first_lba}, size={part.size // SECTOR}, "
                f'type={types[part.name]}, name="{gpt_name}"'
            )
        _run(["sfdisk", "--quiet", path], what="partitioning", input_text="\n".join(script) + "\n")

        esp = work / "esp.img"
        _run(
            [
                "mkfs.vfat", "-F", "16", "-n", ESP_LABEL,
                "-h", str(layout.esp.first_lba), "-C", esp, str(layout.esp.size // 1024),
            ],
            what="making the ESP",
        )  # fmt: skip
        spec = str(esp)
        _run(["mmd", "-i", spec, "::/EFI", f"::/{ESP_DIR}"], what="making EFI/BOOT on the ESP")
        images = _grub_images(work, firmware)
        if "efi" in images:
            _run(["mcopy", "-i", spec, images["efi"], f"::/{ESP_DIR}/BOOTX64.EFI"], what="ESP")
        _run(["mcopy", "-i", spec, grub_cfg, f"::/{ESP_DIR}/grub.cfg"], what="copying grub.cfg")
        if initial_env is not None:
            env = work / "grubenv"
            env.write_bytes(encode_grubenv(initial_env))
            _run(["mcopy", "-i", spec, env, f"::/{ESP_DIR}/grubenv"], what="copying grubenv")
        for name, data in (esp_files or {}).items():
            extra = work / "extra"
            extra.write_bytes(data)
            parent = str(Path(name).parent)
            if parent not in (".", ""):
                subprocess.run(
                    ["mmd", "-D", "s", "-i", spec, f"::/{parent}"],
                    capture_output=True,
                    check=False,
                    env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
                    timeout=60,
                )
            _run(["mcopy", "-o", "-i", spec, extra, f"::/{name}"], what=f"copying {name}")
        _place(path, esp, layout.esp)

        for slot, given in ((Slot.A, slot_a), (Slot.B, slot_b)):
            part = layout.slot(slot)
            source = given or make_slot_filesystem(
                work / f"slot{slot.value}.img",
                label=DEFAULT_LABELS[slot],
                size_mib=part.size // MIB,
            )
            _place(path, source, part)
        data_fs = make_slot_filesystem(
            work / "data.img", label=DATA_LABEL, size_mib=sizes.data_mib, fstype="ext4"
        )
        _place(path, data_fs, layout.data)
        if "bios" in images:
            _embed_bios(path, images["bios"], layout.bios_boot)
    return layout
