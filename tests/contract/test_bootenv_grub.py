"""The BootEnv contract against GrubBootEnv on a real grubenv file (both backends).

The world's "firmware" is GRUB as deploy/grub.cfg drives it: load_env, the
model's boot step, save_env of the three variables, written with the real
grub-editenv binary when it is there (the same bytes GRUB's save_env leaves).
Then GRUB-specific checks: foreign variables, duplicates, corrupt files.
"""

from __future__ import annotations

import itertools
import subprocess
import uuid
from pathlib import Path

import attrs
import pytest

from kubesolo_adapters import grubenv, grubenvfile
from kubesolo_adapters.bootfacts import BootFacts
from kubesolo_adapters.grub import MANAGED, GrubBootEnv
from kubesolo_adapters.sandbox import GrubFirmware, KernelFacts
from kubesolo_core.bootmodel import GrubModel
from kubesolo_core.errors import BootEnvError, ConfigError, CorruptInput
from kubesolo_core.slots import Slot
from tests.contract.bootenv_suite import BootEnvContract, WorldFactory
from tests.tools import require_tool

_worlds = itertools.count()


def _editenv(path: Path, *args: str) -> str:
    proc = subprocess.run(
        ["grub-editenv", str(path), *args], capture_output=True, check=True, timeout=30
    )
    return proc.stdout.decode("utf-8", "surrogateescape")


@attrs.define
class GrubWorld:
    """A grubenv file, a /proc/cmdline and a boot_id file in a temp folder."""

    root: Path
    backend: str
    kind: str = "grub"
    model: GrubModel = attrs.field(factory=GrubModel)
    reboots: list[str] = attrs.field(factory=list)
    env: GrubBootEnv = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.root.mkdir(parents=True)
        self.set_booted(Slot.A)
        self.set_boot_id(str(uuid.uuid4()))
        self.env = self.reopen()
        # A fresh box: the image ships a grubenv committed on A.
        grubenvfile.PythonBackend(self.grubenv).set(self.model.initial(Slot.A))

    @property
    def grubenv(self) -> Path:
        return self.root / "grubenv"

    def facts(self) -> BootFacts:
        return BootFacts(self.root / "cmdline", self.root / "boot_id")

    @property
    def kernel(self) -> KernelFacts:
        return KernelFacts(
            self.root / "cmdline",
            self.root / "boot_id",
            before="BOOT_IMAGE=/vmlinuz console=ttyS0",
            after="quiet",
        )

    def set_booted(self, slot: Slot | None) -> None:
        self.kernel.set_booted(slot)

    def set_boot_id(self, boot_id: str | None) -> None:
        self.kernel.set_boot_id(boot_id)

    def forget_env(self) -> None:
        self.grubenv.unlink()

    def reopen(self) -> GrubBootEnv:
        return GrubBootEnv(
            self.grubenv,
            facts=self.facts(),
            backend=self.backend,
            reboot=lambda: self.reboots.append(""),
        )

    def reboot(self, *, clean: bool = True) -> Slot:
        if clean:
            self.env.request_reboot()
        # save_env with the real grub-editenv: the bytes GRUB itself leaves.
        outcome = GrubFirmware(self.grubenv, self.model, editenv=True).power_on(
            clean_shutdown=clean
        )
        self.kernel.boot(outcome.slot)
        self.reboots.clear()
        return outcome.slot

    def reboot_requested(self) -> bool:
        return bool(self.reboots)

    def snapshot(self) -> object:
        return {p.name: p.read_bytes() for p in sorted(self.root.iterdir())}


class TestGrubBootEnvPython(BootEnvContract):
    @pytest.fixture
    def make_world(self, tmp_path: Path) -> WorldFactory:
        return lambda: GrubWorld(tmp_path / f"w{next(_worlds)}", "python")


class TestGrubBootEnvEditenv(BootEnvContract):
    @pytest.fixture
    def make_world(self, tmp_path: Path) -> WorldFactory:
        require_tool("grub-editenv")
        return lambda: GrubWorld(tmp_path / f"w{next(_worlds)}", "grub-editenv")


# --------------------------------------------------------------------------- GRUB only


