"""Benchmark: what ``kubesolo-release add --chunks`` costs the publisher and saves a signed box.

Not a test: run it by hand (root: bench/ext4pair.py loop-mounts an image):

    sudo .venv/bin/python bench/signed_adaptive.py [--size-mib 512] [--workdir DIR]

The images are bench/ext4pair.py's pair (release 2 = release 1 with real files
replaced dpkg style, about 5% of the 4 KiB blocks). Publisher rows: both
releases added (``--compress zstd``) to a fresh workspace with ``--no-chunks``
(the baseline) and with ``--chunks`` (the default): wall time of each ``add``
and the bytes the repository then serves. Box rows: the real CLI
(``kubesolo-update apply --json``, TUF over file://, image-file slots, slot A
booted on release 1 and slot B holding release 1) against the ``--chunks``
repository with ``adaptive=false`` (the full zstd image, the baseline) and
``adaptive=true``: bytes downloaded and written as the agent reports them,
wall time of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ext4pair import BLOCK, MIB, build_pair  # noqa: E402


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def publish(work: Path, images: list[tuple[str, Path]], chunks: bool) -> tuple[Path, list[float]]:
    """A fresh workspace with ``images`` added in order; (workspace, seconds per add)."""
    from kubesolo_entrypoints.publisher.repo import Repository

    repo = Repository(work / ("ws-chunks" if chunks else "ws-full"))
    repo.init()
    times = []
    for version, image in images:
        t0 = time.monotonic()
        repo.add(image, version=version, compress="zstd", chunks=chunks)
        times.append(time.monotonic() - t0)
    return repo.root_dir, times


def apply(work: Path, ws: Path, old: Path, size: int, adaptive: bool) -> tuple[dict, float]:
    """One signed apply by the real CLI from a fresh state; (its stats, wall seconds)."""
    from kubesolo_adapters.grubenvfile import PythonBackend
    from kubesolo_adapters.sandbox import Sandbox
    from kubesolo_core.slots import Slot

    box_dir = work / "box"
    shutil.rmtree(box_dir, ignore_errors=True)
    box_dir.mkdir(parents=True)
    box = Sandbox(box_dir)
    for slot in Slot:
        shutil.copyfile(old, box.slot(slot))
        with box.slot(slot).open("r+b") as fh:
            fh.truncate(size + size // 4)  # room for the image and preflight's 10%
    PythonBackend(box.grubenv).set({"active_slot": "A", "boot_counter": "3", "boot_success": "1"})
    box.boot()
    state = box_dir / "state" / "state.json"
    argv = [
        sys.executable, "-m", "kubesolo_entrypoints", *box.cli_args(state),
        "--server", (ws / "repository").as_uri() + "/",
        "--trust-root", str(ws / "repository" / "metadata" / "1.root.json"),
        "apply", "--json",
    ]  # fmt: skip
    env = {
        **os.environ,
        "KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id),
        "KUBESOLO_UPDATE_ADAPTIVE": "true" if adaptive else "false",
    }
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"apply failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)["stats"], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: building the ext4 pair loop-mounts an image")
    work = Path(tempfile.mkdtemp(prefix="kubesolo-signed-adaptive-", dir=args.workdir))
    try:
        pair = build_pair(work, size_mib=args.size_mib)["inplace"]
        changed = pair.changed_blocks * BLOCK
        print(
            f"images: {args.size_mib} MiB ext4, {pair.changed_fraction:.2%} of the 4 KiB "
            f"blocks changed ({changed / MIB:.1f} MiB)",
            flush=True,
        )
        images = [("1.0.0", pair.old), ("1.1.0", pair.new)]
        print(f"\n{'publisher':28}{'add 1.0.0 s':>12}{'add 1.1.0 s':>12}{'served MiB':>12}")
        workspaces = {}
        for chunks in (False, True):
            ws, times = publish(work, images, chunks)
            workspaces[chunks] = ws
            served = _tree_bytes(ws / "repository")
            label = "add --chunks" if chunks else "add --no-chunks (baseline)"
            print(f"{label:28}{times[0]:12.1f}{times[1]:12.1f}{served / MIB:12.1f}", flush=True)
        store = workspaces[True] / "repository" / "targets" / "chunks"
        print(f"chunk store: {_tree_bytes(store) / MIB:.1f} MiB in "
              f"{sum(1 for _ in store.rglob('*.zst'))} files for both releases")  # fmt: skip
        print(
            f"\n{'signed apply':28}{'seconds':>9}{'down MiB':>10}{'x chg':>7}"
            f"{'written MiB':>13}{'x chg':>7}{'mode':>10}"
        )
        for adaptive in (False, True):
            stats, elapsed = apply(work, workspaces[True], pair.old, pair.size, adaptive)
            label = "adaptive=true" if adaptive else "adaptive=false (baseline)"
            down, wrote = stats["downloaded_bytes"], stats["written_bytes"]
            print(
                f"{label:28}{elapsed:9.2f}{down / MIB:10.1f}{down / changed:7.2f}"
                f"{wrote / MIB:13.1f}{wrote / changed:7.2f}{stats['mode']:>10}",
                flush=True,
            )
        print("\n'x chg' = bytes / the changed bytes of the image (4 KiB block compare).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
