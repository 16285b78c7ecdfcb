"""The grubenv file on the ESP: read and written by our writer or by the grub-editenv binary.

Two backends share one small interface: :class:`PythonBackend` (the default:
the block edited in memory by :mod:`kubesolo_adapters.grubenv`, then an atomic
replace through :func:`kubesolo_adapters.atomic.atomic_write`) and
:class:`EditenvBackend` (the grub-editenv binary, which rewrites the file in
place and so is not atomic on power loss). Both refuse to touch a file that is
not a valid env block: never brick an ESP.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from kubesolo_adapters.atomic import atomic_write
from kubesolo_adapters.grubenv import (
    DEFAULT_SIZE,
    WAY_OUT_CORRUPT,
    EnvBlockFull,
    InvalidEnvBlock,
    check_name,
    check_value,
    create,
    last_wins,
    parse,
    set_vars,
    text_of,
    unset_vars,
    validate,
)
from kubesolo_adapters.inputs import read_input
from kubesolo_core.errors import BootEnvError

#: an env block file larger than this is not one (GRUB's are 1 KiB, rarely a few); reads
#: go through kubesolo_adapters.inputs, so a FIFO or a device is refused, never read
MAX_FILE = 1 << 20

__all__ = ["EditenvBackend", "EnvBackend", "PythonBackend"]


class EnvBackend(Protocol):
    """One way of reading and editing a grubenv file."""

    @property
    def path(self) -> Path:
        """The grubenv file."""

    def pairs(self) -> list[tuple[str, str]]:
        """Every variable in file order (duplicates included); [] when the file is missing."""

    def read(self) -> dict[str, str]:
        """The variables as GRUB sees them (last duplicate wins); {} when missing."""

    def set(self, mapping: Mapping[str, str]) -> None:
        """Set variables in one write, creating a 1024-byte block if the file is missing."""

    def unset(self, names: Iterable[str]) -> None:
        """Delete the first line of each name in one write."""

    def create(self) -> None:
        """Overwrite the file with an empty block (like grub-editenv create)."""


def _os_error(action: str, path: Path, exc: OSError) -> BootEnvError:
    return BootEnvError(
        f"could not {action} {path}: {exc.strerror or exc}",
        way_out="check that the ESP/boot partition is mounted read-write and not full",
    )


@attrs.define
class PythonBackend:
    """The pure-Python editor: validate, edit in memory, replace the file atomically.

    Symlinks are followed (the link stays, its target is replaced), as
    grub-editenv does. The file keeps its permission bits.
    """

    path: Path = attrs.field(converter=Path)
    create_size: int = DEFAULT_SIZE

    def _load(self) -> bytes | None:
        try:
            return read_input(self.path, limit=MAX_FILE)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error("read", self.path, exc) from None

    def _store(self, data: bytes) -> None:
        target = self.path.resolve() if self.path.is_symlink() else self.path
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
        except OSError as exc:
            raise _os_error("stat", target, exc) from None
        try:
            atomic_write(target, data, mode)
        except OSError as exc:
            raise _os_error("write", target, exc) from None

    def pairs(self) -> list[tuple[str, str]]:
        data = self._load()
        return [] if data is None else parse(data, source=str(self.path))

    def read(self) -> dict[str, str]:
        return last_wins(self.pairs())

    def set(self, mapping: Mapping[str, str]) -> None:
        data = self._load()
        block = create(self.create_size) if data is None else data
        self._store(set_vars(block, mapping, source=str(self.path)))

    def unset(self, names: Iterable[str]) -> None:
        data = self._load()
        block = create(self.create_size) if data is None else data
        self._store(unset_vars(block, names, source=str(self.path)))

    def create(self) -> None:
        self._store(create(self.create_size))


@attrs.define
class EditenvBackend:
    """The grub-editenv binary, driven with argument lists (never a shell).

    The file is validated with :func:`validate` before every edit so that both
    backends refuse the same files with the same error. grub-editenv rewrites
    the file in place: a power cut during its write may leave a torn block,
    which is why :class:`PythonBackend` is the default.

    ``list`` prints values unescaped, so a value holding a newline is
    ambiguous in its output; :meth:`pairs` joins a line without ``=`` to the
    previous value, which is right unless the continuation itself holds ``=``.
    The agent's own variables never hold newlines.
    """

    path: Path = attrs.field(converter=Path)
    binary: str = "grub-editenv"
    timeout: float = 30.0

    def _run(self, *args: str) -> str:
        argv = [self.binary, str(self.path), *args]
        env = {**os.environ, "LC_ALL": "C"}
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.timeout,
                check=False,
                env=env,
            )
        except FileNotFoundError:
            raise BootEnvError(
                f"{self.binary} not found",
                way_out="install grub-common, or use the python grubenv backend",
            ) from None
        except subprocess.TimeoutExpired:
            raise BootEnvError(
                f"{self.binary} {self.path} {args[0]} did not finish in {self.timeout:g}s"
            ) from None
        err = text_of(proc.stderr).strip()
        if proc.returncode != 0:
            if "too small" in err:
                raise EnvBlockFull(
                    f"{self.path}: {err} (grub-editenv {args[0]}); nothing was written",
                    way_out="unset unused variables or shorten the value",
                )
            if "invalid environment block" in err:
                raise InvalidEnvBlock(f"{self.path}: {err}", way_out=WAY_OUT_CORRUPT)
            raise BootEnvError(
                f"{self.binary} {self.path} {args[0]} failed with rc={proc.returncode}: {err}"
            )
        return text_of(proc.stdout)

    def _validate_existing(self) -> None:
        try:
            data = read_input(self.path, limit=MAX_FILE)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error("read", self.path, exc) from None
        validate(data, source=str(self.path))

    def pairs(self) -> list[tuple[str, str]]:
        # `list` would create a missing file; reading must not write.
        if not self.path.exists():
            return []
        self._validate_existing()
        out: list[tuple[str, str]] = []
        text = self._run("list")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            if "=" in line or not out:
                name, _, value = line.partition("=")
                out.append((name, value))
            else:
                name, value = out[-1]
                out[-1] = (name, value + "\n" + line)
        return out

    def read(self) -> dict[str, str]:
        return last_wins(self.pairs())

    def set(self, mapping: Mapping[str, str]) -> None:
        source = str(self.path)
        args = []
        for name, value in mapping.items():
            check_name(name, source)
            check_value(name, value, source)
            args.append(f"{name}={value}")
        if not args:
            return
        self._validate_existing()
        self._run("set", *args)

    def unset(self, names: Iterable[str]) -> None:
        source = str(self.path)
        wanted = list(names)
        for name in wanted:
            check_name(name, source)
        self._validate_existing()
        self._run("unset", *wanted)

    def create(self) -> None:
        self._run("create")