@pytest.fixture(params=["python", "grub-editenv"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "grub-editenv":
        require_tool("grub-editenv")
    return str(request.param)


def _adapter(path: Path, backend: str) -> GrubBootEnv:
    facts = BootFacts(path.parent / "no-cmdline", path.parent / "no-boot-id")
    return GrubBootEnv(path, facts=facts, backend=backend, reboot=lambda: None)


def test_model_writes_leave_foreign_variables_alone(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "grubenv"
    foreign = {
        "saved_entry": "gnulinux-advanced-1234>gnulinux-6.1.0",
        "kernelopts": "root=LABEL=KSOLOA ro quiet splash=a b",
        "note": "héllo€ # not a comment \\ back\nslash",
        "empty": "",
    }
    grubenvfile.PythonBackend(path).set({"first": "1", **foreign})
    env = _adapter(path, backend)
    env.activate(Slot.B)
    env.mark_good(Slot.B)
    env.force_rollback(Slot.A)
    pairs = grubenv.parse(path.read_bytes())
    assert pairs[: 1 + len(foreign)] == [("first", "1"), *foreign.items()]
    assert [name for name, _ in pairs[1 + len(foreign) :]] == list(MANAGED)
    assert len(path.read_bytes()) == 1024


def test_writes_only_the_three_variables_in_place(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "grubenv"
    grubenvfile.PythonBackend(path).set({"boot_success": "1", "x": "y", "active_slot": "A"})
    _adapter(path, backend).activate(Slot.B)
    assert grubenv.parse(path.read_bytes()) == [
        ("boot_success", "0"),
        ("x", "y"),
        ("active_slot", "B"),
        ("boot_counter", "3"),
    ]


def test_a_missing_grubenv_is_created_at_1024_bytes(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "grubenv"
    env = _adapter(path, backend)
    assert env.read().committed_slot is Slot.A
    assert not path.exists(), "reading must not create the file"
    env.activate(Slot.B)
    data = path.read_bytes()
    assert len(data) == 1024
    assert data.startswith(grubenv.SIGNATURE + grubenv.WARNING)
    assert grubenv.last_wins(grubenv.parse(data)) == {
        "active_slot": "B",
        "boot_counter": "3",
        "boot_success": "0",
    }


def test_a_duplicated_variable_is_settled_the_way_grub_reads_it(
    tmp_path: Path, backend: str
) -> None:
    # GRUB's load_env lets the last copy win; a plain `set` edits the first.
    path = tmp_path / "grubenv"
    body = b"active_slot=A\nboot_success=1\nactive_slot=A\n"
    path.write_bytes(grubenv.SIGNATURE + body + b"#" * (1024 - 25 - len(body)))
    env = _adapter(path, backend)
    env.activate(Slot.B)
    pairs = grubenv.parse(path.read_bytes())
    assert [v for n, v in pairs if n == "active_slot"] == ["B"]
    assert env.read().trial_slot is Slot.B


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"# GRUB Environment Block\n",
        b"# GRUB Environment Block\r\nactive_slot=A\r\n" + b"#" * 980,
        b"\x00" * 1024,
        b"menuentry 'x' {\n  linux /vmlinuz\n}\n",
        b"# GRUB Environment Block\nactive_slot=A" + b"\x00" * 980,
    ],
    ids=["empty", "signature-only", "crlf", "zeros", "grub.cfg", "nul-padding"],
)
def test_a_corrupt_grubenv_is_refused_and_untouched(
    tmp_path: Path, backend: str, content: bytes
) -> None:
    path = tmp_path / "grubenv"
    path.write_bytes(content)
    env = _adapter(path, backend)
    with pytest.raises(CorruptInput, match="grubenv"):
        env.read()
    for op in (env.activate, env.mark_good, env.force_rollback):
        with pytest.raises(BootEnvError, match=str(path)):
            op(Slot.B)
    assert path.read_bytes() == content


def test_a_full_block_refuses_activate_untouched(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "grubenv"
    grubenvfile.PythonBackend(path).set({"filler": "x" * (930 - len("filler=\n"))})
    before = path.read_bytes()
    assert grubenv.free_bytes(before) == 0
    with pytest.raises(grubenv.EnvBlockFull, match="too small"):
        _adapter(path, backend).activate(Slot.B)
    assert path.read_bytes() == before


def test_garbage_values_read_as_the_model_says(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "grubenv"
    grubenvfile.PythonBackend(path).set(
        {"active_slot": "C", "boot_success": "yes", "boot_counter": "-1"}
    )
    view = _adapter(path, backend).read()
    assert (view.committed_slot, view.trial_slot) == (Slot.A, None)


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grub-editenv"):
        GrubBootEnv(tmp_path / "grubenv", facts=BootFacts(), backend="lilo")


def test_real_grub_editenv_reads_what_the_adapter_wrote(tmp_path: Path) -> None:
    require_tool("grub-editenv")
    path = tmp_path / "grubenv"
    env = _adapter(path, "python")
    env.activate(Slot.B)
    assert _editenv(path, "list") == "active_slot=B\nboot_counter=3\nboot_success=0\n"


def test_request_reboot_calls_the_hook_without_argument(tmp_path: Path) -> None:
    calls: list[str] = []
    env = GrubBootEnv(
        tmp_path / "grubenv", facts=BootFacts(), reboot=lambda: calls.append("reboot")
    )
    env.activate(Slot.B)
    env.request_reboot()
    assert calls == ["reboot"]
