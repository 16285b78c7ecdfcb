"""Hostile and careless inputs through the real CLI: one sandbox, one checker.

Every case of the catalogue (tests/contract/test_hostile_*.py) builds a
:class:`HostileBox`, spoils one input, runs ``kubesolo-update`` as a real
subprocess (``python -m kubesolo_entrypoints``: a hang is caught by the
timeout, a traceback is seen exactly as an operator would see it) and calls
:func:`check`, which asserts the whole outcome:

* the exit code;
* the culprit (a key, a field, a path) named in the error line on stderr;
* no ``Traceback`` and no "internal error" anywhere in stdout or stderr;
* state.json, if present and not itself the hostile input, loads, and its
  phase never claims work in progress (checking, downloading) after the
  process ended; a staged state is truthful (the target slot holds the
  verified image);
* the booted and the committed slot are byte-identical to before;
* the GRUB env file is byte-identical to before (unless the case says the
  command may change it).

The box: two ext2 image files as slots (A = 1.0.0 booted and committed,
B = 0.9.0), a real GRUB env block file, a kernel command line file, a boot
id file, a release server on 127.0.0.1 (:class:`tests.contract.faultserver.FaultServer`,
so a case can make it misbehave) publishing 1.1.0 as a gzip image, and no
Kubernetes (a kubeconfig path that does not exist: the checks are
"unavailable", the node-label preflight is bypassed).

API (for the slot-path family too)::

    def test_x(hostile: HostileBox) -> None:       # fixture in tests/contract/conftest.py
        hostile.flags["slot_b"] = "./slot-A.img"   # any global option; None = left out
        hostile.env["KUBESOLO_UPDATE_X"] = "..."   # extra environment variables
        check(hostile, ["apply"], code=2, culprit=("slot_b", "slot-A.img"))

    # or a named catalogue case, counted per family in the terminal summary:
    CASES = [case("slot paths", "symlink-to-booted", "apply", 2, ("--slot-b",),
                  prepare=lambda box: ..., state_intact=True)]
    @pytest.mark.parametrize("spec", CASES, ids=lambda c: c.id)
    def test_slot_paths(hostile: HostileBox, spec: Case) -> None:
        run_case(hostile, spec)

``check`` options: ``phase`` (the phase state.json must end in),
``env_intact`` (default True), ``state_intact`` (byte-identical state.json),
``state_checked=False`` (state.json is itself the hostile input),
``intact=(paths...)`` (more files that must not change, or stay FIFOs),
``timeout``. A ``prepare`` callable may return a list of such paths.
Culprit strings may use ``{root}`` and ``{state}``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_adapters.sandbox import Sandbox, build_release, make_fs_image
from kubesolo_core.codec import loads_state
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.release import release_document
from kubesolo_core.slots import Slot
from tests.contract.faultserver import FaultServer
from tests.tools import code_under_test, require_tool

#: slot files are this big; images are half of it
SLOT_BYTES = 2 << 20
IMAGE_BYTES = 1 << 20
#: phases that say "an operation is running right now"
WORKING = frozenset({Phase.CHECKING, Phase.DOWNLOADING})
#: the default per-invocation timeout; a hang (a FIFO read) fails the case
TIMEOUT = 60.0
RELEASE_PATH = "/release.json"


@functools.cache
def _image_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ksu-hostile-images-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def image(version: str) -> bytes:
    """An ext2 slot image carrying ``version`` (made once per test session)."""
    require_tool("mkfs.ext2", "debugfs")
    return make_fs_image(_image_dir(), version, size=IMAGE_BYTES)


@attrs.frozen(kw_only=True)
class Result:
    """One CLI run."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        """The ``kubesolo-update: error:`` lines of stderr."""
        return [line for line in self.stderr.splitlines() if "kubesolo-update: error:" in line]

    def __str__(self) -> str:
        shown = " ".join(a if len(a) <= 200 else a[:200] + "..." for a in self.argv)
        return (
            f"$ kubesolo-update {shown}\nexit {self.code} "
            f"after {self.seconds:.1f}s\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@attrs.frozen(kw_only=True)
class Snapshot:
    """What the checker compares before and after a run."""

    slots: dict[Slot, str]
    grubenv: bytes | None
    state: bytes | None
    booted: Slot
    committed: Slot


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(functools.partial(fh.read, 1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _regular_bytes(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (never opens a FIFO), else None."""
    try:
        if not path.is_file():
            return None
        return path.read_bytes()
    except OSError:
        return None


