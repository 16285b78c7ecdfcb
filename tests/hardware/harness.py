"""Shared pieces of the hardware tier: boot counting, the GRUB rig, the differential check.

The rig is one disk image (deploy/grub.cfg, GRUB for BIOS and EFI, empty
slots, the test-only ``ksolo-test.env`` that makes GRUB halt after printing
its decision) plus the operations a sequence needs: put an env in place, boot
once under QEMU, read the env back, and write the env the way the agent does
(kubesolo_adapters.grub.GrubBootEnv on a host copy of the ESP's grubenv).

:func:`check_sequence` is the differential property itself; it takes the
model and the rig as arguments so that a planted bug (a changed model or a
changed grub.cfg) can be run through the very same check by hand.
"""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from hypothesis import note as _hypothesis_note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from kubesolo_adapters.bootfacts import BootFacts
from kubesolo_adapters.grub import GrubBootEnv
from kubesolo_core.bootmodel import GrubModel
from kubesolo_core.slots import Slot
from tests.hardware.diskimage import (
    DiskLayout,
    build_disk_image,
    encode_grubenv,
    read_esp_file,
    read_grubenv,
    write_esp_file,
    write_grubenv,
)
from tests.hardware.qemu import BootResult, QemuRunner

REPO = Path(__file__).resolve().parents[2]
GRUB_CFG = REPO / "deploy" / "grub.cfg"
#: the switch file of deploy/grub.cfg: halt instead of rebooting when a slot has no kernel
TEST_ENV_FILES = {"EFI/BOOT/ksolo-test.env": encode_grubenv({"ksolo_test_halt": "1"})}
BOOT_TIMEOUT = {"bios": 30.0, "efi": 90.0}


# --------------------------------------------------------------------------- counting


def note(text: str) -> None:
    """Hypothesis' note inside a test; nothing when check_sequence runs by hand."""
    if currently_in_test_context():
        _hypothesis_note(text)


@attrs.define
class Stats:
    """What the tier did, printed in the terminal summary (tests/hardware/conftest.py)."""

    boots: collections.Counter[str] = attrs.field(factory=collections.Counter)
    boot_seconds: float = 0.0
    sequences: collections.Counter[str] = attrs.field(factory=collections.Counter)
    compared_boots: int = 0
    agent_writes: int = 0

    def lines(self) -> list[str]:
        total = sum(self.boots.values())
        per_fw = ", ".join(f"{fw}: {n}" for fw, n in sorted(self.boots.items())) or "none"
        seqs = sum(self.sequences.values())
        per_seq = ", ".join(f"{fw}: {n}" for fw, n in sorted(self.sequences.items())) or "none"
        return [
            f"real QEMU boots: {total} ({per_fw}), {self.boot_seconds:.0f} s in QEMU",
            (
                f"generated sequences compared with GrubModel: {seqs} ({per_seq}); "
                f"{self.compared_boots} boots compared, {self.agent_writes} agent env writes"
            ),
        ]


STATS = Stats()


def counted_boot(runner: QemuRunner, **kwargs: Any) -> BootResult:
    """One real boot, counted in STATS."""
    result = runner.boot(**kwargs)
    STATS.boots[runner.firmware] += 1
    STATS.boot_seconds += result.seconds
    return result


