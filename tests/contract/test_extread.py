"""The direct reader of a slot's ``/version`` (kubesolo_adapters/extread.py) against debugfs.

Real filesystems made by mkfs.ext2/3/4 with the options slot images are made
with (block sizes, 32/64-bit, with and without checksums, file types, rev 0,
bigalloc), holding every kind of ``version`` (one line, no newline, empty,
absent, 4 KiB, too long, a directory, a symlink) and a crowded root (600
entries: a directory of many blocks, indexed by ``e2fsck -D``, the file's
inode in a later block group). Where the reader answers, its bytes are
debugfs's; where a filesystem is off its path (inline data, meta_bg, case
folding, a journal to recover) it declines and debugfs answers; either way
``read_version`` says what it said before. Damaged images never make it
raise. And ``status`` shows what is on a slot now, with no process started:
an image file rewritten in place (its times put back) and a loop device
written underneath it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubesolo_adapters import fsversion, sandbox
from kubesolo_adapters.extread import read_root_file
from kubesolo_adapters.fsversion import read_version
from kubesolo_core.slots import Slot
from tests.contract.loopdev import attached
from tests.tools import code_under_test, require_root, require_tool

LIMIT = 4096  # fsversion's: a version file longer than this is not one
SIZE = 8 << 20

#: name -> (mkfs argv, the reader must answer)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "ext2": (["mkfs.ext2"], True),
    "ext2 rev 0": (["mkfs.ext2", "-r", "0"], True),
    "ext2 1k no filetype": (["mkfs.ext2", "-b", "1024", "-O", "^filetype"], True),
    "ext3": (["mkfs.ext3"], True),
    "ext3 1k": (["mkfs.ext3", "-b", "1024"], True),
    "ext4": (["mkfs.ext4"], True),
    "ext4 1k": (["mkfs.ext4", "-b", "1024"], True),
    "ext4 2k": (["mkfs.ext4", "-b", "2048"], True),
    "ext4 32-bit no csum": (["mkfs.ext4", "-O", "^64bit,^metadata_csum"], True),
    "ext4 bigalloc": (["mkfs.ext4", "-O", "bigalloc", "-C", "16384"], True),
    "ext4 inline data": (["mkfs.ext4", "-O", "inline_data"], False),
    "ext4 meta_bg": (["mkfs.ext4", "-O", "meta_bg,^resize_inode"], False),
    "ext4 casefold": (["mkfs.ext4", "-O", "casefold"], False),
}

#: name -> files at the root (a bytes value is a file, "->x" a symlink, {} a directory)
CONTENTS: dict[str, dict[str, object]] = {
    "one line": {"version": b"1.2.3\n", "os-release": b'NAME="KubeSolo OS"\n'},
    "no newline": {"version": b"2.0.0-rc.1"},
    "empty": {"version": b""},
    "absent": {"os-release": b"x\n"},
    "4 KiB": {"version": b"9.9.9\n" + b"#" * (LIMIT - 6)},
    "too long": {"version": b"1.0.0\n" + b"x" * 6000},
    "a directory": {"version": {}},
    "a symlink": {"version": "->os-release", "os-release": b"1.2.3\n"},
    "crowded": {**{f"a{n:03d}": b"%d\n" % n for n in range(600)}, "version": b"3.1.4\n"},
}
DECLINED = {"a directory", "a symlink"}  # not a regular file: debugfs decides


def populate(root: Path, files: dict[str, object]) -> None:
    root.mkdir()
    for name, what in files.items():
        if isinstance(what, bytes):
            (root / name).write_bytes(what)
        elif isinstance(what, str):
            (root / name).symlink_to(what.removeprefix("->"))
        else:
            (root / name).mkdir()
            (root / name / "inside").write_bytes(b"1.0.0\n")


def make_image(
    tmp: Path, argv: list[str], files: dict[str, object], *, index: bool, size: int = SIZE
) -> Path:
    root = tmp / "root"
    populate(root, files)
    image = tmp / "slot.img"
    with image.open("wb") as fh:
        fh.truncate(size)
    run([*argv, "-q", "-F", "-d", str(root), str(image)])
    if index:  # e2fsck -D rebuilds directories with an htree index
        proc = subprocess.run(
            ["e2fsck", "-fyD", str(image)], capture_output=True, timeout=60, check=False
        )
        assert proc.returncode in (0, 1), proc.stderr
    return image


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{argv}: {proc.stderr.decode()[-300:]}")


def debugfs(image: Path, request: str = "cat /version") -> bytes:
    proc = subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def expected_version(theirs: bytes) -> str | None:
    """What read_version said before: debugfs's output, nothing when it is too long."""
    return fsversion._version_text(theirs) if len(theirs) <= LIMIT else None


