"""Benchmark: the apply pipeline against `curl | dd` on a real loop device, plus peak memory.

Not a test: run it by hand (root: loop devices, cache drops) and read the table.

    sudo .venv/bin/python bench/apply_throughput.py --size-mib 512 --mem-sizes 256,1024

(A) HttpFetcher.open_image -> BlockSlotStore.write_image, including its
    fsync, cache drop and read-back SHA-256 verification, run in a child
    process so its RSS high-water mark (VmHWM) is its own.
(B) `curl -s URL | dd of=/dev/loopN bs=4M conv=fsync`, then the same cache
    drop (BLKFLSBUF via `blockdev --flushbufs`) and `sha256sum /dev/loopN`.

The image is served by a private nginx on 127.0.0.1 (tests/contract/nginx.py)
and written to a loop device of the same size (direct I/O on the backing
file when the kernel allows it, so writes and the read-back reach the disk
rather than a second page cache). Page caches are dropped before each run
(/proc/sys/vm/drop_caches when writable, else fadvise + BLKFLSBUF).
Targets (issue 3): time ratio A/B <= 1.3; peak RSS of A flat, <= 64 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
BLKFLSBUF = 0x1261


# --------------------------------------------------------------------------- fixtures


def make_image(path: Path, size_mib: int) -> str:
    """A random 1 MiB block repeated with a per-MiB counter: cheap, and does not compress away."""
    block = bytearray(os.urandom(MIB))
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for n in range(size_mib):
            block[:8] = n.to_bytes(8, "little")
            block[MIB // 2 : MIB // 2 + 8] = (n * 2654435761).to_bytes(8, "little")
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


@contextlib.contextmanager
def loop_device(backing: Path, size: int) -> Iterator[str]:
    """A loop device over a fresh ``size``-byte file; always detached afterwards."""
    with backing.open("wb") as fh:
        fh.truncate(size)
    dev = ""
    for flags in (["--direct-io=on"], []):
        proc = subprocess.run(
            ["losetup", "-f", "--show", *flags, str(backing)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            dev = proc.stdout.strip()
            break
    if not dev:
        raise SystemExit(f"losetup failed: {proc.stderr.strip()}")
    try:
        yield dev
    finally:
        for _ in range(20):
            if subprocess.run(["losetup", "-d", dev], check=False).returncode == 0:
                break
            time.sleep(0.1)
        backing.unlink(missing_ok=True)


def drop_caches(*paths: str) -> str:
    """Drop the page cache: globally when allowed, else per file/device."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass
    else:
        return "drop_caches"
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, BLKFLSBUF, 0)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fadvise+BLKFLSBUF"


# --------------------------------------------------------------------------- (A) in a child


def make_sparse_zstd(path: Path, size_mib: int) -> tuple[str, str, int]:
    """A mostly-zero image (a fresh filesystem's look) compressed by the zstd tool.

    Returns (raw SHA-256, served SHA-256, served size). Such an image
    compresses thousands to one: the case where an unbounded decompress of
    one network chunk would need gigabytes.
    """
    raw = path.with_suffix(".raw")
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    zero = bytes(MIB)
    with raw.open("wb") as fh:
        for n in range(size_mib):
            data = block if n % 64 == 0 else zero
            digest.update(data)
            fh.write(data)
    subprocess.run(["zstd", "-q", "-f", "-3", str(raw), "-o", str(path)], check=True)
    raw.unlink()
    served = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest.hexdigest(), served, path.stat().st_size


def child_apply(url: str, device: str, size: int, sha: str, *, chunk_mib: int, zstd: str) -> None:
    """Run the pipeline once; print elapsed seconds and memory figures as JSON."""
    from kubesolo_adapters.blockdev import BlockSlotStore
    from kubesolo_adapters.http import HttpFetcher
    from kubesolo_core.release import ImageSpec
    from kubesolo_core.slots import Slot

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    baseline = status("VmRSS")
    if zstd:  # "served_sha:served_size"
        served_sha, served_size = zstd.split(":")
        image = ImageSpec(
            url=url,
            sha256=served_sha,
            size=int(served_size),
            compression="zstd",
            raw_size=size,
            raw_sha256=sha,
        )
    else:
        image = ImageSpec(
            url=url, sha256=sha, size=size, compression="none", raw_size=size, raw_sha256=sha
        )
    fetcher = HttpFetcher(connect_timeout=5, read_timeout=30, chunk_size=MIB)
    store = BlockSlotStore({Slot.B: device}, chunk_size=chunk_mib * MIB)
    start = time.monotonic()
    result = store.write_image(Slot.B, fetcher.open_image(url, image), image)
    elapsed = time.monotonic() - start
    assert result.raw_sha256 == sha
    import resource

    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "vmhwm": status("VmHWM"),
                "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "baseline_rss": baseline,
            }
        )
    )


def run_a(
    url: str, device: str, size: int, sha: str, *, chunk_mib: int, zstd: str = ""
) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, device, str(size), sha, str(chunk_mib), zstd],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"(A) failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- (B) curl | dd


