"""Benchmark: `kubesolo-update apply` against RAUC and SWUpdate, end to end, side by side.

Not a test: run it by hand as root (loop devices, mounts, cache drops, a
private D-Bus) and read the table. CI runs one small round of it as a smoke
test (tests/contract/test_bench_peers.py).

    sudo .venv/bin/python bench/apply_vs_peers.py --size-mib 512 --rounds 7 --zstd

The same ext4 image (real files copied from /usr, a ``version`` file, the
rest free space) is written by each tool to the same target, a loop device
over a file (direct I/O on the backing file where the kernel allows it):

* **kubesolo-update** ``apply`` through the real CLI (a subprocess of this
  Python), with a grubenv file, a kernel command line file naming slot A,
  both slots on loop devices, kubectl against the stand-in API server of
  tests/contract/fakeapi.py (preflight asks for the node's labels), the
  release document and the image served by a private nginx on 127.0.0.1;
* **RAUC** (Debian's rauc 1.8): ``rauc install`` of a signed plain bundle
  (squashfs with mksquashfs's default compression, as ``rauc bundle``
  makes it), talking to ``rauc service`` on a private D-Bus system bus; a
  system.conf with two ext4 slots on the loop devices, ``bootloader=noop``,
  the booted slot given by ``--override-boot-slot=A``, a central status file
  and ``install-same=true`` so that every round writes. RAUC 1.8 streams
  only verity/crypt bundles over HTTP (through nbd), so the plain bundle is
  read from a local file: RAUC gets no network in this race;
* **SWUpdate** (Debian's swupdate 2022.12): ``swupdate -d -u URL`` streams a
  .swu from the same nginx: sw-description signed (CMS) with the bench's own
  key, ``hardware-compatibility`` checked against ``-H``, one ``raw`` image
  ``installed-directly`` with its sha256. SWUpdate's downloader polls the
  installer's status once a second, so its process exits up to a second
  after the install is done; the table shows both, and the ratios use the
  moment it reported success (the strict comparison for us).

Before every run: the target is discarded (``blkdiscard``: it reads as
zeros, so a tool that skipped the write cannot pass), the agent's
state.json is removed, and the page cache is dropped. After every run the
slot is read back here (cache dropped first) and its SHA-256 compared with
the image's. The tools run in interleaved rounds (the order rotates every
round). Peak RSS is the wait4 ru_maxrss of the tool's process tree (the
largest single process in it); for the agent also its own Python process
(VmHWM at exit), since kubectl is in its tree; for RAUC the larger of the
client and the service (started fresh for every round).

``--zstd`` adds the agent with a zstd image (``zstd -3``), SWUpdate with
``compressed = "zstd"`` and RAUC with a zstd-compressed squashfs.

The agent reads a plain release document, unsigned by name
(``allow_unsigned=true``), as RAUC's and SWUpdate's signatures are their
own business. ``--signed`` adds the agent as a box ships it: a
kubesolo-release repository of the same image (TUF, Ed25519, channels
``stable`` and, with ``--zstd``, ``zstd`` at the publisher's zstd level 10),
``trust_root`` set, the metadata cache kept between rounds as on a box.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apply_throughput import BLKFLSBUF, drop_caches, loop_device  # noqa: E402

MIB = 1 << 20
VERSION_OLD = "1.0.0"
VERSION_NEW = "1.1.0"
COMPATIBLE = "kubesolo-bench"
HW_BOARD, HW_REV = "kubesolo-bench", "1.0"
NODE = "bench-node"
#: where the real files of the image come from (read only)
FILE_SOURCES = ("/usr/lib", "/usr/share", "/usr/bin", "/usr/sbin")
#: the tools this bench runs (scripts/install-system-deps.sh installs them)
NEEDED = (
    "/usr/bin/time", "rauc", "swupdate", "dbus-daemon", "dbus-send", "mkfs.ext4", "openssl",
    "cpio", "zstd", "blkdiscard", "losetup", "kubectl", "debugfs", "nginx",
)  # fmt: skip
#: one tool run may take this long before the bench gives up on it
RUN_TIMEOUT = 600.0

#: what each tool checks, from its source (rauc v1.8 src/update_handler.c,
#: src/bundle.c; swupdate 2022.12 handlers/raw_handler.c, core/cpio_utils.c)
#: and this bench's setup
_AGENT_WRITES = (
    "fsync per 16 MiB stretch, each stretch read back (O_DIRECT) into a full SHA-256 of the "
    "slot that must match before the head is written; head written last, fsynced, read back, "
    "compared"
)
VERIFIES = {
    "kubesolo-update": (
        "served size+SHA-256 on the fly, raw size; " + _AGENT_WRITES + "; release document "
        "unsigned here (allow_unsigned=true)"
    ),
    "kubesolo-update signed": (
        "TUF (Ed25519): root, timestamp, snapshot, targets, channel document, image target "
        "length+SHA-256 and every 4 MiB chunk's SHA-256 on the fly (metadata cache warm, as on "
        "a box); raw size; " + _AGENT_WRITES
    ),
    "rauc": (
        "CMS signature over the whole bundle (read once before the copy), compatible; "
        "fsync after the copy; no hash of what was written, no read-back"
    ),
    "swupdate": (
        "CMS signature of sw-description, hardware compatibility, SHA-256 of the image "
        "while it is written (a mismatch is found after the write); no fsync call (the "
        "kernel writes dirty pages back at the device's last close), no read-back"
    ),
}

# The agent's CLI, run as ``python -m kubesolo_entrypoints`` is run, plus one
# atexit hook that writes the process's own VmHWM (kubectl's RSS is in the tree).
_AGENT_MAIN = """\
import atexit, os, runpy, sys
def _hwm():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                with open(os.environ['BENCH_HWM_FILE'], 'w') as out:
                    out.write(line.split()[1])