CASES = [
    (variant, content)
    for variant, (_, must) in VARIANTS.items()
    for content in CONTENTS
    if must or content in ("one line", "absent")
    if content != "crowded" or variant in ("ext2 1k no filetype", "ext3", "ext4 1k")
]


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("mkfs.ext2", "mkfs.ext3", "mkfs.ext4", "debugfs", "e2fsck")


@pytest.mark.parametrize(("variant", "content"), CASES)
def test_the_reader_says_what_debugfs_says(variant: str, content: str, tmp_path: Path) -> None:
    argv, must_answer = VARIANTS[variant]
    crowded = content == "crowded"
    if crowded:  # small groups, few inodes each: 600 files span several groups
        argv = [*argv, "-g", "1024", "-N", "1024"]
    image = make_image(tmp_path, argv, CONTENTS[content], index=crowded)
    ours = read_root_file(str(image), "version", LIMIT + 1)
    theirs = debugfs(image)
    if content in DECLINED:
        assert ours is None
    elif must_answer:
        assert ours is not None, f"{variant}: the reader declined a plain filesystem"
    elif content == "one line":  # (an absent file it may still see in a plain root)
        assert ours is None, f"{variant}: the reader should leave this one to debugfs"
    if ours is not None:
        assert ours == theirs[: LIMIT + 1]
    if content != "too long" or ours is not None:  # (else debugfs, then a loop mount)
        assert read_version(str(image), is_file=True) == expected_version(theirs)
    if crowded:
        stat = debugfs(image, "stat /").decode()
        assert "Flags: 0x81000" in stat or "Flags: 0x1000" in stat  # an indexed directory
        ino = int(debugfs(image, "stat /version").decode().split()[1])
        per_group = int(
            next(
                line.split(":")[1]
                for line in subprocess.run(
                    ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=False
                ).stdout.splitlines()
                if line.startswith("Inodes per group")
            )
        )
        assert ino > per_group, "the crowded case must put version's inode in a later group"


def test_a_journal_to_recover_is_left_to_debugfs(tmp_path: Path) -> None:
    image = make_image(tmp_path, ["mkfs.ext4"], CONTENTS["one line"], index=False)
    assert read_root_file(str(image), "version", LIMIT + 1) == b"1.2.3\n"
    run(["debugfs", "-w", "-R", "feature needs_recovery", str(image)])
    assert read_root_file(str(image), "version", LIMIT + 1) is None
    assert read_version(str(image), is_file=True) == "1.2.3"  # by debugfs


