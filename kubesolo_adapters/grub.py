"""The BootEnv port on GRUB: the grubenv file, read and written through the GRUB model.

The variables written are exactly the model's (``active_slot``,
``boot_counter``, ``boot_success``), computed by
:class:`kubesolo_core.bootmodel.GrubModel` from what the file holds, so the
adapter, the simulator and deploy/grub.cfg agree by construction. Every other
variable in the file is left where it is, byte for byte.

Decisions:

* A missing grubenv reads as an empty env: the model's view of it (GRUB
  boots A, committed). The first write creates a 1024-byte block.
* A file that is not an env block is refused on read and never overwritten
  (:class:`~kubesolo_adapters.grubenv.InvalidEnvBlock`).
* GRUB's ``load_env`` lets the last duplicate win while an edit changes the
  first: if one of our variables is duplicated, the earlier copies (which GRUB
  ignores) are removed first, then the write happens; every write is read
  back and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from kubesolo_adapters.bootfacts import BootFacts, system_reboot
from kubesolo_adapters.grubenvfile import EditenvBackend, EnvBackend, PythonBackend
from kubesolo_core.bootmodel import ACTIVE, COUNTER, SUCCESS, Bootloader, BootView, GrubModel
from kubesolo_core.errors import BootEnvError, ConfigError
from kubesolo_core.slots import Slot

__all__ = ["BACKENDS", "MANAGED", "GrubBootEnv", "make_backend"]

#: the only variables this adapter writes
MANAGED = (ACTIVE, COUNTER, SUCCESS)
BACKENDS = ("python", "grub-editenv")


def make_backend(grubenv: Path, name: str) -> EnvBackend:
    """The env backend called ``name`` (``python`` or ``grub-editenv``) over ``grubenv``."""
    if name == "python":
        return PythonBackend(grubenv)
    if name in ("grub-editenv", "editenv"):
        return EditenvBackend(grubenv)
    raise ConfigError(
        f"unknown grubenv backend {name!r}",
        way_out="use one of: " + ", ".join(BACKENDS),
    )


@attrs.define
class GrubBootEnv:
    """BootEnv over a grubenv file, for x86 boxes booting through deploy/grub.cfg."""

    grubenv: Path = attrs.field(converter=Path)
    facts: BootFacts = attrs.field(kw_only=True)
    backend: str = attrs.field(kw_only=True, default="python")
    reboot: Callable[[], None] | None = attrs.field(kw_only=True, default=None)
    model: GrubModel = attrs.field(kw_only=True, factory=GrubModel)
    _env: EnvBackend = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._env = make_backend(self.grubenv, self.backend)

    @property
    def kind(self) -> Bootloader:
        """``grub``."""
        return self.model.kind

    def read(self) -> BootView:
        """The model's view of the file (of an empty env when the file is missing)."""
        return self.model.view(self._env.read())

    def _write(self, what: str, compute: Callable[[dict[str, str]], dict[str, str]]) -> None:
        pairs = self._env.pairs()
        current = dict(pairs)
        wanted = compute(current)
        changes = {name: wanted[name] for name in MANAGED if name in wanted}
        names = [name for name, _ in pairs]
        extra = [name for name in MANAGED for _ in range(names.count(name) - 1)]
        if extra:
            # Drops only copies GRUB already ignores: the boot choice is unchanged.
            self._env.unset(extra)
        self._env.set(changes)
        seen = self._env.read()
        wrong = {name: seen.get(name) for name in changes if seen.get(name) != changes[name]}
        if wrong:
            raise BootEnvError(
                f"{self.grubenv}: {what} wrote {changes} but reads back {wrong}",
                way_out="check the ESP for errors (fsck.vfat -n) and run the command again",
            )

    def activate(self, slot: Slot) -> None:
        """Start the model's bounded trial of ``slot`` (three trial boots)."""
        self._write(f"activate {slot.value}", lambda env: self.model.activate(env, slot))

    def mark_good(self, slot: Slot) -> None:
        """Commit ``slot`` (boot_success=1)."""
        self._write(f"mark_good {slot.value}", lambda env: self.model.mark_good(env, slot))

    def force_rollback(self, to: Slot) -> None:
        """Commit ``to`` now, cancelling any trial."""
        self._write(f"force_rollback {to.value}", lambda env: self.model.force_rollback(env, to))

    def booted_slot(self) -> Slot | None:
        """``kubesolo.slot=`` of the kernel command line."""
        return self.facts.booted_slot()

    def boot_id(self) -> str | None:
        """This boot's id."""
        return self.facts.boot_id()

    def request_reboot(self) -> None:
        """A plain reboot: GRUB reads the env itself, no argument needed."""
        if self.reboot is not None:
            self.reboot()
        else:
            system_reboot()