atexit.register(_hwm)
runpy.run_module('kubesolo_entrypoints', run_name='__main__', alter_sys=True)
"""


# --------------------------------------------------------------------------- images


def _stage_files(dest: Path, budget: int, max_files: int) -> tuple[int, int]:
    """Copy regular files from FILE_SOURCES into ``dest`` (sorted) until ``budget`` bytes."""
    used = 0
    count = 0
    for source in FILE_SOURCES:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath) / name
                try:
                    st = src.lstat()
                except OSError:
                    continue
                if not src.is_file() or src.is_symlink():
                    continue
                cost = -(-st.st_size // 4096) * 4096 + 4096
                if used + cost > budget or count >= max_files:
                    return used, count
                target = dest / src.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, target)
                except OSError:
                    continue
                used += cost
                count += 1
    return used, count


def make_ext4_image(path: Path, size: int, version: str, *, fill: float) -> tuple[str, int]:
    """An ext4 image of ``size`` bytes: real files (``fill`` of it), a version file.

    Returns (SHA-256, number of files copied).
    """
    inodes = size // 4096
    for attempt in range(4):  # metadata overhead varies: shrink the fill until it fits
        with tempfile.TemporaryDirectory(prefix="bench-root-", dir=path.parent) as tmp:
            root = Path(tmp)
            budget = int(size * (fill - 0.08 * attempt)) if fill else 0
            _, count = _stage_files(root, budget, int(inodes * 0.8)) if budget > 0 else (0, 0)
            (root / "version").write_text(version + "\n")
            (root / "os-release").write_text(f'NAME="KubeSolo OS"\nVERSION_ID="{version}"\n')
            path.unlink(missing_ok=True)
            with path.open("wb") as fh:
                fh.truncate(size)
            proc = subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-L", "KSOLO", "-i", "4096", "-E", "root_owner=0:0",
                 "-d", str(root), str(path)],
                capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT,
            )  # fmt: skip
        if proc.returncode == 0:
            return sha256_file(path), count
    raise SystemExit(f"mkfs.ext4 -d failed for {path}: {proc.stderr.strip()}")


def sha256_file(path: Path | str, size: int | None = None) -> str:
    """SHA-256 of a file or device (its first ``size`` bytes when given)."""
    digest = hashlib.sha256()
    left = size
    with Path(path).open("rb", buffering=0) as fh:
        while left is None or left > 0:
            chunk = fh.read(4 * MIB if left is None else min(4 * MIB, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


def slot_sha256(device: str, size: int) -> str:
    """The slot's first ``size`` bytes as the medium holds them (page cache dropped first)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, BLKFLSBUF, 0)
    finally:
        os.close(fd)
    return sha256_file(device, size)


