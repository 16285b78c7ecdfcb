"""Just enough ELF reading to build the guest: shared-library needs and kernel-module info.

The slot image carries only the libraries its programs load, so the builder
follows each program's ``DT_NEEDED`` entries; the initramfs loads kernel
modules in dependency order, so it reads each ``.ko``'s ``.modinfo``
(``depends=``, ``softdep=``). Debian's kernel package ships no modules.dep
(depmod runs at install time), and this keeps binutils and kmod off the
list of tools the tier needs. ELF64 little-endian only: the guest is x86_64.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["is_elf", "modinfo", "needed"]

_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_LITTLE = 1
_PT_DYNAMIC = 2
_PT_LOAD = 1
_DT_NEEDED = 1
_DT_STRTAB = 5


def is_elf(path: Path) -> bool:
    """True for an ELF file (a program, a shared library, a kernel module)."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _MAGIC
    except OSError:
        return False


def _header(data: bytes, path: Path) -> None:
    if data[:4] != _MAGIC or data[4] != _ELFCLASS64 or data[5] != _LITTLE:
        raise ValueError(f"{path} is not a little-endian ELF64 file")


def _vaddr_to_offset(data: bytes, vaddr: int) -> int:
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, base
        )
        if p_type == _PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
            return p_offset + (vaddr - p_vaddr)
    raise ValueError(f"address {vaddr:#x} is in no loadable segment")


def needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` sonames of a program or shared library (empty when static)."""
    data = path.read_bytes()
    _header(data, path)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    dynamic = None
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, base
        )
        if p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    entries: list[tuple[int, int]] = []
    offset, size = dynamic
    for pos in range(offset, offset + size, 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        entries.append((tag, value))
    strtab = next((value for tag, value in entries if tag == _DT_STRTAB), None)
    if strtab is None:
        return []
    table = _vaddr_to_offset(data, strtab)
    names = []
    for tag, value in entries:
        if tag == _DT_NEEDED:
            end = data.index(b"\0", table + value)
            names.append(data[table + value : end].decode())
    return names


def modinfo(path: Path) -> dict[str, list[str]]:
    """The ``key=value`` strings of a kernel module's ``.modinfo`` section, by key."""
    data = path.read_bytes()
    _header(data, path)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    info: dict[str, list[str]] = {}
    for index in range(shnum):
        name, offset, size = section(index)
        end = data.index(b"\0", names_at + name)
        if data[names_at + name : end] != b".modinfo":
            continue
        for item in data[offset : offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info