def _fingerprint(path: Path) -> tuple[str, bytes | int | None]:
    """What a file is: ("file", its bytes), ("fifo", inode), ("missing", None)..."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return ("missing", None)
    if stat.S_ISREG(st.st_mode):
        return ("file", path.read_bytes())
    if stat.S_ISLNK(st.st_mode):
        return ("link", str(path.readlink()).encode())
    return (stat.filemode(st.st_mode)[0], st.st_ino)


@attrs.define
class HostileBox:
    """A sandboxed box the CLI is pointed at (see the module docstring)."""

    root: Path
    sandbox: Sandbox
    server: FaultServer
    #: global options as update.conf keys -> text; None = the option is left out
    flags: dict[str, str | None]
    #: extra environment variables for the run (KUBESOLO_UPDATE_*)
    env: dict[str, str]
    #: raw SHA-256 -> raw size of every image published (to prove a staged slot)
    published: dict[str, int] = attrs.field(factory=dict)

    # ------------------------------------------------------------------ making one

    @classmethod
    def create(cls, root: Path, server: FaultServer) -> HostileBox:
        """A box on ``root`` (A 1.0.0 booted and committed, B 0.9.0), 1.1.0 published."""
        sandbox = Sandbox(root)
        for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "0.9.0")):
            with sandbox.slot(slot).open("wb") as f:
                f.truncate(SLOT_BYTES)
                f.write(image(version))
        PythonBackend(sandbox.grubenv).set(
            {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
        )
        sandbox.boot()
        (root / "data").mkdir()
        (root / "update.conf").write_text("# hostile box: empty on purpose\n")
        box = cls(
            root=root,
            sandbox=sandbox,
            server=server,
            flags={
                "config": str(root / "update.conf"),
                "state": str(root / "var" / "state.json"),
                "server": server.url(RELEASE_PATH),
                "bootloader": "grub",
                "grubenv": str(sandbox.grubenv),
                "slot_a": str(sandbox.slot(Slot.A)),
                "slot_b": str(sandbox.slot(Slot.B)),
                "cmdline": str(sandbox.cmdline),
                "kubeconfig": str(root / "no-kubeconfig"),
                "node_name": "hostile-node",
                "containerd_socket": str(root / "no-containerd.sock"),
                "data_dir": str(root / "data"),
            },
            env={
                "KUBESOLO_UPDATE_BOOT_ID": str(sandbox.boot_id),
                "KUBESOLO_UPDATE_SETTLE_TIMEOUT": "0",
                "KUBESOLO_UPDATE_LOG_FORMAT": "json",
                # the box serves a plain release document (DESIGN.md 5): unsigned, by name
                "KUBESOLO_UPDATE_ALLOW_UNSIGNED": "true",
            },
        )
        box.publish("1.1.0")
        return box

    # ------------------------------------------------------------------ paths

    @property
    def state(self) -> Path:
        """state.json (as the ``state`` flag names it)."""
        return Path(self.flags["state"] or self.root / "var" / "state.json")

    @property
    def grubenv(self) -> Path:
        return self.sandbox.grubenv

    def slot(self, slot: Slot) -> Path:
        return self.sandbox.slot(slot)

    @property
    def www(self) -> Path:
        """A folder for file:// releases (made on first use)."""
        path = self.root / "www"
        path.mkdir(exist_ok=True)
        return path

    # ------------------------------------------------------------------ releases

    def publish(
        self,
        version: str,
        *,
        mutate: Callable[[dict[str, Any]], object] | None = None,
        raw: bytes | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Serve a release of ``version`` at /release.json; ``mutate`` may spoil the document."""
        name = name or f"kubesolo-os-{version}-amd64.img.gz"
        raw = image(version) if raw is None else raw
        release, served = build_release(version, raw, url=name)
        doc = release_document(release)
        self.published[hashlib.sha256(raw).hexdigest()] = len(raw)
        self.server.publish("/" + name, served)
        if mutate is not None:
            mutate(doc)
        self.server.publish(RELEASE_PATH, json.dumps(doc).encode())
        return doc

    def publish_raw(self, body: bytes, path: str = RELEASE_PATH) -> None:
        """Serve ``body`` verbatim at ``path``."""
        self.server.publish(path, body)

    def write_state(self, state: UpdateState | str | bytes) -> None:
        """Put a state file in place (a state value, or raw text/bytes)."""
        from kubesolo_core.codec import dumps_state

        data = dumps_state(state) if isinstance(state, UpdateState) else state
        self.state.parent.mkdir(parents=True, exist_ok=True)
        self.state.write_bytes(data.encode() if isinstance(data, str) else data)

    # ------------------------------------------------------------------ running

    def argv(self, *command: str) -> list[str]:
        """The global options of the box followed by ``command``."""
        args: list[str] = []
        for key, value in self.flags.items():
            if value is not None:
                args += ["--" + key.replace("_", "-"), value]
        return [*args, *command]

    def run(self, *command: str, timeout: float = TIMEOUT) -> Result:
        """Run ``kubesolo-update <global options> <command>`` as a subprocess."""
        argv = self.argv(*command)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            **code_under_test(),
            **self.env,
        }
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "kubesolo_entrypoints", *argv],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                env=env,
                cwd=self.root,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"kubesolo-update {' '.join(command)} hung: no exit within {timeout:g}s "
                f"(stderr so far: {exc.stderr!r})"
            ) from None
        return Result(
            argv=tuple(argv),
            code=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            seconds=time.monotonic() - start,
        )

    # ------------------------------------------------------------------ observing

    def booted(self) -> Slot:
        from kubesolo_adapters.bootfacts import slot_from_cmdline

        data = _regular_bytes(self.sandbox.cmdline)
        return (slot_from_cmdline(data.decode()) if data else None) or Slot.A

    def committed(self) -> Slot:
        try:
            env = PythonBackend(self.grubenv).read() if self.grubenv.is_file() else {}
        except Exception:  # a case spoiled the env block on purpose: GRUB reads that as A
            env = {}
        return Slot.B if env.get("active_slot") == "B" else Slot.A

    def snapshot(self) -> Snapshot:
        return Snapshot(
            slots={s: _sha(self.slot(s)) for s in Slot if self.slot(s).is_file()},
            grubenv=_regular_bytes(self.grubenv),
            state=_regular_bytes(self.state),
            booted=self.booted(),
            committed=self.committed(),
        )

    def load_state(self) -> UpdateState | None:
        data = _regular_bytes(self.state)
        return None if data is None else loads_state(data, source=str(self.state))


# --------------------------------------------------------------------------- the checker


def check(
    box: HostileBox,
    command: list[str] | tuple[str, ...],
    *,
    code: int,
    culprit: str | tuple[str, ...] = (),
    phase: Phase | None = None,
    env_intact: bool = True,
    state_intact: bool = False,
    state_checked: bool = True,
    intact: tuple[Path, ...] = (),
    timeout: float = TIMEOUT,
) -> Result:
    """Run ``command`` in ``box`` and assert the whole outcome (module docstring).

    ``culprit``: substrings the error line must contain (a key, a field, a
    path). ``phase``: the phase state.json must be in afterwards (None: any
    phase that is not ``checking``/``downloading``). ``env_intact``: the GRUB
    env file must be byte-identical. ``state_intact``: state.json must be
    byte-identical (the input was refused before any state change).
    ``state_checked=False`` when state.json itself is the hostile input.
    ``intact``: more files that must be left exactly as they were (content for
    a regular file, kind for anything else: a FIFO must still be a FIFO).
    Returns the :class:`Result` for extra assertions.
    """
    before = box.snapshot()
    watched = {path: _fingerprint(path) for path in intact}
    result = box.run(*command, timeout=timeout)
    after = box.snapshot()
    both = result.stdout + result.stderr
    assert result.code == code, f"exit {result.code}, expected {code}\n{result}"
    assert "Traceback" not in both, f"a traceback\n{result}"
    assert "internal error" not in both, f"an unexpected exception\n{result}"
    culprits = (culprit,) if isinstance(culprit, str) else culprit
    if code != 0:
        lines = result.error_lines
        assert len(lines) == 1, f"expected one error line, got {len(lines)}\n{result}"
        for name in culprits:
            assert name in lines[0], f"the error line does not name {name!r}\n{result}"
    else:
        for name in culprits:
            assert name in both, f"the output does not name {name!r}\n{result}"
    # the running system: booted and committed slots byte-identical
    for slot in {before.booted, before.committed}:
        if slot in before.slots:
            assert after.slots.get(slot) == before.slots[slot], (
                f"slot {slot.value} (booted {before.booted.value}, committed "
                f"{before.committed.value}) was written\n{result}"
            )
    if env_intact:
        assert after.grubenv == before.grubenv, f"the GRUB env changed\n{result}"
    if state_intact:
        assert after.state == before.state, f"state.json changed\n{result}"
    for path, print_before in watched.items():
        assert _fingerprint(path) == print_before, f"{path} changed\n{result}"
    if state_checked and after.state is not None:
        state = loads_state(after.state, source=str(box.state))  # must load
        assert state.phase not in WORKING, (
            f"state.json claims work in progress ({state.phase.value}) after the run\n{result}"
        )
        if phase is not None:
            assert state.phase is phase, f"phase {state.phase.value}, expected {phase.value}"
        if state.phase is Phase.STAGED and state.target_slot is not None:
            size = box.published.get(state.image_sha256 or "", 0)
            with box.slot(state.target_slot).open("rb") as fh:
                head = fh.read(size)
            assert size and hashlib.sha256(head).hexdigest() == state.image_sha256, (
                f"staged, but slot {state.target_slot.value} does not hold the image\n{result}"
            )
    elif phase is not None and phase is not Phase.IDLE:
        raise AssertionError(f"no state.json, expected phase {phase.value}\n{result}")
    return result


@contextlib.contextmanager
def hostile_box(root: Path) -> Iterator[HostileBox]:
    """A :class:`HostileBox` on ``root`` with its server; stops the server at the end."""
    with FaultServer() as server:
        yield HostileBox.create(root, server)


# --------------------------------------------------------------------------- the catalogue


#: cases that passed, per family (printed at the end of the run by tests/conftest.py)
TALLY: dict[str, int] = {}


@attrs.frozen(kw_only=True)
class Case:
    """One named hostile input and the exact outcome expected (see :func:`check`)."""

    family: str
    name: str
    command: tuple[str, ...]
    code: int
    culprit: tuple[str, ...] = ()
    #: spoils the box before the run; may return more paths that must stay intact
    prepare: Callable[[HostileBox], object] | None = None
    phase: Phase | None = None
    env_intact: bool = True
    state_intact: bool = False
    state_checked: bool = True
    timeout: float = TIMEOUT
    #: a bound on the run's wall time (a refusal must not wait on the network)
    max_seconds: float | None = None

    @property
    def id(self) -> str:
        return self.name


def case(
    family: str,
    name: str,
    command: str | tuple[str, ...],
    code: int,
    culprit: str | tuple[str, ...] = (),
    **rest: Any,
) -> Case:
    """A :class:`Case` (``command`` and ``culprit`` may be one string)."""
    return Case(
        family=family,
        name=name,
        command=(command,) if isinstance(command, str) else tuple(command),
        code=code,
        culprit=(culprit,) if isinstance(culprit, str) else tuple(culprit),
        **rest,
    )


def run_case(box: HostileBox, spec: Case) -> Result:
    """Prepare ``box`` as ``spec`` says, run it through :func:`check`, count it."""
    extra = spec.prepare(box) if spec.prepare is not None else None
    paths = tuple(extra) if isinstance(extra, list | tuple) else ()
    culprit = tuple(c.format(root=box.root, state=box.state) for c in spec.culprit)
    result = check(
        box,
        list(spec.command),
        code=spec.code,
        culprit=culprit,
        phase=spec.phase,
        env_intact=spec.env_intact,
        state_intact=spec.state_intact,
        state_checked=spec.state_checked,
        intact=paths,
        timeout=spec.timeout,
    )
    if spec.max_seconds is not None:
        assert result.seconds <= spec.max_seconds, (
            f"took {result.seconds:.1f}s (at most {spec.max_seconds:g}s)\n{result}"
        )
    TALLY[spec.family] = TALLY.get(spec.family, 0) + 1
    return result


def fifo(path: Path) -> Path:
    """A named pipe at ``path`` (nobody ever writes to it: reading it blocks forever)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path