def run_checked(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a set-up step; a failure ends the bench with the tool's own words."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT, cwd=cwd
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def make_signer(work: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key: RAUC's keyring and SWUpdate's CA at once."""
    cert, key = work / "signer.cert.pem", work / "signer.key.pem"
    run_checked(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-keyout", str(key), "-out", str(cert), "-subj", "/O=kubesolo-bench/CN=bench signer"]
    )  # fmt: skip
    return cert, key


# --------------------------------------------------------------------------- timing


@dataclass
class Timed:
    """One timed process: wall time to exit, when it said it was done, its tree's peak RSS."""

    elapsed: float
    done: float | None
    tree_rss: int
    returncode: int
    output: str


def timed(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    done_marker: str | None = None,
    cwd: Path | None = None,
) -> Timed:
    """Run ``argv``; wall time from exec to exit and the peak RSS of its process tree.

    The peak comes from GNU time (``%M``: wait4's ru_maxrss of the tool,
    which covers the descendants it waited for). Not from our own wait4: a
    child forked from this Python carries its RSS at the fork into ru_maxrss
    (the kernel keeps the larger of the old and new image's high-water mark
    across exec), and GNU time is small. stdout and stderr are read on a
    thread (a full pipe must not stall the tool); ``done_marker`` records
    when a line containing it appeared.
    """
    lines: list[str] = []
    done: list[float] = []
    with tempfile.NamedTemporaryFile(prefix="bench-rss-", suffix=".txt") as rss:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, "--", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if done_marker and not done and done_marker in line:
                    done.append(time.monotonic() - start)
                lines.append(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise SystemExit(f"{argv[0]} still ran after {RUN_TIMEOUT} s") from None
        elapsed = time.monotonic() - start
        reader.join(timeout=10)
        text = Path(rss.name).read_text().split()
    # GNU time writes "Command exited with non-zero status N" before the figure.
    peak = int(text[-1]) * 1024 if text and text[-1].isdigit() else 0
    return Timed(
        elapsed=elapsed,
        done=done[0] if done else None,
        tree_rss=peak,
        returncode=returncode,
        output="".join(lines),
    )


# --------------------------------------------------------------------------- the tools


@dataclass
class Run:
    """One tool's run in one round."""

    tool: str
    round: int
    elapsed: float
    #: the time the ratios use: when the tool reported success (SWUpdate) or exited
    install: float
    tree_rss: int
    own_rss: int | None
    sha_ok: bool
    load1: float


@dataclass
class Tool:
    """A contender: a name, how to run it once, what it verifies."""

    name: str
    kind: str  # "kubesolo-update" | "rauc" | "swupdate": the key of VERIFIES
    variant: str  # "none" | "zstd"
    run: Callable[[], tuple[Timed, int | None]] = field(repr=False)
    #: the agent only: one run under bench/trace_cli.py (or -X importtime), its trace
    traced: Callable[[bool], dict[str, Any]] | None = field(default=None, repr=False)


def make_tool(
    kind: str,
    *,
    zstd: bool,
    run: Callable[[], tuple[Timed, int | None]],
    tag: str = "",
    traced: Callable[[bool], dict[str, Any]] | None = None,
) -> Tool:
    """A Tool named by kind, tag and variant ("kubesolo-update@base zstd")."""
    return Tool(
        name=kind + tag + (" zstd" if zstd else ""),
        kind=kind,
        variant="zstd" if zstd else "none",
        run=run,
        traced=traced,
    )


@dataclass
class World:
    """Everything the tools share: images, slots, servers, keys."""

    work: Path
    size: int
    slot_size: int
    image: Path
    image_sha: str
    dev_a: str
    dev_b: str
    base_url: str
    cert: Path
    key: Path
    env: dict[str, str]
    #: a short folder for unix sockets
    sockets: Path


def plain_release(world: World, *, zstd: bool) -> Path:
    """The image (zstd -3 for ``zstd``) and its plain DESIGN.md 5 release document in www/."""
    www = world.work / "www"
    name = "image.img.zst" if zstd else "image.img"
    served = www / name
    if zstd and not served.exists():
        run_checked(["zstd", "-q", "-f", "-3", "-T0", str(world.image), "-o", str(served)])
    release = {
        "schema": 1,
        "version": VERSION_NEW,
        "image": {
            "url": name,
            "sha256": sha256_file(served),
            "size": served.stat().st_size,
            "compression": "zstd" if zstd else "none",
            "raw_size": world.size,
            "raw_sha256": world.image_sha,
        },
    }
    doc = www / ("release-zstd.json" if zstd else "release.json")
    doc.write_text(json.dumps(release, indent=2) + "\n")
    return doc


def signed_repository(world: World) -> Path:
    """A kubesolo-release repository of the image (channels stable and zstd); its 1.root.json.

    Made once per run with the publisher's own code (Ed25519 keys, 4 MiB
    chunk lists, zstd at the publisher's level), served by the bench's nginx
    under /tuf/.
    """
    from kubesolo_entrypoints.publisher.repo import Repository

    repo = Repository(world.work / "publisher")
    root = repo.metadata_dir / "1.root.json"
    if not root.exists():
        print("  signing: a kubesolo-release repository of the image ...", file=sys.stderr)
        repo.init()
        repo.add(world.image, version=VERSION_NEW, channel="stable", compress="none")
        repo.add(world.image, version=VERSION_NEW, channel="zstd", compress="zstd")
        (world.work / "www" / "tuf").symlink_to(repo.served)
    return root


def agent_tool(
    world: World,
    stack: contextlib.ExitStack,
    *,
    zstd: bool,
    src: Path = ROOT,
    tag: str = "",
    signed: bool = False,
) -> Tool:
    """kubesolo-update apply through the CLI, with its sandbox (grubenv, cmdline, kubectl).

    ``src`` is the source tree the CLI is imported from (another checkout for
    a before/after comparison in the same interleaved rounds), ``tag`` marks
    its name in the table. ``signed``: the release comes from a TUF
    repository (:func:`signed_repository`) through ``trust_root``; else a
    plain release document, unsigned by name (``allow_unsigned=true``).
    """
    from kubesolo_adapters.grubenvfile import PythonBackend
    from kubesolo_adapters.sandbox import Sandbox
    from tests.contract.fakeapi import FakeCluster, fake_api

    doc = plain_release(world, zstd=zstd) if not signed else None

    box_dir = world.work / "agent"
    box_dir.mkdir(exist_ok=True)
    sandbox = Sandbox(box_dir)
    if not sandbox.grubenv.exists():
        PythonBackend(sandbox.grubenv).set(
            {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
        )
        sandbox.boot()  # the firmware: committed slot A boots, cmdline says kubesolo.slot=A
    api_dir = box_dir / "api"
    api_dir.mkdir(exist_ok=True)
    if not (api_dir / "kubeconfig").exists():
        stack.enter_context(fake_api(api_dir, FakeCluster(node_name=NODE)))
    state = box_dir / f"state{'-signed' if signed else ''}{'-zstd' if zstd else ''}{tag}"
    state = state / "state.json"
    hwm_file = box_dir / "hwm"
    if doc is None:
        root = signed_repository(world)
        trust = ["--server", f"{world.base_url}/tuf/", "--trust-root", str(root)]
    else:
        trust = ["--server", f"{world.base_url}/{doc.name}"]
    flags = [
        "--state", str(state),
        *trust,
        "--bootloader", "grub",
        "--grubenv", str(sandbox.grubenv),
        "--slot-a", world.dev_a,
        "--slot-b", world.dev_b,
        "--cmdline", str(sandbox.cmdline),
        "--kubeconfig", str(api_dir / "kubeconfig"),
        "--node-name", NODE,
    ]  # fmt: skip
    env = {
        **world.env,
        "HOME": str(box_dir),  # kubectl's cache stays warm between rounds, as on a box
        "KUBESOLO_UPDATE_CONFIG": "/dev/null",
        "KUBESOLO_UPDATE_BOOT_ID": str(sandbox.boot_id),
        "KUBESOLO_UPDATE_LOG_FORMAT": "json",
        "BENCH_HWM_FILE": str(hwm_file),
        "PYTHONPATH": str(src),
    }
    if signed:
        env["KUBESOLO_UPDATE_CHANNEL"] = "zstd" if zstd else "stable"
    elif "allow_unsigned" in (src / "kubesolo_entrypoints" / "config.py").read_text():
        # a plain release document (DESIGN.md 5): unsigned, by name (a --baseline-src tree
        # from before signed releases has no such key, and refuses unknown ones)
        env["KUBESOLO_UPDATE_ALLOW_UNSIGNED"] = "true"

    def reset() -> None:
        """apply must write again: state.json and the records go, TUF's metadata cache stays."""
        if state.parent.exists():
            for entry in state.parent.iterdir():
                if entry.name != "tuf":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def run() -> tuple[Timed, int | None]:
        reset()
        hwm_file.unlink(missing_ok=True)
        # cwd: the box's folder, so that ``python -c`` imports the CLI from ``src`` alone
        result = timed([sys.executable, "-c", _AGENT_MAIN, *flags, "apply"], env=env, cwd=box_dir)
        if result.returncode != 0 or "staged on slot B (verified)" not in result.output:
            raise SystemExit(
                f"kubesolo-update apply failed ({result.returncode}):\n{result.output}"
            )
        own = int(hwm_file.read_text()) * 1024 if hwm_file.exists() else None
        return result, own

    def traced(importtime: bool) -> dict[str, Any]:
        """One apply with a clock on each port call (or with -X importtime)."""
        reset()
        trace = box_dir / "trace.json"
        trace.unlink(missing_ok=True)
        argv = [sys.executable, str(ROOT / "bench" / "trace_cli.py"), *flags, "apply"]
        if importtime:
            argv = [sys.executable, "-X", "importtime", "-c", _AGENT_MAIN, *flags, "apply"]
        start = time.time()
        proc = subprocess.run(
            argv, env={**env, "BENCH_TRACE_FILE": str(trace)}, cwd=box_dir,
            capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT,
        )  # fmt: skip
        end = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"traced apply failed ({proc.returncode}):\n{proc.stderr}")
        if importtime:
            return {"stderr": proc.stderr, "wall": end - start}
        doc: dict[str, Any] = json.loads(trace.read_text())
        doc["start_wall"], doc["end_wall"] = start, end
        return doc

    kind = "kubesolo-update signed" if signed else "kubesolo-update"
    return make_tool(kind, zstd=zstd, run=run, tag=tag, traced=traced)


_BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@contextlib.contextmanager
def private_system_bus(folder: Path, sockets: Path) -> Iterator[str]:
    """A dbus-daemon of our own, configured as a system bus; yields its address.

    Its socket goes into ``sockets``, a short path (a unix socket path
    longer than about 100 bytes is refused).
    """
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = sockets / "dbus"
    conf = folder / "bus.conf"
    conf.write_text(_BUS_CONF.format(socket=socket_path))
    log = folder / "dbus.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            ["dbus-daemon", "--config-file", str(conf), "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dbus-daemon did not start: {log.read_text()}")
            time.sleep(0.02)
        yield f"unix:path={socket_path}"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a process this bench started, by its pid: SIGTERM, SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _vmhwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rauc_tool(world: World, bus: str, *, zstd: bool) -> Tool:
    """rauc install of a signed plain bundle through a fresh rauc service each round."""
    folder = world.work / ("rauc-zstd" if zstd else "rauc")
    content = folder / "content"
    content.mkdir(parents=True)
    os.link(world.image, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={COMPATIBLE}\nversion={VERSION_NEW}\n\n"
        "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
    )
    bundle = folder / "update.raucb"
    extra = ["--mksquashfs-args=-comp zstd"] if zstd else []
    run_checked(
        ["rauc", "bundle", f"--cert={world.cert}", f"--key={world.key}", *extra,
         str(content), str(bundle)]
    )  # fmt: skip
    shutil.rmtree(content)
    (folder / "mnt").mkdir()
    conf = folder / "system.conf"
    conf.write_text(
        f"[system]\ncompatible={COMPATIBLE}\nbootloader=noop\n"
        f"mountprefix={folder / 'mnt'}\nstatusfile={folder / 'status.raucs'}\n\n"
        f"[keyring]\npath={world.cert}\n\n"
        f"[slot.rootfs.0]\ndevice={world.dev_a}\ntype=ext4\nbootname=A\n\n"
        f"[slot.rootfs.1]\ndevice={world.dev_b}\ntype=ext4\nbootname=B\ninstall-same=true\n"
    )
    env = {**world.env, "DBUS_SYSTEM_BUS_ADDRESS": bus}

    def service_up() -> bool:
        probe = subprocess.run(
            ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner",
             "string:de.pengutronix.rauc"],
            capture_output=True, text=True, env=env, check=False, timeout=10,
        )  # fmt: skip
        return "boolean true" in probe.stdout

    def run() -> tuple[Timed, int | None]:
        log = (folder / "service.log").open("ab")
        service = subprocess.Popen(
            ["rauc", "-c", str(conf), "service", "--override-boot-slot=A"],
            stdout=log,
            stderr=log,
            env=env,
        )
        try:
            deadline = time.monotonic() + 10
            while not service_up():
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"rauc service did not start; see {folder / 'service.log'}")
                time.sleep(0.05)
            result = timed(["rauc", "-c", str(conf), "install", str(bundle)], env=env)
            hwm = _vmhwm(service.pid)
        finally:
            stop(service)
            log.close()
        if result.returncode != 0 or "succeeded" not in result.output:
            raise SystemExit(f"rauc install failed ({result.returncode}):\n{result.output}")
        # The service does the work; the client only waits for its D-Bus signals.
        result.tree_rss = max(result.tree_rss, hwm or 0)
        return result, hwm

    return make_tool("rauc", zstd=zstd, run=run)


def swupdate_tool(world: World, *, zstd: bool) -> Tool:
    """swupdate -d streaming a signed .swu over HTTP into the raw slot."""
    folder = world.work / ("swu-zstd" if zstd else "swu")
    folder.mkdir()
    image = folder / "rootfs.ext4"
    if zstd:
        run_checked(["zstd", "-q", "-f", "-3", "-T0", str(world.image), "-o", str(image)])
    else:
        os.link(world.image, image)
    compressed = '\n\t\t\tcompressed = "zstd";' if zstd else ""
    (folder / "sw-description").write_text(
        "software =\n{\n"
        f'\tversion = "{VERSION_NEW}";\n'
        f'\thardware-compatibility = [ "{HW_REV}" ];\n'
        "\timages: (\n\t\t{\n"
        '\t\t\tfilename = "rootfs.ext4";\n'
        f'\t\t\tdevice = "{world.dev_b}";\n'
        '\t\t\ttype = "raw";\n'
        f'\t\t\tsha256 = "{sha256_file(image)}";\n'
        f"\t\t\tinstalled-directly = true;{compressed}\n"
        "\t\t}\n\t);\n}\n"
    )
    run_checked(
        ["openssl", "cms", "-sign", "-in", "sw-description", "-out", "sw-description.sig",
         "-signer", str(world.cert), "-inkey", str(world.key), "-outform", "DER",
         "-nosmimecap", "-binary"],
        cwd=folder,
    )  # fmt: skip
    name = "update-zstd.swu" if zstd else "update.swu"
    with (world.work / "www" / name).open("wb") as out:
        # sw-description first, its signature second, then the images (SWUpdate's order).
        proc = subprocess.run(
            ["cpio", "-o", "-H", "crc", "--quiet"],
            input=b"sw-description\nsw-description.sig\nrootfs.ext4\n",
            stdout=out, stderr=subprocess.PIPE, cwd=folder, check=False, timeout=RUN_TIMEOUT,
        )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"cpio failed: {proc.stderr.decode(errors='replace')}")
    shutil.rmtree(folder)
    # SWUpdate puts its IPC sockets in TMPDIR: a private one keeps it off /tmp's
    # (a short path: unix socket paths are limited to about 100 bytes).
    tmp = world.sockets / ("swupdate-zstd" if zstd else "swupdate")
    tmp.mkdir()
    env = {**world.env, "TMPDIR": str(tmp)}
    argv = ["swupdate", "-k", str(world.cert), "-H", f"{HW_BOARD}:{HW_REV}",
            "-d", f"-u {world.base_url}/{name}"]  # fmt: skip

    def run() -> tuple[Timed, int | None]:
        result = timed(argv, env=env, done_marker="SWUPDATE successful")
        if result.returncode != 0 or result.done is None:
            raise SystemExit(f"swupdate failed ({result.returncode}):\n{result.output}")
        return result, None

    return make_tool("swupdate", zstd=zstd, run=run)