def run_b(url: str, device: str, sha: str) -> float:
    start = time.monotonic()
    pipeline = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f'curl -s "{url}" | dd of={device} bs=4M conv=fsync status=none',
        ],
        check=False,
    )
    if pipeline.returncode != 0:
        raise SystemExit("(B) curl | dd failed")
    subprocess.run(["blockdev", "--flushbufs", device], check=True)
    out = subprocess.run(
        ["sha256sum", device], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    elapsed = time.monotonic() - start
    if out != sha:
        raise SystemExit(f"(B) sha256sum {out} != {sha}")
    return elapsed


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="image size for the A/B timing")
    parser.add_argument(
        "--mem-sizes", default="256,1024", help="image sizes (MiB) for the memory runs; '' = none"
    )
    parser.add_argument(
        "--sparse-mib",
        type=int,
        default=1024,
        help="a mostly-zero zstd image of this size for a memory run (0 = skip)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="A/B pairs to time (best kept)")
    parser.add_argument("--chunk-mib", type=int, default=4, help="BlockSlotStore chunk size")
    parser.add_argument("--workdir", type=Path, default=None, help="where images go (default tmp)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: loop devices and cache drops")

    from tests.contract.nginx import start_nginx

    with tempfile.TemporaryDirectory(prefix="kubesolo-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        server = start_nginx(www, work / "nginx")
        try:
            print(f"nginx on {server.url()} (pid {server.proc.pid})", file=sys.stderr)
            size = args.size_mib * MIB
            sha = make_image(www / "image.img", args.size_mib)
            url = server.url("image.img")
            times_a: list[float] = []
            times_b: list[float] = []
            hwm_a = 0.0
            with loop_device(work / "slot.img", size) as dev:
                for _ in range(args.rounds):
                    how = drop_caches(str(www / "image.img"), dev)
                    a = run_a(url, dev, size, sha, chunk_mib=args.chunk_mib)
                    times_a.append(a["elapsed"])
                    hwm_a = max(hwm_a, a["vmhwm"])
                    drop_caches(str(www / "image.img"), dev)
                    times_b.append(run_b(url, dev, sha))
            best_a, best_b = min(times_a), min(times_b)
            print(f"\nimage {args.size_mib} MiB, cache drop: {how}, loop {dev}")
            print(
                f"(A) fetcher -> slot writer + read-back verify: {best_a:7.2f} s "
                f"({args.size_mib / best_a:6.1f} MiB/s), peak RSS {hwm_a / MIB:.1f} MiB"
            )
            print(
                f"(B) curl | dd conv=fsync; sha256sum device:    {best_b:7.2f} s "
                f"({args.size_mib / best_b:6.1f} MiB/s)"
            )
            print(f"ratio A/B = {best_a / best_b:.2f} (target <= 1.3)")
            if args.rounds > 1:
                print(
                    f"all rounds: A {[round(t, 2) for t in times_a]}, "
                    f"B {[round(t, 2) for t in times_b]}"
                )

            sizes = [int(s) for s in args.mem_sizes.split(",") if s.strip()]
            if sizes:
                print("\npeak memory of (A) by image size:")
            for mib in sizes:
                (www / "image.img").unlink(missing_ok=True)
                msha = make_image(www / "mem.img", mib)
                with loop_device(work / "mem-slot.img", mib * MIB) as mdev:
                    drop_caches(str(www / "mem.img"), mdev)
                    res = run_a(
                        server.url("mem.img"), mdev, mib * MIB, msha, chunk_mib=args.chunk_mib
                    )
                (www / "mem.img").unlink()
                print(
                    f"  {mib:5d} MiB: VmHWM {res['vmhwm'] / MIB:6.1f} MiB "
                    f"(ru_maxrss {res['ru_maxrss'] / MIB:6.1f} MiB, RSS after imports "
                    f"{res['baseline_rss'] / MIB:5.1f} MiB), {res['elapsed']:6.2f} s "
                    f"-> {'ok' if res['vmhwm'] <= 64 * MIB else 'OVER'} (target <= 64 MiB)"
                )
            if args.sparse_mib:
                zpath = www / "sparse.img.zst"
                raw_sha, served_sha, served_size = make_sparse_zstd(zpath, args.sparse_mib)
                with loop_device(work / "sparse-slot.img", args.sparse_mib * MIB) as zdev:
                    drop_caches(str(zpath), zdev)
                    res = run_a(
                        server.url(zpath.name),
                        zdev,
                        args.sparse_mib * MIB,
                        raw_sha,
                        chunk_mib=args.chunk_mib,
                        zstd=f"{served_sha}:{served_size}",
                    )
                zpath.unlink()
                print(
                    f"  {args.sparse_mib:5d} MiB mostly zeros, zstd ({served_size} bytes served): "
                    f"VmHWM {res['vmhwm'] / MIB:6.1f} MiB, {res['elapsed']:6.2f} s "
                    f"-> {'ok' if res['vmhwm'] <= 64 * MIB else 'OVER'} (target <= 64 MiB)"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, c_url, c_dev, c_size, c_sha, c_chunk, c_zstd = sys.argv
        child_apply(c_url, c_dev, int(c_size), c_sha, chunk_mib=int(c_chunk), zstd=c_zstd)
    else:
        main()