def test_not_a_filesystem_or_unreadable(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(b"\0" * 65536)
    assert read_root_file(str(zeros), "version", LIMIT + 1) is None
    assert read_root_file(str(tmp_path / "missing.img"), "version", LIMIT + 1) is None
    image = make_image(tmp_path, ["mkfs.ext2"], CONTENTS["one line"], index=False)
    cut = tmp_path / "cut.img"
    cut.write_bytes(image.read_bytes()[:4096])  # the superblock, and nothing it points at
    assert read_root_file(str(cut), "version", LIMIT + 1) is None


#: the damaged images: small, so that every byte of them can be hit
DAMAGED_SIZE = 1 << 20


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small images to damage: an ext2 (no checksums) and an ext4 (4 KiB blocks, extents)."""
    require_tool("mkfs.ext2", "mkfs.ext4")
    out = {}
    for name, argv in (("ext2", ["mkfs.ext2"]), ("ext4", ["mkfs.ext4", "-b", "4096"])):
        tmp = tmp_path_factory.mktemp(name)
        image = make_image(tmp, argv, CONTENTS["one line"], index=False, size=DAMAGED_SIZE)
        assert read_root_file(str(image), "version", LIMIT + 1) == b"1.2.3\n"
        out[name] = image.read_bytes()
    return out


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(["ext2", "ext4"]),
    edits=st.lists(
        st.tuples(
            # the superblock half the time, else anywhere (descriptors, inodes, directory)
            st.one_of(st.integers(1024, 2047), st.integers(0, DAMAGED_SIZE - 1)),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_damage_never_makes_the_reader_raise(
    pristine: dict[str, bytes], tmp_path: Path, kind: str, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(pristine[kind])
    for offset, value in edits:
        data[offset] = value
    image = tmp_path / f"damaged-{kind}.img"
    image.write_bytes(bytes(data))
    ours = read_root_file(str(image), "version", LIMIT + 1)
    assert ours is None or len(ours) <= LIMIT + 1
    if kind == "ext2" and ours:
        # Without checksums, debugfs walks the same blocks: when both answer, they
        # agree. (debugfs refuses some damage the reader does not look for; with
        # ext4's checksums it also prints its complaints on stdout.)
        # (damage that turns the checksum feature on makes debugfs say so on stdout)
        theirs = debugfs(image).removeprefix(b"Checksum errors in superblock!  Retrying...\n")
        if theirs:
            assert ours == theirs[: LIMIT + 1]


# --------------------------------------------------------------------------- status


def status_json(
    box: sandbox.Sandbox, state: Path, slots: dict[Slot, str], env: dict[str, str]
) -> dict[str, object]:
    args = box.cli_args(state)
    for slot, spec in slots.items():
        args[args.index(f"--slot-{slot.value.lower()}") + 1] = spec
    proc = subprocess.run(
        [sys.executable, "-m", "kubesolo_entrypoints", *args, "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def versions(doc: dict[str, object]) -> dict[str, object]:
    return {row["slot"]: row["version"] for row in doc["slots"]}  # type: ignore[index,union-attr]


def test_status_shows_what_is_on_the_slot_now_without_a_process(tmp_path: Path) -> None:
    """A slot rewritten underneath (times put back, or a block device) shows its new version."""
    require_tool("mkfs.ext2", "losetup")
    require_root()
    box = sandbox.Sandbox(tmp_path)
    images = {
        v: sandbox.make_fs_image(tmp_path, v, size=1 << 20)
        for v in ("1.0.0", "1.1.0", "2.0.0", "3.0.0")
    }
    for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "1.1.0")):
        with box.slot(slot).open("wb") as fh:
            fh.truncate(2 << 20)
            fh.write(images[version])
    box.cmdline.write_text("kubesolo.slot=A\n")
    box.boot_id.write_text("one\n")
    # A debugfs that leaves a mark: status must not start it (nor anything else).
    tools = tmp_path / "bin"
    tools.mkdir()
    mark = tmp_path / "debugfs-ran"
    (tools / "debugfs").write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexit 1\n')
    (tools / "debugfs").chmod(0o755)
    env = {
        "PATH": f"{tools}:/usr/bin:/bin:/usr/sbin:/sbin",
        "KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id),
        **code_under_test(),
    }
    state = tmp_path / "state.json"
    assert versions(status_json(box, state, {}, env)) == {"A": "1.0.0", "B": "1.1.0"}

    # An image file rewritten in place, its times put back: same name, size, inode, mtime.
    slot_b = box.slot(Slot.B)
    before = slot_b.stat()
    with slot_b.open("r+b") as fh:
        fh.write(images["2.0.0"])
    os.utime(slot_b, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert slot_b.stat().st_mtime_ns == before.st_mtime_ns
    assert versions(status_json(box, state, {}, env)) == {"A": "1.0.0", "B": "2.0.0"}

    # A loop device (no mtime at all) written underneath.
    with attached(box.slot(Slot.A)) as dev:
        assert versions(status_json(box, state, {Slot.A: dev}, env))["A"] == "1.0.0"
        fd = os.open(dev, os.O_WRONLY)
        try:
            os.pwrite(fd, images["3.0.0"], 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert versions(status_json(box, state, {Slot.A: dev}, env))["A"] == "3.0.0"
    assert not mark.exists(), mark.read_text()