# --------------------------------------------------------------------------- report


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def summarize(tools: list[Tool], runs: list[Run]) -> dict[str, dict[str, float | None]]:
    """Per tool: median, min, max (of the install time), peak RSS over the rounds."""
    out: dict[str, dict[str, float | None]] = {}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool.name]
        times = [r.install for r in mine]
        owns = [r.own_rss for r in mine if r.own_rss is not None]
        out[tool.name] = {
            "median": statistics.median(times),
            "min": min(times),
            "max": max(times),
            "exit_median": statistics.median(r.elapsed for r in mine),
            "tree_rss": float(max(r.tree_rss for r in mine)),
            "own_rss": float(max(owns)) if owns else None,
        }
    return out


def ratio_pairs(tools: list[Tool]) -> list[tuple[str, str]]:
    """(agent, peer) pairs: each agent variant against every peer, and now against @base."""
    names = {t.name for t in tools}
    agents = [t.name for t in tools if t.kind.startswith("kubesolo-update")]
    peers = [t.name for t in tools if not t.kind.startswith("kubesolo-update")]
    pairs = [(a, p) for a in agents if "@base" not in a for p in peers]
    for a in agents:
        base = a.replace("kubesolo-update", "kubesolo-update@base", 1)
        if "@base" not in a and base in names:
            pairs.append((a, base))
    return pairs


