"""The StateStore contract against JsonStateStore on a real file system."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from kubesolo_adapters.fakes import MemoryClock
from kubesolo_adapters.statefile import JsonStateStore
from kubesolo_core.codec import dumps_state
from kubesolo_core.errors import CorruptState, OperationFailed
from kubesolo_core.lifecycle import Phase, UpdateState
from tests.contract.loopdev import fill_up, tmpfs
from tests.contract.state_suite import CORRUPT, RICH, StateContract
from tests.tools import require_root, require_tool

ASIDE = re.compile(r"^state\.json\.corrupt-\d{8}T\d{6}Z(-\d+)?$")


@attrs.define
class JsonStateWorld:
    """state.json in a fresh directory; a failed rename is the failed save."""

    store: JsonStateStore
    monkeypatch: pytest.MonkeyPatch

    @property
    def name(self) -> str:
        return str(self.store.path)

    def write_raw(self, data: bytes) -> None:
        self.store.path.parent.mkdir(parents=True, exist_ok=True)
        self.store.path.write_bytes(data)

    def read_raw(self) -> bytes | None:
        try:
            return self.store.path.read_bytes()
        except FileNotFoundError:
            return None

    def kept_aside(self) -> list[bytes]:
        d = self.store.path.parent
        found = sorted(d.glob("state.json.corrupt-*")) if d.exists() else []
        # sorted by name = by time, then by the -N suffix of the same second
        found.sort(key=lambda p: (p.name.split("-")[1], len(p.name), p.name))
        return [p.read_bytes() for p in found]

    def fail_next_save(self) -> type[BaseException]:
        """The rename over state.json fails once with EIO (a dying disk)."""
        real_replace = Path.replace
        calls = {"n": 0}

        def failing_replace(self: Path, target: str | os.PathLike[str]) -> Path:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.EIO, "Input/output error (injected)", str(target))
            return real_replace(self, target)

        self.monkeypatch.setattr(Path, "replace", failing_replace)
        return OperationFailed


@pytest.fixture
def json_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JsonStateWorld:
    return JsonStateWorld(
        store=JsonStateStore(tmp_path / "var" / "update" / "state.json"), monkeypatch=monkeypatch
    )


class TestJsonStateStore(StateContract):
    """JsonStateStore honours the StateStore contract."""

    @pytest.fixture
    def world(self, json_world: JsonStateWorld) -> JsonStateWorld:
        return json_world


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def temp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class TestJsonFile:
    """What only a real file has: modes, names, errnos, crashes."""

    def test_modes_whatever_the_umask(self, tmp_path: Path) -> None:
        path = tmp_path / "lib" / "kubesolo" / "update" / "state.json"
        with umask(0o077):
            JsonStateStore(path).save(RICH)
        assert path.stat().st_mode & 0o7777 == 0o644
        for d in (path.parent, path.parent.parent, path.parent.parent.parent):
            assert d.stat().st_mode & 0o7777 == 0o755, d
        assert temp_leftovers(path.parent) == []

    def test_existing_directory_mode_is_left_alone(self, tmp_path: Path) -> None:
        tmp_path.chmod(0o700)
        JsonStateStore(tmp_path / "state.json").save(RICH)
        assert tmp_path.stat().st_mode & 0o7777 == 0o700

    def test_set_aside_name_and_message(self, tmp_path: Path) -> None:
        path = tmp_path / "state.json"
        path.write_bytes(CORRUPT["truncated"])
        store = JsonStateStore(path, clock=MemoryClock())
        with pytest.raises(CorruptState) as info:
            store.load()
        aside = tmp_path / "state.json.corrupt-20260101T000000Z"
        assert aside.read_bytes() == CORRUPT["truncated"]
        message = str(info.value)
        assert str(path) in message
        assert str(aside) in message
        assert "starts from idle" in message
        # a second corruption in the same second gets its own name
        torn = b'{"phase": "sta'
        path.write_bytes(torn)
        with pytest.raises(CorruptState):
            store.load()
        assert (tmp_path / "state.json.corrupt-20260101T000000Z-1").read_bytes() == torn

    def test_a_mistyped_state_path_is_never_moved(self, tmp_path: Path) -> None:
        # `--state /etc/passwd` by mistake: report, leave the file where it is, write nothing.
        victim = tmp_path / "passwd"
        victim.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
        store = JsonStateStore(victim)
        for _ in range(2):
            with pytest.raises(CorruptState, match="left in place") as info:
                store.load()
            assert "--state" in str(info.value)
        assert victim.read_bytes() == b"root:x:0:0:root:/root:/bin/bash\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]

    def test_set_aside_name_uses_the_utc_time(self, json_world: JsonStateWorld) -> None:
        json_world.write_raw(CORRUPT["truncated"])
        with pytest.raises(CorruptState):
            json_world.store.load()
        names = [p.name for p in json_world.store.path.parent.iterdir()]
        assert len(names) == 1
        assert ASIDE.match(names[0]), names

    @pytest.mark.parametrize(
        "data",
        [b'\xff\xfe\x00 "phase": not utf-8', b'{"phase": "idle"' + b" " * (1 << 20) + b"}"],
        ids=["binary", "huge"],
    )
    def test_binary_and_huge_files_are_corrupt(self, tmp_path: Path, data: bytes) -> None:
        path = tmp_path / "state.json"
        path.write_bytes(data)
        with pytest.raises(CorruptState):
            JsonStateStore(path).load()
        assert not path.exists()
        [aside] = tmp_path.glob("state.json.corrupt-*")
        assert aside.read_bytes() == data

    @pytest.mark.parametrize(
        "data", [b"\xff\xfe\x00 not utf-8", b"{" + b" " * (1 << 20) + b"}"], ids=["binary", "huge"]
    )
    def test_binary_and_huge_foreign_files_stay(self, tmp_path: Path, data: bytes) -> None:
        path = tmp_path / "state.json"
        path.write_bytes(data)
        with pytest.raises(CorruptState, match="left in place"):
            JsonStateStore(path).load()
        assert path.read_bytes() == data
        assert not list(tmp_path.glob("state.json.corrupt-*"))

    @pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero"])
    def test_a_special_file_is_never_opened(self, tmp_path: Path, kind: str) -> None:
        """A FIFO would block open() for ever; /dev/zero would read for ever: both refused."""
        path = tmp_path / "state.json"
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        else:
            path.symlink_to("/dev/zero")
        with pytest.raises(OperationFailed, match="not a regular file") as info:
            JsonStateStore(path).load()
        assert str(path) in str(info.value)
        assert path.exists() or path.is_symlink()

    def test_unreadable_is_operation_failed_and_left_in_place(self, tmp_path: Path) -> None:
        path = tmp_path / "state.json"
        path.mkdir()  # something that cannot be read as a file, even by root
        with pytest.raises(OperationFailed) as info:
            JsonStateStore(path).load()
        assert str(path) in str(info.value)
        assert "EISDIR" in str(info.value)
        assert path.is_dir()

    def test_unsavable_directory_is_operation_failed(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_text("x")
        path = tmp_path / "a-file" / "state.json"
        with pytest.raises(OperationFailed) as info:
            JsonStateStore(path).save(RICH)
        assert str(path) in str(info.value)

    def test_failed_rename_leaves_no_temp_file(self, json_world: JsonStateWorld) -> None:
        json_world.store.save(RICH)
        json_world.fail_next_save()
        with pytest.raises(OperationFailed) as info:
            json_world.store.save(UpdateState())
        assert "EIO" in str(info.value)
        assert "previous state is unchanged" in str(info.value)
        assert temp_leftovers(json_world.store.path.parent) == []

    def test_full_disk_keeps_the_old_state(self, tmp_path: Path) -> None:
        require_tool("mount")
        require_root()
        with tmpfs(tmp_path / "full", "size=64k") as full:
            store = JsonStateStore(full / "state.json")
            store.save(RICH)
            fill_up(full)  # 4 KiB blocks until ENOSPC
            big = UpdateState(phase=Phase.FAILED, last_error="x" * 8192)
            with pytest.raises(OperationFailed) as info:
                store.save(big)
            assert "ENOSPC" in str(info.value)
            assert store.load() == RICH
            assert temp_leftovers(full) == []

    def test_corrupt_on_read_only_media_says_it_stays(self, tmp_path: Path) -> None:
        require_tool("mount")
        require_root()
        with tmpfs(tmp_path / "ro", "size=64k") as ro:
            (ro / "state.json").write_bytes(CORRUPT["truncated"])
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            with pytest.raises(CorruptState) as info:
                JsonStateStore(ro / "state.json").load()
            assert "could not be set aside" in str(info.value)
            assert "EROFS" in str(info.value)
            assert (ro / "state.json").read_bytes() == CORRUPT["truncated"]

    def test_killed_mid_save_leaves_old_or_new(self, tmp_path: Path) -> None:
        """SIGKILL a process that saves in a loop: the file is always one whole state."""
        path = tmp_path / "state.json"
        other = UpdateState(phase=Phase.SUCCESS, to_version="9.9.9", attempt_count=7)
        script = textwrap.dedent(
            f"""
            import sys
            from kubesolo_adapters.statefile import JsonStateStore
            from kubesolo_core.codec import loads_state
            states = [loads_state({dumps_state(RICH)!r}), loads_state({dumps_state(other)!r})]
            store = JsonStateStore({str(path)!r})
            store.save(states[0])
            print("ready", flush=True)
            for i in range(10**7):
                store.save(states[i % 2])
            """
        )
        rng = random.Random(20260301)  # noqa: S311 (kill timing, not secrets)
        for _ in range(4):
            proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
            try:
                assert proc.stdout is not None
                ready, _, _ = select.select([proc.stdout], [], [], 30)
                assert ready and proc.stdout.readline() == b"ready\n"
                select.select([], [], [], rng.uniform(0.01, 0.15))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()
            assert JsonStateStore(path).load() in (RICH, other)
