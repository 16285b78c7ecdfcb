"""kubesolo_adapters.inputs against real special files: never blocks, never reads a device."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kubesolo_adapters.inputs import InputTooLarge, NotRegularFile, open_input, read_input


def _within(seconds: float, fn: Callable[[], object]) -> object:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds}s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_input(path, limit=100) == b"x" * 100
    with pytest.raises(InputTooLarge, match="larger than 99 bytes") as info:
        read_input(path, limit=99)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(path)


def test_a_proc_file_of_size_zero_is_read_whole() -> None:
    data = read_input("/proc/self/status", limit=1 << 16)
    assert b"Name:" in data


def test_missing_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_input(tmp_path / "absent", limit=10)


@pytest.mark.parametrize("through_link", [False, True], ids=["fifo", "symlink-to-fifo"])
def test_a_fifo_is_refused_at_once(tmp_path: Path, through_link: bool) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    path = pipe
    if through_link:
        path = tmp_path / "link"
        path.symlink_to(pipe)
    with pytest.raises(NotRegularFile, match=r"named pipe \(FIFO\)") as info:
        _within(5, lambda: read_input(path, limit=10))
    assert info.value.filename == str(path)
    with pytest.raises(NotRegularFile):
        _within(5, lambda: open_input(path))


def test_a_directory_is_eisdir(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFile, match="a directory") as info:
        read_input(tmp_path, limit=10)
    assert info.value.errno == errno.EISDIR


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        with pytest.raises(NotRegularFile, match="unix socket"):
            _within(5, lambda: read_input(path, limit=10))


def test_dev_zero_is_never_read() -> None:
    with pytest.raises(NotRegularFile, match="character device"):
        _within(5, lambda: read_input("/dev/zero", limit=10))


def test_dev_null_only_where_allowed() -> None:
    assert read_input("/dev/null", limit=10, allow_null=True) == b""
    with pytest.raises(NotRegularFile, match="character device"):
        read_input("/dev/null", limit=10)
    with pytest.raises(NotRegularFile, match="character device"):
        read_input("/dev/zero", limit=10, allow_null=True)