def print_report(
    args: argparse.Namespace, world: World, tools: list[Tool], runs: list[Run], loads: list[float]
) -> dict[str, object]:
    summary = summarize(tools, runs)
    pairs = ratio_pairs(tools)
    print(
        f"\nimage {args.size_mib} MiB ext4 ({world.image_sha[:12]}), slots {world.slot_size // MIB}"
        f" MiB loop devices ({world.dev_a}, {world.dev_b}), {args.rounds} round(s), "
        f"load average {loads[0]:.2f} before, {loads[-1]:.2f} after"
    )
    print("\nper round (s; SWUpdate: until it reported success), ratio = agent / peer:")
    for number in range(args.rounds):
        mine = {r.tool: r for r in runs if r.round == number}
        times = "  ".join(f"{name} {mine[name].install:5.2f}" for name in mine)
        ratios = "  ".join(
            f"{a}/{p} {mine[a].install / mine[p].install:.2f}" for a, p in pairs if a in mine
        )
        print(f"  round {number + 1} (load {mine[next(iter(mine))].load1:.2f}): {times}")
        print(f"           {ratios}")
    print(
        f"\n{'tool':28} {'median':>7} {'min':>7} {'max':>7} {'exit':>6} "
        f"{'peak RSS MiB':>12} {'own':>6}  verifies"
    )
    for tool in tools:
        s = summary[tool.name]
        print(
            f"{tool.name:28} {s['median']:7.2f} {s['min']:7.2f} {s['max']:7.2f} "
            f"{s['exit_median']:6.2f} {_mib(s['tree_rss']):>12} {_mib(s['own_rss']):>6}  "
            f"{VERIFIES[tool.kind]}"
        )
    print(
        "  (exit: median time to process exit; peak RSS: the largest process of the tree, "
        "wait4; own: the agent's Python process alone / RAUC's service)"
    )
    print("\nratios of medians (agent / peer):")
    ratios = {}
    for a, p in pairs:
        value = summary[a]["median"] / summary[p]["median"]  # type: ignore[operator]
        per_round = [
            next(r for r in runs if r.tool == a and r.round == n).install
            / next(r for r in runs if r.tool == p and r.round == n).install
            for n in range(args.rounds)
        ]
        ratios[f"{a} / {p}"] = value
        print(
            f"  {a:28} / {p:25} {value:5.2f}   (median of per-round ratios "
            f"{statistics.median(per_round):.2f})"
        )
    ok = all(r.sha_ok for r in runs)
    print(
        f"\nslot re-read after every run: {'SHA-256 ok' if ok else 'MISMATCH'} ({len(runs)} runs)"
    )
    return {
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "load": loads,
        "image_sha256": world.image_sha,
        "verifies": VERIFIES,
        "runs": [asdict(r) for r in runs],
        "summary": summary,
        "ratios": ratios,
        "all_sha_ok": ok,
    }


