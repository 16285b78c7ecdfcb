"""The hostile-input catalogue, part 2: state.json, grubenv and autoboot.txt.

Exit codes follow the port each file belongs to: a state file or boot
environment that cannot be read as one (a FIFO, a directory, a device) is an
operation failure (1), like any unreadable file of that port; a file that
is read but is not valid content is corrupt input (5). Every refusal names
the path and what was found there, and a FIFO never hangs the agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubesolo_core.codec import dumps_state
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot
from tests.hostile import Case, HostileBox, case, fifo, run_case

FAILED, USAGE, CORRUPT = 1, 2, 5


# --------------------------------------------------------------------------- state.json

STATE = "state.json"
_GOOD = json.loads(
    dumps_state(
        UpdateState(phase=Phase.FAILED, to_version="1.1.0", attempt_count=1, last_error="x")
    )
)


def _state(data: bytes | str | dict[str, object], *, at: str | None = None):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        if at is not None:
            box.flags["state"] = str(box.root / at)
        raw = json.dumps(data) if isinstance(data, dict) else data
        box.write_state(raw)
        return []

    return prepare


def _state_kept(data: bytes | str | dict[str, object], *, at: str):  # type: ignore[no-untyped-def]
    """A foreign file at the state path: it must stay exactly where and what it is."""

    def prepare(box: HostileBox) -> list[Path]:
        _state(data, at=at)(box)
        return [box.state]

    return prepare


def _state_fifo(box: HostileBox) -> list[Path]:
    return [fifo(box.state)]


def _state_dir(box: HostileBox) -> list[Path]:
    box.state.mkdir(parents=True)
    return [box.state]


def _state_link_to_foreign(box: HostileBox) -> list[Path]:
    hosts = box.root / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    box.state.parent.mkdir(parents=True)
    box.state.symlink_to(hosts)
    return [box.state, hosts]


def _set_aside(box: HostileBox) -> None:
    assert not box.state.exists(), "a damaged state file of ours is set aside"
    assert list(box.state.parent.glob("state.json.corrupt-*")), "and kept"


STATE_CASES: list[Case] = [
    case(STATE, "fifo", "status", FAILED, ("{state}", "FIFO"), prepare=_state_fifo,
         state_checked=False, timeout=20),
    case(STATE, "directory", "status", FAILED, ("{state}", "directory"), prepare=_state_dir,
         state_checked=False),
    case(STATE, "torn-write-of-ours", "status", CORRUPT, ("{state}", "kept as"),
         prepare=_state(dumps_state(UpdateState(phase=Phase.STAGED))[:40])),
    case(STATE, "future-schema", "status", CORRUPT, ("{state}", "newer than"),
         prepare=_state({**_GOOD, "schema_version": 99})),
    case(STATE, "unknown-phase", "apply", CORRUPT, ("{state}", "phase"),
         prepare=_state({**_GOOD, "phase": "exploding"})),
    case(STATE, "target-slot-c", "status", CORRUPT, ("{state}", "target_slot"),
         prepare=_state({**_GOOD, "target_slot": "C"})),
    case(STATE, "attempt-count-5000-digits", "status", CORRUPT, ("{state}",),
         prepare=_state(json.dumps(_GOOD)[:-1] + ', "health_check_failures": ' + "9" * 5000 + "}")),
    case(STATE, "negative-attempt-count", "status", CORRUPT, ("{state}", "attempt_count"),
         prepare=_state({**_GOOD, "attempt_count": -1})),
    case(STATE, "version-with-escape-sequence", "status", CORRUPT, ("{state}", "to_version"),
         prepare=_state({**_GOOD, "to_version": "\x1b[2J\x1b[Hall good"})),
    case(STATE, "version-5000-digits", "status", CORRUPT, ("{state}", "to_version"),
         prepare=_state({**_GOOD, "to_version": "1" * 5000})),
    case(STATE, "empty-file", "status", CORRUPT, ("{state}", "empty"), prepare=_state(b"")),
    case(STATE, "kubelet-config-json", "status", CORRUPT, ("{state}", "left in place"),
         prepare=_state_kept({"kind": "KubeletConfiguration",
                              "apiVersion": "kubelet.config.k8s.io/v1beta1"},
                             at="kubelet/config.json"), state_checked=False),
    case(STATE, "json-array", "apply", CORRUPT, ("{state}", "left in place"),
         prepare=_state_kept("[1, 2, 3]\n", at="other/list.json"), state_checked=False),
    case(STATE, "binary-garbage", "status", CORRUPT, ("{state}", "left in place"),
         prepare=_state_kept(b"\x7fELF\x02\x01\x01\x00", at="var/state.json"),
         state_checked=False),
    case(STATE, "nested-100k-deep", "status", CORRUPT, ("{state}", "left in place"),
         prepare=_state_kept("[" * 100_000, at="var/state.json"), state_checked=False),
    case(STATE, "symlink-to-a-foreign-file", "status", CORRUPT, ("{state}", "left in place"),
         prepare=_state_link_to_foreign, state_checked=False),
    *(case(STATE, f"kubelet-config-json-{command}", command, CORRUPT, ("{state}", "left in place"),
           prepare=_state_kept({"kind": "KubeletConfiguration"}, at="kubelet/config.json"),
           state_checked=False)
      for command in ("check", "apply", "activate", "rollback", "healthcheck")),
]  # fmt: skip

#: a foreign file at the state path: nothing may appear next to it (no lock, no record)
_FOREIGN = {
    "kubelet-config-json", "json-array", "binary-garbage", "nested-100k-deep",
    *(f"kubelet-config-json-{c}"
      for c in ("check", "apply", "activate", "rollback", "healthcheck")),
}  # fmt: skip

_SET_ASIDE = {
    "torn-write-of-ours",
    "future-schema",
    "unknown-phase",
    "target-slot-c",
    "attempt-count-5000-digits",
    "negative-attempt-count",
    "version-with-escape-sequence",
    "version-5000-digits",
    "empty-file",
}


@pytest.mark.parametrize("spec", STATE_CASES, ids=lambda c: c.id)
def test_state_json(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)
    if spec.name in _SET_ASIDE:
        _set_aside(hostile)
    if spec.name in _FOREIGN:
        left = sorted(p.name for p in hostile.state.parent.iterdir())
        assert left == [hostile.state.name], f"written next to a foreign file: {left}"


# --------------------------------------------------------------------------- grubenv

GRUBENV = "grubenv"


def _grubenv(data: bytes):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        box.grubenv.write_bytes(data)
        return [box.grubenv]

    return prepare


def _grubenv_special(kind: str):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        box.grubenv.unlink()
        if kind == "fifo":
            fifo(box.grubenv)
        elif kind == "directory":
            box.grubenv.mkdir()
        elif kind == "dev-zero":
            box.grubenv.symlink_to("/dev/zero")
        return [box.grubenv]

    return prepare


def _block(body: bytes, size: int = 1024) -> bytes:
    head = b"# GRUB Environment Block\n" + body
    return head + b"#" * (size - len(head))


GRUBENV_CASES: list[Case] = [
    case(GRUBENV, "fifo", "status", FAILED, ("{root}/grubenv", "FIFO"),
         prepare=_grubenv_special("fifo"), timeout=20),
    case(GRUBENV, "directory", "apply", FAILED, ("{root}/grubenv", "directory"),
         prepare=_grubenv_special("directory"), state_intact=True),
    case(GRUBENV, "symlink-to-dev-zero", "activate", FAILED, ("{root}/grubenv", "character device"),
         prepare=_grubenv_special("dev-zero"), timeout=20),
    case(GRUBENV, "no-signature", "apply", CORRUPT, ("{root}/grubenv", "signature"),
         prepare=_grubenv(b"\x00" * 1024), state_intact=True),
    case(GRUBENV, "truncated-block", "apply", CORRUPT, ("{root}/grubenv", "damaged"),
         prepare=_grubenv(_block(b"active_slot=A\nboot_success=1\n")[:45]), state_intact=True),
    case(GRUBENV, "two-mib-block", "status", FAILED, ("{root}/grubenv", "larger than"),
         prepare=_grubenv(_block(b"active_slot=A\n", size=2 << 20))),
    case(GRUBENV, "garbage-values-read-the-grub-way", "status", 0, "slot A",
         prepare=_grubenv(_block(b"active_slot=\x1b[2J\nboot_success=maybe\nboot_counter=-7\n"))),
    case(GRUBENV, "value-with-5000-digits", "status", 0, "slot A",
         prepare=_grubenv(_block(b"boot_success=0\nboot_counter=" + b"9" * 900 + b"\n"))),
]  # fmt: skip


@pytest.mark.parametrize("spec", GRUBENV_CASES, ids=lambda c: c.id)
def test_grubenv(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


# --------------------------------------------------------------------------- autoboot.txt

AUTOBOOT = "autoboot.txt"
_AUTOBOOT = b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


def _tryboot(data: bytes | None, kind: str = "file"):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        path = box.root / "autoboot.txt"
        box.flags["bootloader"] = "tryboot"
        box.flags["autoboot"] = str(path)
        box.env["KUBESOLO_UPDATE_DEVICE_TREE"] = str(box.root / "device-tree")
        if kind == "fifo":
            fifo(path)
        elif kind == "directory":
            path.mkdir()
        elif data is not None:
            path.write_bytes(data)
        return [path]

    return prepare


AUTOBOOT_CASES: list[Case] = [
    case(AUTOBOOT, "sane-file-status", "status", 0, "tryboot",
         prepare=_tryboot(_AUTOBOOT)),
    case(AUTOBOOT, "fifo", "status", FAILED, ("{root}/autoboot.txt", "FIFO"),
         prepare=_tryboot(None, "fifo"), timeout=20),
    case(AUTOBOOT, "directory", "apply", FAILED, ("{root}/autoboot.txt", "directory"),
         prepare=_tryboot(None, "directory"), state_intact=True),
    case(AUTOBOOT, "one-mib-file", "status", FAILED, ("{root}/autoboot.txt", "larger than"),
         prepare=_tryboot(_AUTOBOOT + b"#" * (1 << 20))),
    case(AUTOBOOT, "partition-5000-digits-reads-as-0", "status", 0, "tryboot",
         prepare=_tryboot(b"[all]\ntryboot_a_b=1\nboot_partition=" + b"2" * 5000 + b"\n")),
    case(AUTOBOOT, "binary-garbage-is-no-setting", "status", 0, "tryboot",
         prepare=_tryboot(b"\x00\xff\xfe[all\x00]\nboot_partition\x00=3\n")),
]  # fmt: skip


@pytest.mark.parametrize("spec", AUTOBOOT_CASES, ids=lambda c: c.id)
def test_autoboot_txt(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


def test_cmdline_fifo_is_refused(hostile: HostileBox) -> None:
    """The kernel command line file (flags family's --cmdline) as a FIFO: named, no hang."""
    hostile.sandbox.cmdline.unlink()
    fifo(hostile.sandbox.cmdline)
    spec = case(
        "flags+env", "cmdline-fifo", "status", FAILED, ("{root}/cmdline", "FIFO"), timeout=20
    )
    run_case(hostile, spec)
    assert hostile.slot(Slot.A).exists()
