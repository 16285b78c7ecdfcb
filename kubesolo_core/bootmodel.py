"""The two bootloaders as pure state machines (DESIGN.md 2.1).

A bootloader model answers two questions with no I/O:

* ``boot(env) -> BootOutcome``: what the firmware/bootloader boots from this
  env and what the env looks like afterwards;
* ``activate``/``mark_good``/``force_rollback``: what the agent writes.

The GRUB model works on the raw variable mapping of the env block, so missing
and garbage values are representable and proven harmless ("never brick"). The
real GRUB adapter uses these same functions to compute the variables it
writes, and the differential test under QEMU holds deploy/grub.cfg to them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

import attrs

from kubesolo_core.slots import Slot

#: number of trial boots after an activation (rollback on the next one)
TRIAL_BOOTS = 3

E = TypeVar("E")

ACTIVE = "active_slot"
COUNTER = "boot_counter"
SUCCESS = "boot_success"


class Bootloader(enum.StrEnum):
    """The two bootloaders the agent drives (the value is the config word)."""

    GRUB = "grub"
    TRYBOOT = "tryboot"

    @property
    def plain_reboot_starts_trial(self) -> bool:
        """Whether an ordinary reboot boots the activated slot.

        GRUB reads its env at every boot; the Pi firmware runs a tryboot trial
        only for a reboot that carries the one-shot flag (``reboot "0
        tryboot"``): a plain reboot, a crash or a power cut boots the
        committed partition.
        """
        return self is Bootloader.GRUB


@attrs.frozen(kw_only=True)
class BootView:
    """What the agent needs to know about a bootloader env, whatever its kind.

    ``committed_slot`` is the slot the box falls back to whatever happens next
    (the stable choice); ``trial_slot`` is the slot a pending trial boots, or
    None when no trial is pending.
    """

    kind: Bootloader
    committed_slot: Slot
    trial_slot: Slot | None
    boot_counter: int | None = None
    boot_success: bool | None = None
    #: tryboot only: True when the running boot was a tryboot
    booted_in_trial: bool | None = None
    raw: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def in_trial(self) -> bool:
        """True while the bootloader has a trial pending or running."""
        return self.trial_slot is not None

    @property
    def next_boot(self) -> Slot:
        """The slot the very next boot will pick."""
        return self.trial_slot if self.trial_slot is not None else self.committed_slot

    def reboot_required(self, booted: Slot | None) -> bool:
        """True when the running slot (``booted``) is not the one the next boot picks."""
        return booted is not None and booted is not self.next_boot


@attrs.frozen(kw_only=True)
class BootOutcome(Generic[E]):
    """The result of one boot: the slot booted, the env after it, whether it wrote."""

    slot: Slot
    env: E
    wrote: bool
    trial: bool
    rolled_back: bool = False


class BootModel(Protocol[E]):
    """A bootloader as a pure state machine over an env of type ``E``."""

    @property
    def kind(self) -> Bootloader:
        """Which bootloader this models."""

    def initial(self, committed: Slot) -> E:
        """A fresh env committed on ``committed``."""

    def boot(self, env: E, *, clean_shutdown: bool = True) -> BootOutcome[E]:
        """One power-on: which slot boots and what the env becomes.

        ``clean_shutdown=False`` is a power cut, a kernel crash or a watchdog
        reset: whatever the firmware keeps only across a clean reboot (the
        tryboot one-shot flag) is lost before this boot.
        """

    def activate(self, env: E, slot: Slot) -> E:
        """Start a trial of ``slot``."""

    def mark_good(self, env: E, booted: Slot) -> E:
        """Commit the running trial of ``booted``."""

    def force_rollback(self, env: E, to: Slot) -> E:
        """Commit ``to`` now, cancelling any trial."""

    def view(self, env: E) -> BootView:
        """The kind-neutral view the services reason about."""


# --------------------------------------------------------------------------- GRUB

GrubEnv = Mapping[str, str]


def _grub_active(env: GrubEnv) -> Slot:
    # Anything other than exactly "B" reads as A, as deploy/grub.cfg does.
    return Slot.B if env.get(ACTIVE) == "B" else Slot.A


def _grub_trial(env: GrubEnv) -> bool:
    # Only an exact "0" means "in trial"; garbage reads as committed.
    return env.get(SUCCESS) == "0"


def _grub_counter(env: GrubEnv) -> int:
    value = env.get(COUNTER)
    return int(value) if value in ("1", "2", "3") else 0


@attrs.frozen
class GrubModel:
    """GRUB with the env variables active_slot, boot_counter, boot_success."""

    kind: Bootloader = Bootloader.GRUB

    def initial(self, committed: Slot) -> dict[str, str]:
        return {ACTIVE: committed.value, COUNTER: str(TRIAL_BOOTS), SUCCESS: "1"}

    def boot(self, env: GrubEnv, *, clean_shutdown: bool = True) -> BootOutcome[dict[str, str]]:
        # GRUB keeps nothing outside its env block: a crash changes nothing.
        active = _grub_active(env)
        new = dict(env)
        if not _grub_trial(env):
            # Stable boots never touch the env.
            return BootOutcome(slot=active, env=new, wrote=False, trial=False)
        counter = _grub_counter(env)
        if counter > 0:
            new.update({ACTIVE: active.value, COUNTER: str(counter - 1), SUCCESS: "0"})
            return BootOutcome(slot=active, env=new, wrote=True, trial=True)
        fallback = active.other()
        new.update({ACTIVE: fallback.value, COUNTER: str(TRIAL_BOOTS), SUCCESS: "1"})
        return BootOutcome(slot=fallback, env=new, wrote=True, trial=False, rolled_back=True)

    def activate(self, env: GrubEnv, slot: Slot) -> dict[str, str]:
        return {**env, ACTIVE: slot.value, COUNTER: str(TRIAL_BOOTS), SUCCESS: "0"}

    def mark_good(self, env: GrubEnv, booted: Slot) -> dict[str, str]:
        return {**env, ACTIVE: booted.value, SUCCESS: "1"}

    def force_rollback(self, env: GrubEnv, to: Slot) -> dict[str, str]:
        return {**env, ACTIVE: to.value, COUNTER: str(TRIAL_BOOTS), SUCCESS: "1"}

    def view(self, env: GrubEnv) -> BootView:
        active = _grub_active(env)
        trial = _grub_trial(env)
        return BootView(
            kind=self.kind,
            committed_slot=active.other() if trial else active,
            trial_slot=active if trial else None,
            boot_counter=_grub_counter(env) if trial else None,
            boot_success=not trial,
            raw=dict(env),
        )


# --------------------------------------------------------------------------- tryboot


@attrs.frozen(kw_only=True)
class TrybootEnv:
    """autoboot.txt's two partitions plus the firmware's one-shot tryboot flag.

    ``committed``/``trial`` are MBR partition numbers as autoboot.txt holds
    them; ``flag`` is the one-shot reboot flag (held by the firmware, set by
    ``reboot "0 tryboot"``, cleared before the trial boot starts).
    """

    committed: int
    trial: int
    flag: bool = False
    tryboot_a_b: bool = True


@attrs.frozen(kw_only=True)
class TrybootModel:
    """Raspberry Pi firmware with ``tryboot_a_b=1``: one trial boot, then back."""

    kind: Bootloader = Bootloader.TRYBOOT
    partitions: Mapping[Slot, int] = attrs.field(factory=lambda: {Slot.A: 2, Slot.B: 3})

    def slot_of(self, partition: int) -> Slot | None:
        """The slot living on ``partition``, or None."""
        for slot, number in self.partitions.items():
            if number == partition:
                return slot
        return None

    def _slot_or_a(self, partition: int) -> Slot:
        # An autoboot.txt naming a partition we do not know reads as slot A
        # (never brick: A is where a fresh box starts).
        return self.slot_of(partition) or Slot.A

    def initial(self, committed: Slot) -> TrybootEnv:
        return TrybootEnv(
            committed=self.partitions[committed], trial=self.partitions[committed.other()]
        )

    def boot(self, env: TrybootEnv, *, clean_shutdown: bool = True) -> BootOutcome[TrybootEnv]:
        # The flag rides only on a clean ``reboot "0 tryboot"``, and the
        # firmware clears it before it boots: whatever happens in the trial,
        # the next power-on is back on the committed partition.
        if not clean_shutdown:
            env = attrs.evolve(env, flag=False)
        if env.flag and env.tryboot_a_b:
            slot = self._slot_or_a(env.trial)
            return BootOutcome(slot=slot, env=attrs.evolve(env, flag=False), wrote=True, trial=True)
        return BootOutcome(
            slot=self._slot_or_a(env.committed),
            env=attrs.evolve(env, flag=False),
            wrote=env.flag,
            trial=False,
        )

    def activate(self, env: TrybootEnv, slot: Slot) -> TrybootEnv:
        return attrs.evolve(env, trial=self.partitions[slot], flag=True, tryboot_a_b=True)

    def mark_good(self, env: TrybootEnv, booted: Slot) -> TrybootEnv:
        # Commit = swap: the booted trial becomes [all], the old one [tryboot].
        return attrs.evolve(
            env,
            committed=self.partitions[booted],
            trial=self.partitions[booted.other()],
            flag=False,
        )

    def force_rollback(self, env: TrybootEnv, to: Slot) -> TrybootEnv:
        return attrs.evolve(
            env, committed=self.partitions[to], trial=self.partitions[to.other()], flag=False
        )

    def view(self, env: TrybootEnv) -> BootView:
        trial = self._slot_or_a(env.trial) if env.flag and env.tryboot_a_b else None
        return BootView(
            kind=self.kind,
            committed_slot=self._slot_or_a(env.committed),
            trial_slot=trial,
            raw={
                "boot_partition": str(env.committed),
                "tryboot_partition": str(env.trial),
                "tryboot_flag": "1" if env.flag else "0",
            },
        )