# --------------------------------------------------------------------------- breakdown

#: the write pipeline proper (what bench/apply_throughput.py times); the rest is "outside"
PIPELINE = ("open image (HTTP request)", "write pipeline (stream, write, read back)")


def breakdown(tool: Tool, runs: int, dev_b: str) -> dict[str, Any]:
    """Where one ``apply`` spends its time: medians over ``runs`` traced runs, in ms."""
    assert tool.traced is not None
    per_run: list[dict[str, float]] = []
    order: dict[str, tuple[float, int, float]] = {}  # label -> (first start, depth, calls)
    for _ in range(runs):
        run_checked(["blkdiscard", "-f", dev_b])
        drop_caches(dev_b)
        doc = tool.traced(False)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        top = 0.0
        for label, start, duration, depth in doc["events"]:
            sums[label] = sums.get(label, 0.0) + duration
            counts[label] = counts.get(label, 0) + 1
            if depth == 0:
                top += duration
            first = order.get(label)
            if first is None or start < first[0]:
                order[label] = (start, depth, counts[label])
            else:
                order[label] = (first[0], first[1], max(first[2], counts[label]))
        sums["interpreter start (exec to the first line)"] = doc["t0_wall"] - doc["start_wall"]
        sums["the rest of the CLI (typer, logging set-up, output)"] = doc["exit"] - top
        sums["exit (atexit, interpreter teardown)"] = doc["end_wall"] - doc["t0_wall"] - doc["exit"]
        sums["total"] = doc["end_wall"] - doc["start_wall"]
        sums["outside the pipeline"] = sums["total"] - sum(sums.get(k, 0.0) for k in PIPELINE)
        per_run.append(sums)
    medians = {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in per_run[0]}
    print(f"\nbreakdown of `apply` ({tool.name}), median of {runs} runs, ms:")
    rows = ["interpreter start (exec to the first line)"]
    rows += sorted(order, key=lambda k: order[k][0])
    rows += [
        "the rest of the CLI (typer, logging set-up, output)",
        "exit (atexit, interpreter teardown)",
        "total",
        "outside the pipeline",
    ]
    for label in rows:
        depth = order.get(label, (0.0, 0, 1.0))[1]
        calls = order.get(label, (0.0, 0, 1.0))[2]
        name = ("  " * depth + label + (f" x{calls:g}" if calls > 1 else ""))[:62]
        print(f"  {name:62} {medians.get(label, 0.0) * 1000:8.1f}")
    return {"runs": per_run, "median_ms": {k: v * 1000 for k, v in medians.items()}}


