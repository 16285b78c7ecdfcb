"""Benchmark: adaptive (chunked) apply against a full apply and casync, side by side in one run.

Not a test: run it by hand (root: loop devices, a loop mount, cache drops):

    sudo .venv/bin/python bench/adaptive.py [--size-mib 512] [--rate-mb 10] [--workdir DIR]

The images (bench/ext4pair.py): release 1 is mkfs.ext4 -d over real files of
/usr; release 2 is release 1 loop-mounted with real files replaced, added and
deleted (dpkg style), about 5% of its 4 KiB blocks changed. Both are
published into one chunk store (kubesolo_adapters.chunkstore, zstd -10) and,
for casync, into one casync store (``casync make``, its defaults: 64 KiB
average chunks, zstd). A private nginx on 127.0.0.1 serves everything,
directly (loopback) or behind ``bench/link.py``, a proxy that limits all
connections together to ``--rate-mb`` MB/s (one shared link; nginx's own
``limit_rate`` would give each of the agent's connections the full rate).

Slots are loop devices over files. Slot A (booted) holds release 1. Each row
starts from dropped page caches and slot B holding release 1 (the previous
release) or zeros (a fresh slot), and ends with slot B checked against
release 2's SHA-256. Rows:

* full, raw / full, zstd: the agent without an index (HttpFetcher ->
  BlockSlotStore.write_image, read-back included), image uncompressed or zstd -10;
* adaptive: the agent with the index (HttpChunkSource + BlockChunkedSlots,
  read-back included);
* casync: ``casync extract --seed=<slot A> --store=URL INDEX <slot B>``.

Downloaded bytes are what nginx sent (its access log, bodies only), written
bytes what the process dirtied (/proc/<pid>/io write_bytes via rusage), peak
memory the process's max RSS. Goals (issue 13): downloaded <= 1.25x and
written <= 1.5x the changed fraction; over the link, adaptive <= 15% of the
full apply's time; on loopback, not slower than full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apply_throughput import drop_caches, loop_device  # noqa: E402
from bench.ext4pair import BLOCK, MIB, build_pair, sha256_file  # noqa: E402
from bench.link import SlowLink  # noqa: E402

# --------------------------------------------------------------------------- child: one apply


def child(release_url: str, dev_a: str, dev_b: str, adaptive: str) -> None:
    """Run one apply in this (fresh) process; print elapsed seconds and its figures as JSON."""
    from kubesolo_adapters.blockdev import BlockSlotStore
    from kubesolo_adapters.chunkfetch import HttpChunkSource
    from kubesolo_adapters.chunkwriter import BlockChunkedSlots
    from kubesolo_adapters.fakes import (
        MemoryBootEnv,
        MemoryClock,
        MemoryKube,
        MemoryProbes,
        MemoryStateStore,
    )
    from kubesolo_adapters.http import HttpFetcher
    from kubesolo_core.adaptive import AdaptiveUpdater
    from kubesolo_core.bootmodel import GrubModel
    from kubesolo_core.services import Agent
    from kubesolo_core.slots import Slot

    slots = BlockSlotStore({Slot.A: dev_a, Slot.B: dev_b})
    phases: dict[str, float] = {}

    def timed(owner: Any, name: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.monotonic()
            try:
                return inner(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.monotonic() - t

        setattr(owner, name, wrapper)

    from kubesolo_adapters import chunkwriter

    timed(BlockChunkedSlots, "survey")
    timed(BlockChunkedSlots, "write_plan")
    timed(BlockSlotStore, "write_image")
    # The chunked writer's read-back (the full writer's overlaps its stream: no phase of its own).
    timed(chunkwriter, "read_back")
    model = GrubModel()
    agent = Agent(
        boot_env=MemoryBootEnv(model=model, env=model.initial(Slot.A)),
        slots=slots,
        fetcher=HttpFetcher(),
        kube=MemoryKube(),
        probes=MemoryProbes(),
        clock=MemoryClock(),
        store=MemoryStateStore(),
        server=release_url,
        adaptive=(
            AdaptiveUpdater(source=HttpChunkSource(), slots=BlockChunkedSlots(slots))
            if adaptive == "yes"
            else None
        ),
    )
    start = time.monotonic()
    result = agent.apply(force=True)
    elapsed = time.monotonic() - start
    stats = result.stats
    assert stats is not None
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "mode": stats.mode,
                "fallback": stats.fallback,
                "in_place": stats.in_place,
                "copied": stats.copied,
                "written": stats.written,
                "requests": stats.requests,
                "phases": phases,
                "vmhwm": _vmhwm(os.getpid()),
            }
        )
    )


# --------------------------------------------------------------------------- plumbing


def _vmhwm(pid: int) -> int:
    """Peak RSS of a process since its exec (VmHWM), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fill_slot(dev: str, source: Path | None, size: int) -> None:
    """Put ``source`` (or zeros) on the device, durably."""
    with Path(dev).open("r+b", buffering=0) as out:
        if source is None:
            zero = bytes(4 * MIB)
            for _ in range(size // len(zero)):
                out.write(zero)
        else:
            with source.open("rb") as src:
                while chunk := src.read(4 * MIB):
                    out.write(chunk)
        os.fsync(out.fileno())


def device_sha(dev: str, size: int) -> str:
    digest = hashlib.sha256()
    with Path(dev).open("rb") as fh:
        left = size
        while left:
            chunk = fh.read(min(4 * MIB, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def run_measured(argv: list[str]) -> tuple[str, float, int, int]:
    """Run ``argv``: its stdout, wall seconds, bytes it dirtied and its peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        peak = 0
        while True:  # VmHWM only grows: the last sample before the exit is the peak
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            peak = max(peak, _vmhwm(proc.pid))
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(
                f"{argv[0]} failed ({proc.returncode}):\n{err.read().decode()[-2000:]}"
            )
        # (ru_maxrss would count the bench's own pages the child shared before its exec)
        return out.read().decode(), elapsed, usage.ru_oublock * 512, peak


def nginx_bytes(log: Path, start: int) -> tuple[int, int]:
    """Body bytes sent and requests logged since byte ``start`` of the access log.

    The log format of tests/contract/nginx.py: status "range" bytes uri.
    """
    total = requests = 0
    if not log.exists():
        return 0, 0
    with log.open() as fh:
        fh.seek(start)
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                total += int(parts[2])
                requests += 1
    return total, requests


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rate-mb", type=float, default=10.0, help="link rate, MB/s (10^6)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--skip-raw-on-link", action="store_true", help="skip the slow uncompressed full row"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs per row, the fastest kept")
    parser.add_argument(
        "--only", default="", help="comma list of row kinds: full-raw,full-zstd,adaptive,casync"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: loop devices, a loop mount, cache drops")
    for tool in ("casync", "zstd", "mkfs.ext4", "losetup"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/install-system-deps.sh installs it)")

    from kubesolo_adapters.chunkstore import publish_chunks
    from tests.contract.nginx import start_nginx

    work = Path(tempfile.mkdtemp(prefix="kubesolo-adaptive-", dir=args.workdir))
    try:
        t0 = time.monotonic()
        pair = build_pair(work, size_mib=args.size_mib)["inplace"]
        size = pair.size
        changed = pair.changed_blocks * BLOCK
        print(
            f"images: {args.size_mib} MiB ext4, {pair.changed_blocks} of {pair.total_blocks} "
            f"4 KiB blocks changed ({pair.changed_fraction:.2%} = {changed / MIB:.1f} MiB; "
            f"{pair.files_replaced} files replaced, {pair.files_added} added, "
            f"{pair.files_deleted} deleted), built in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        www = work / "www"
        www.mkdir()
        old, new = www / "os-1.0.0.img", www / "os-1.1.0.img"
        pair.old.replace(old)
        pair.new.replace(new)
        pair.new.with_name("release-1.1.0-rebuilt.img").unlink(missing_ok=True)
        new_sha = sha256_file(new)
        t0 = time.monotonic()
        publish_chunks(old, www, level=10)
        t1 = time.monotonic()
        pub = publish_chunks(new, www, level=10)
        t2 = time.monotonic()
        print(
            f"chunk store: release 1 in {t1 - t0:.0f} s, release 2 in {t2 - t1:.0f} s "
            f"({pub.new_chunks} new chunk files, {pub.new_bytes / MIB:.1f} MiB); "
            f"index {pub.index_size / 1024:.0f} KiB for {pub.chunks} chunks",
            flush=True,
        )
        subprocess.run(
            ["zstd", "-q", "-10", "-T2", "-f", str(new), "-o", str(www / "os-1.1.0.img.zst")],
            check=True,
        )
        zst_size = (www / "os-1.1.0.img.zst").stat().st_size
        zst_sha = sha256_file(www / "os-1.1.0.img.zst")
        t0 = time.monotonic()
        for img, idx in ((old, "os-1.0.0.caibx"), (new, "os-1.1.0.caibx")):
            subprocess.run(
                ["casync", "make", "--store", str(www / "default.castr"), str(www / idx), str(img)],
                check=True, capture_output=True,
            )  # fmt: skip
        print(f"casync store: both releases in {time.monotonic() - t0:.0f} s", flush=True)
        raw_image = {"url": new.name, "sha256": new_sha, "size": size}
        docs = {
            "full-raw": {"image": raw_image},
            "full-zstd": {
                "image": {
                    "url": "os-1.1.0.img.zst",
                    "sha256": zst_sha,
                    "size": zst_size,
                    "compression": "zstd",
                    "raw_size": size,
                    "raw_sha256": new_sha,
                }
            },
            "adaptive": {"image": {**raw_image, "chunks": pub.spec(www)}},
        }
        for name, doc in docs.items():
            (www / f"{name}.json").write_text(
                json.dumps({"schema": 1, "version": "1.1.0", **doc}, indent=2)
            )
        server = start_nginx(www, work / "nginx")
        access = work / "nginx" / "access.log"
        port = server.port
        link = SlowLink(port, args.rate_mb * 1e6)
        rows: list[dict[str, object]] = []
        try:
            with (
                loop_device(work / "A.img", size + 64 * MIB) as dev_a,
                loop_device(work / "B.img", size + 64 * MIB) as dev_b,
            ):
                fill_slot(dev_a, old, size)
                links = [("loopback", f"http://127.0.0.1:{port}/"), ("link", link.url("/"))]
                for link_name, base in links:
                    cases = [
                        ("full, raw image", "full-raw", "previous"),
                        ("full, zstd image", "full-zstd", "previous"),
                        ("adaptive", "adaptive", "previous"),
                        ("adaptive, B zeroed", "adaptive", "zeros"),
                        ("casync --seed", "casync", "previous"),
                        ("casync --seed, B zeroed", "casync", "zeros"),
                    ]
                    for label, kind, passive in cases:
                        if link_name == "link" and kind == "full-raw" and args.skip_raw_on_link:
                            continue
                        if args.only and kind not in args.only.split(","):
                            continue
                        best: dict[str, object] | None = None
                        for _ in range(args.rounds):
                            fill_slot(dev_b, old if passive == "previous" else None, size)
                            drop_caches(dev_a, dev_b)
                            mark = access.stat().st_size if access.exists() else 0
                            if kind == "casync":
                                argv = [
                                    "casync", "extract", f"--store={base}default.castr",
                                    f"--seed={dev_a}", f"{base}os-1.1.0.caibx", dev_b,
                                ]  # fmt: skip
                                _, elapsed, written, rss = run_measured(argv)
                                figures: dict[str, object] = {}
                            else:
                                argv = [
                                    sys.executable, __file__, "--child", f"{base}{kind}.json",
                                    dev_a, dev_b, "yes" if kind == "adaptive" else "no",
                                ]  # fmt: skip
                                out, elapsed, written, rss = run_measured(argv)
                                figures = json.loads(out.strip().splitlines()[-1])
                                elapsed = float(figures["elapsed"])  # type: ignore[arg-type]
                                rss = max(rss, int(figures["vmhwm"]))  # type: ignore[call-overload]
                            time.sleep(0.3)  # nginx writes its log line when a request ends
                            sent, requests = nginx_bytes(access, mark)
                            ok = device_sha(dev_b, size) == new_sha
                            row = {
                                "link": link_name,
                                "case": label,
                                "kind": kind,
                                "seconds": elapsed,
                                "downloaded": sent,
                                "requests": requests,
                                "written": figures.get("written", written),
                                "dirtied": written,
                                "rss": rss,
                                "ok": ok,
                                "mode": figures.get("mode", "casync"),
                            }
                            if best is None or elapsed < float(best["seconds"]):  # type: ignore[arg-type]
                                best = row
                            phases = figures.get("phases") or {}
                            print(
                                f"  {link_name:8} {label:24} {elapsed:7.2f} s  "
                                f"{sent / MIB:8.1f} MiB in {requests:5d} requests  "
                                f"{'ok' if ok else 'WRONG CONTENT'}  "
                                + " ".join(f"{k} {v:.2f}" for k, v in phases.items()),  # type: ignore[union-attr]
                                flush=True,
                            )
                        assert best is not None
                        rows.append(best)
        finally:
            link.close()
            server.stop()

        print(
            f"\nrelease 2 vs 1: {changed / MIB:.1f} MiB of {size / MIB:.0f} MiB changed "
            f"({pair.changed_fraction:.2%}); link {args.rate_mb:g} MB/s shared by all connections"
        )
        print(
            f"{'link':9}{'case':26}{'time s':>8}{'vs full':>9}{'down MiB':>10}{'x chg':>7}"
            f"{'reqs':>6}{'written MiB':>12}{'x chg':>7}{'RSS MiB':>9}"
        )
        full_time = {r["link"]: r["seconds"] for r in rows if r["kind"] == "full-zstd"}
        full_raw = {r["link"]: r["seconds"] for r in rows if r["kind"] == "full-raw"}
        for r in rows:
            secs = float(r["seconds"])  # type: ignore[arg-type]
            down = int(r["downloaded"])  # type: ignore[call-overload]
            wrote = int(r["written"])  # type: ignore[call-overload]
            base_t = float(full_time.get(r["link"], 0.0))  # type: ignore[arg-type]
            print(
                f"{r['link']:9}{r['case']:26}{secs:8.2f}"
                f"{secs / base_t if base_t else 0:9.2f}"
                f"{down / MIB:10.1f}{down / changed:7.2f}{r['requests']:>6}"
                f"{wrote / MIB:12.1f}{wrote / changed:7.2f}{int(r['rss']) / MIB:9.1f}"  # type: ignore[call-overload]
                + ("" if r["ok"] else "  WRONG CONTENT")
            )
        print(
            "\n'vs full' = time / the full zstd apply's time over the same link; the full raw "
            "row's own ratio to it is shown too. 'x chg' = bytes / changed bytes. 'written' is "
            "what the agent wrote (its stats) and, for casync, what it dirtied (rusage)."
        )
        ad = {r["link"]: r for r in rows if r["case"] == "adaptive"}
        for link_name in ("loopback", "link"):
            a = ad.get(link_name)
            if not a:
                continue
            t = float(a["seconds"])  # type: ignore[arg-type]
            print(
                f"goal {link_name}: adaptive {t:.2f} s = "
                f"{t / float(full_time.get(link_name, t)):.2f} x "  # type: ignore[arg-type]
                f"full zstd"
                + (
                    f", {t / float(full_raw[link_name]):.2f} x full raw"  # type: ignore[arg-type]
                    if link_name in full_raw
                    else ""
                )
            )
        a = ad.get("loopback") or ad["link"]
        print(
            f"goal downloaded <= 1.25 x changed: {int(a['downloaded']) / changed:.2f} x; "  # type: ignore[call-overload]
            f"written <= 1.5 x changed: {int(a['written']) / changed:.2f} x"  # type: ignore[call-overload]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
