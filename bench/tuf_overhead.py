"""Benchmark: what signed releases (TUF) cost the agent, against unsigned ones in the same run.

Not a test: run it by hand (root: loop devices, cache drops) and read the table.

    sudo .venv/bin/python bench/tuf_overhead.py --size-mib 512 --rounds 3

One repository made by kubesolo-release (Ed25519, consistent snapshots, the
image uncompressed with its 4 MiB chunk list) is served by a private nginx on
127.0.0.1; beside it, a plain DESIGN.md 5 release document names the very
same image file, for the unsigned runs.

(1) Release lookup, milliseconds (median of --lookups runs):
    cold  = TufFetcher.fetch_release with an empty metadata cache (root,
            timestamp, snapshot, targets, the channel document, the image lookup);
    warm  = the same with the cache of a previous run (timestamp and the
            channel document only);
    plain = HttpFetcher.fetch_release of the unsigned release document.
(2) Apply, seconds: release lookup + stream + write to a loop device + fsync +
    read-back verification, signed (warm cache, each chunk checked before it
    is written) against unsigned, alternating, page caches dropped before
    each run; the best of each side (as bench/apply_throughput.py keeps) and
    the median of the per-round ratios (both sides of a round share its load)
    (goal: signed within 3%).
(3) The stream alone (lookup + fetch + length/hash/chunk checks into nothing):
    the verification's own cost, without the disk's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MIB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="signed/unsigned apply pairs")
    parser.add_argument("--lookups", type=int, default=15, help="release lookups per kind")
    parser.add_argument("--workdir", type=Path, default=None, help="e.g. /dev/shm: no disk noise")
    parser.add_argument("--chunk-kib", type=int, default=4096, help="the publisher's chunk size")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: loop devices and cache drops")

    from apply_throughput import drop_caches, loop_device, make_image

    from kubesolo_adapters.blockdev import BlockSlotStore
    from kubesolo_adapters.http import HttpFetcher
    from kubesolo_adapters.tuf import TufFetcher
    from kubesolo_core.release import parse_release
    from kubesolo_core.slots import Slot
    from kubesolo_entrypoints.publisher.repo import Repository
    from tests.contract.nginx import start_nginx

    with tempfile.TemporaryDirectory(prefix="kubesolo-bench-tuf-", dir=args.workdir) as tmp:
        work = Path(tmp)
        raw = work / "image.raw"
        print(f"making a {args.size_mib} MiB image and a signed repository ...", file=sys.stderr)
        sha = make_image(raw, args.size_mib)
        repo = Repository(work / "publisher")
        repo.init()
        # full images only: this bench compares a signed and an unsigned full apply
        repo.add(
            raw, version="2.0.0", compress="none", chunk_size=args.chunk_kib << 10, chunks=False
        )
        raw.unlink()
        (stored,) = (repo.targets_dir / "images").iterdir()
        size = stored.stat().st_size
        (repo.served / "release.json").write_text(
            json.dumps(
                {
                    "schema": 1,
                    "version": "2.0.0",
                    "image": {"url": f"targets/images/{stored.name}", "sha256": sha, "size": size},
                }
            )
        )
        root = repo.metadata_dir / "1.root.json"
        server = start_nginx(repo.served, work / "nginx")
        try:
            base = server.url()
            http = HttpFetcher(connect_timeout=5, read_timeout=30, chunk_size=MIB)

            def tuf(cache: Path) -> TufFetcher:
                return TufFetcher(trust_root=root, cache_dir=cache, http=http)

            # ---------------------------------------------------------- (1) lookups
            cold, warm, plain = [], [], []
            warm_cache = work / "warm-cache"
            tuf(warm_cache).fetch_release(base)
            for n in range(args.lookups):
                start = time.perf_counter()
                tuf(work / f"cold-{n}").fetch_release(base)
                cold.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                tuf(warm_cache).fetch_release(base)
                warm.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                parse_release(http.fetch_release(base + "release.json"))
                plain.append((time.perf_counter() - start) * 1000)

            # ---------------------------------------------------------- (2) applies
            def apply_once(signed: bool, device: str) -> float:
                store = BlockSlotStore({Slot.B: device})
                drop_caches(device, str(stored))
                start = time.monotonic()
                fetcher = tuf(warm_cache) if signed else http
                url = base if signed else base + "release.json"
                release = parse_release(fetcher.fetch_release(url))
                result = store.write_image(
                    Slot.B, fetcher.open_image(url, release.image), release.image
                )
                elapsed = time.monotonic() - start
                if result.raw_sha256 != sha:
                    raise SystemExit("read-back mismatch")
                return elapsed

            # ---------------------------------------------------------- (3) streams only
            def stream_once(signed: bool) -> float:
                start = time.monotonic()
                fetcher = tuf(warm_cache) if signed else http
                url = base if signed else base + "release.json"
                release = parse_release(fetcher.fetch_release(url))
                for _ in fetcher.open_image(url, release.image):
                    pass
                return time.monotonic() - start

            streams: dict[bool, list[float]] = {True: [], False: []}
            for n in range(2 * args.rounds):
                for signed in (True, False) if n % 2 == 0 else (False, True):
                    streams[signed].append(stream_once(signed))

            times: dict[bool, list[float]] = {True: [], False: []}
            with loop_device(work / "slot.img", size + MIB) as device:
                for n in range(args.rounds):
                    order = (True, False) if n % 2 == 0 else (False, True)
                    for signed in order:
                        times[signed].append(apply_once(signed, device))
                        print(
                            f"  round {n + 1}: {'signed  ' if signed else 'unsigned'} "
                            f"{times[signed][-1]:.2f} s",
                            file=sys.stderr,
                        )
        finally:
            server.stop()

    def ms(values: list[float]) -> str:
        return (
            f"{statistics.median(values):8.1f} ms  (min {min(values):.1f}, max {max(values):.1f})"
        )

    signed_best, unsigned_best = min(times[True]), min(times[False])
    # each round ran both sides back to back: their ratio shares the round's load
    ratios = [s / u for s, u in zip(times[True], times[False], strict=True)]
    load = os.getloadavg()[0]
    print(
        f"\nTUF overhead, {args.size_mib} MiB image, chunks of {args.chunk_kib} KiB, "
        f"{os.cpu_count()} cores, load {load:.1f}"
    )
    print(f"(1) release lookup, median of {args.lookups}:")
    print(f"    TUF cold cache        {ms(cold)}")
    print(f"    TUF warm cache        {ms(warm)}")
    print(f"    unsigned document     {ms(plain)}   <- baseline")
    print(f"(2) apply (lookup + stream + write + fsync + read-back), {args.rounds} rounds:")
    signed_rounds = [round(t, 2) for t in times[True]]
    unsigned_rounds = [round(t, 2) for t in times[False]]
    print(f"    signed (TUF, chunks)  best {signed_best:6.2f} s   rounds {signed_rounds}")
    print(
        f"    unsigned              best {unsigned_best:6.2f} s   rounds {unsigned_rounds}", end=""
    )
    print("   <- baseline")
    print(
        f"    overhead              best/best {(signed_best / unsigned_best - 1) * 100:+.1f} %, "
        f"median of per-round ratios {(statistics.median(ratios) - 1) * 100:+.1f} % "
        "(goal: within 3%)"
    )
    stream_ratios = [s / u for s, u in zip(streams[True], streams[False], strict=True)]
    print(f"(3) stream only (lookup + fetch + checks, no disk), {2 * args.rounds} rounds:")
    print(f"    signed (TUF, chunks)  best {min(streams[True]):6.2f} s")
    print(f"    unsigned              best {min(streams[False]):6.2f} s   <- baseline")
    best_ratio = min(streams[True]) / min(streams[False])
    print(
        f"    overhead              best/best {(best_ratio - 1) * 100:+.1f} %, "
        f"median of per-round ratios {(statistics.median(stream_ratios) - 1) * 100:+.1f} %"
    )


if __name__ == "__main__":
    main()