def import_times(tool: Tool) -> dict[str, float]:
    """-X importtime of one apply: the cumulative ms of each top-level import, largest first."""
    assert tool.traced is not None
    doc = tool.traced(True)
    roots: dict[str, float] = {}
    for line in doc["stderr"].splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        raw = line.rsplit("|", 1)[1]
        if raw.startswith(" ") and not raw.startswith("  "):  # depth 0: one space after "|"
            roots[name] = roots.get(name, 0.0) + int(cumulative) / 1000
    total = sum(roots.values())
    print(f"\n-X importtime of `apply` ({tool.name}): {total:.1f} ms in top-level imports")
    for name, ms in sorted(roots.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {name:40} {ms:7.1f}")
    return {"total": total, **roots}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="image size (MiB)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--zstd", action="store_true", help="add the zstd variants")
    parser.add_argument(
        "--signed",
        action="store_true",
        help="add the agent with a signed (TUF) release from a kubesolo-release repository",
    )
    parser.add_argument(
        "--fill", type=float, default=0.75, help="share of the image filled with real files"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run the CLI from this source tree (e.g. `git archive main`), tagged @base",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="N",
        help="after the rounds, N traced applies: where the CLI's time goes (ms)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help="where images go (default tmp)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root: loop devices, mounts, cache drops")
    for tool in NEEDED:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run scripts/install-system-deps.sh")

    from tests.contract.nginx import nginx_serving

    size = args.size_mib * MIB
    # preflight wants 10 % headroom on the passive slot
    slot_size = -(-int(size * 1.125) // MIB) * MIB
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
    }
    with (
        tempfile.TemporaryDirectory(prefix="kubesolo-peers-", dir=args.workdir) as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        (work / "www").mkdir()
        print(f"building the {args.size_mib} MiB image in {work} ...", file=sys.stderr)
        image = work / "image.img"
        image_sha, files = make_ext4_image(image, size, VERSION_NEW, fill=args.fill)
        os.link(image, work / "www" / "image.img")
        print(f"  {files} files from {', '.join(FILE_SOURCES)}", file=sys.stderr)
        slot_a_image = work / "slot-a.factory"
        make_ext4_image(slot_a_image, 8 * MIB, VERSION_OLD, fill=0)
        dev_a = stack.enter_context(loop_device(work / "slot-a.img", slot_size))
        dev_b = stack.enter_context(loop_device(work / "slot-b.img", slot_size))
        with Path(dev_a).open("r+b") as fh:
            fh.write(slot_a_image.read_bytes())
        server = stack.enter_context(nginx_serving(work / "www", work / "nginx"))
        cert, key = make_signer(work)
        sockets = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ksb-")))
        world = World(
            work=work, size=size, slot_size=slot_size, image=image, image_sha=image_sha,
            dev_a=dev_a, dev_b=dev_b, base_url=server.url().rstrip("/"), cert=cert, key=key,
            env=base_env, sockets=sockets,
        )  # fmt: skip
        bus = stack.enter_context(private_system_bus(work / "dbus", world.sockets))
        tools = [
            agent_tool(world, stack, zstd=False),
            rauc_tool(world, bus, zstd=False),
            swupdate_tool(world, zstd=False),
        ]
        if args.zstd:
            tools += [
                agent_tool(world, stack, zstd=True),
                rauc_tool(world, bus, zstd=True),
                swupdate_tool(world, zstd=True),
            ]
        if args.signed:
            tools.append(agent_tool(world, stack, zstd=False, signed=True))
            if args.zstd:
                tools.append(agent_tool(world, stack, zstd=True, signed=True))
        if args.baseline_src:
            base = args.baseline_src.resolve()
            tools.append(agent_tool(world, stack, zstd=False, src=base, tag="@base"))
            if args.zstd:
                tools.append(agent_tool(world, stack, zstd=True, src=base, tag="@base"))
        for tool in tools:
            if tool.kind == "rauc":
                bundle = work / ("rauc-zstd" if tool.variant == "zstd" else "rauc")
                print(
                    f"  {tool.name} bundle: {(bundle / 'update.raucb').stat().st_size / MIB:.1f}"
                    " MiB",
                    file=sys.stderr,
                )
        loads = [os.getloadavg()[0]]
        runs: list[Run] = []
        for number in range(args.rounds):
            order = tools[number % len(tools) :] + tools[: number % len(tools)]
            for tool in order:
                run_checked(["blkdiscard", "-f", dev_b])
                drop_caches(dev_b)
                load1 = os.getloadavg()[0]
                result, own = tool.run()
                ok = slot_sha256(dev_b, size) == image_sha
                install = result.done if result.done is not None else result.elapsed
                runs.append(
                    Run(
                        tool=tool.name, round=number, elapsed=result.elapsed, install=install,
                        tree_rss=result.tree_rss, own_rss=own, sha_ok=ok, load1=load1,
                    )
                )  # fmt: skip
                print(
                    f"  round {number + 1} {tool.name:28} {install:6.2f} s "
                    f"(exit {result.elapsed:5.2f} s) rss {_mib(result.tree_rss)} MiB "
                    f"slot {'ok' if ok else 'MISMATCH'}",
                    file=sys.stderr,
                )
        loads.append(os.getloadavg()[0])
        report = print_report(args, world, tools, runs, loads) if runs else {"all_sha_ok": True}
        if args.breakdown:
            for tool in tools:
                if tool.traced is not None and tool.variant == "none":
                    report[f"breakdown {tool.name}"] = {
                        **breakdown(tool, args.breakdown, dev_b),
                        "imports": import_times(tool),
                    }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if report["all_sha_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