def tail(result: BootResult, lines: int = 25) -> str:
    """The end of a boot's serial log, for failure messages."""
    return "\n".join(result.serial.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- the rig


@attrs.define
class GrubRig:
    """A disk image whose GRUB halts after choosing a slot, and its QEMU runners."""

    layout: DiskLayout
    workdir: Path

    @classmethod
    def build(cls, workdir: Path, grub_cfg: Path = GRUB_CFG) -> GrubRig:
        """Build the image (about a second): both firmwares, empty slots, no grubenv yet."""
        layout = build_disk_image(
            workdir / "disk.img",
            slot_a=None,
            slot_b=None,
            grub_cfg=grub_cfg,
            initial_env=None,
            esp_files=TEST_ENV_FILES,
        )
        return cls(layout=layout, workdir=workdir)

    def runner(self, firmware: str) -> QemuRunner:
        return QemuRunner(image=self.layout.path, firmware=firmware, timeout=BOOT_TIMEOUT[firmware])

    def set_env(self, env: Mapping[str, str] | None) -> None:
        """A fresh grubenv holding ``env``; None deletes the file."""
        write_grubenv(self.layout.path, self.layout.esp.offset, env)

    def raw_env(self) -> bytes | None:
        return read_esp_file(self.layout.path, self.layout.esp.offset, self.layout.grubenv_path)

    def read_env(self) -> dict[str, str] | None:
        return read_grubenv(self.layout.path, self.layout.esp.offset)

    def boot(self, firmware: str) -> BootResult:
        """Power on once; fail loudly unless GRUB printed a decision and halted."""
        result = counted_boot(self.runner(firmware))
        if result.timed_out or not result.halted or result.slot is None:
            raise AssertionError(
                f"{firmware} boot did not reach GRUB's halt (rc={result.returncode}, "
                f"timed out={result.timed_out}):\n{tail(result)}"
            )
        return result

    def agent(self, op: str, slot: Slot) -> None:
        """The agent's env write, done by the real GrubBootEnv on a host copy of the grubenv."""
        with tempfile.TemporaryDirectory(prefix="ksolo-agent-") as tmp:
            host = Path(tmp) / "grubenv"
            raw = self.raw_env()
            if raw is not None:
                host.write_bytes(raw)
            env = GrubBootEnv(host, facts=BootFacts(cmdline=Path(tmp) / "cmdline"))
            if op == "activate":
                env.activate(slot)
            elif op == "mark_good":
                env.mark_good(slot)
            elif op == "rollback":
                env.force_rollback(slot)
            else:  # pragma: no cover - a typo in a test
                raise ValueError(op)
            write_esp_file(
                self.layout.path,
                self.layout.esp.offset,
                self.layout.grubenv_path,
                host.read_bytes(),
            )
        STATS.agent_writes += 1


# --------------------------------------------------------------------------- strategies

#: the values deploy/grub.cfg acts on
CANONICAL = {
    "active_slot": ["A", "B"],
    "boot_counter": ["0", "1", "2", "3"],
    "boot_success": ["0", "1"],  # "0" first: a trial is the interesting case
}
#: near misses: blanks, case, leading zeros, things `[` could take for an operator
NEAR_MISSES = {
    "active_slot": ["a", "b", " B", "B ", "AB", "C", "", "0", "1", "-n", "!"],
    "boot_counter": ["4", "9", "-1", "03", " 3", "3 ", "", "x", "(", "=", "-z"],
    "boot_success": ["00", " 0", "0 ", "", "2", "no", "-z", "!", ")", "0\n", "=", "-n"],
}
garbage = st.text(alphabet=st.sampled_from([*"AB0123 abx-!=()#\\\"'$;{}", "é", "\n"]), max_size=5)
OTHER_NAMES = ["note", "prefix", "root", "default", "timeout", "BOOT_COUNTER", "active_slotx"]


@st.composite
def initial_envs(draw: st.DrawFn) -> dict[str, str] | None:
    """None (no grubenv at all) or a block with missing, valid and garbage values.

    Half the variables get a canonical value, so that trials, count-downs and
    rollbacks are common; one in ten is missing, one in ten garbage, three in
    ten a near miss.
    """
    # Hypothesis starts from (and shrinks towards) the smallest draws: 0 is
    # the canonical case, and the simplest env is a trial about to roll back.
    if draw(st.integers(0, 11)) == 11:
        return None
    env: dict[str, str] = {}
    for name, canonical in CANONICAL.items():
        choice = draw(st.integers(0, 9))
        if choice <= 4:
            env[name] = draw(st.sampled_from(canonical))
        elif choice == 5:
            continue  # missing variable
        elif choice == 6:
            env[name] = draw(garbage)
        else:
            env[name] = draw(st.sampled_from(NEAR_MISSES[name]))
    others = draw(st.dictionaries(st.sampled_from(OTHER_NAMES), garbage, max_size=2))
    # The managed names first, then the others: order is not part of the semantics.
    return {**env, **{k: v for k, v in others.items() if k not in env}}


#: one agent write: (operation, slot or None = the slot that booted last)
agent_ops = st.one_of(
    st.tuples(st.just("activate"), st.sampled_from(Slot)),
    st.tuples(st.just("mark_good"), st.none()),
    st.tuples(st.just("rollback"), st.sampled_from(Slot)),
)


def rounds(min_rounds: int, max_rounds: int) -> st.SearchStrategy[list[list[tuple[str, Any]]]]:
    """Sequences of rounds; a round is 0-2 agent writes followed by one real boot.

    The first round has no writes: the agent runs only after a boot, so the
    first power-on meets the generated env (garbage and all) as it is.
    """
    later = st.lists(
        st.lists(agent_ops, max_size=2), min_size=min_rounds - 1, max_size=max_rounds - 1
    )
    return later.map(lambda rest: [[], *rest])


# --------------------------------------------------------------------------- the property


def check_sequence(
    rig: GrubRig,
    model: Any,
    firmware: str,
    initial: Mapping[str, str] | None,
    plan: Sequence[Sequence[tuple[str, Slot | None]]],
) -> None:
    """Run ``plan`` on real GRUB and on ``model``; they must agree after every boot.

    After each boot: the slot GRUB chose equals the model's; whether GRUB
    wrote equals the model's ``wrote``; the env read back from the ESP equals
    the model's env exactly (the three variables and every other variable);
    a boot the model says does not write leaves the grubenv's bytes untouched;
    a missing grubenv stays missing (GRUB cannot create one).
    """
    rig.set_env(initial)
    env: dict[str, str] = dict(initial or {})
    exists = initial is not None
    booted: Slot | None = None
    note(f"firmware={firmware} initial={initial!r}")
    started = time.monotonic()
    for number, writes in enumerate(plan, start=1):
        for op, slot in writes:
            target = slot or booted or model.view(env).committed_slot
            expected = {
                "activate": model.activate,
                "mark_good": model.mark_good,
                "rollback": model.force_rollback,
            }[op](env, target)
            rig.agent(op, target)
            exists = True
            seen = rig.read_env()
            assert seen == expected, (
                f"agent {op} {target.value}: env {seen!r} != model {expected!r}"
            )
            env = dict(expected)
            note(f"round {number}: agent {op} {target.value} -> {env!r}")
        before = rig.raw_env()
        result = rig.boot(firmware)
        outcome = model.boot(env)
        marker = result.markers[-1]
        note(f"round {number}: boot -> GRUB {marker!r}; model {outcome!r}")
        context = f"round {number} ({firmware}), env before the boot {env!r}\n{tail(result, 8)}"
        assert result.slot == outcome.slot, (
            f"GRUB booted {result.slot}, model {outcome.slot}; {context}"
        )
        assert marker.saved == outcome.wrote, (
            f"GRUB saved={marker.saved}, model wrote={outcome.wrote}; {context}"
        )
        after = rig.read_env()
        if exists:
            assert after == outcome.env, (
                f"env after boot {after!r} != model {outcome.env!r}; {context}"
            )
        else:
            assert after is None, f"GRUB created a grubenv {after!r}; {context}"
            assert outcome.env == {}, f"model invented an env {outcome.env!r}; {context}"
        if not outcome.wrote:
            assert rig.raw_env() == before, f"a stable boot changed the grubenv bytes; {context}"
        env = dict(outcome.env)
        booted = outcome.slot
        STATS.compared_boots += 1
    STATS.sequences[firmware] += 1
    note(f"sequence took {time.monotonic() - started:.1f} s")


MODEL = GrubModel()
