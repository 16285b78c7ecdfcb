"""Start-up cost of ``kubesolo-update status --json`` against ``python -c "import typer"``.

One run measures both, interleaved, N times each, on a sample box in a temp
directory (a grubenv file, a state file in phase ``success``, two ext2 image
files as slots when mkfs.ext2 is available), and prints the medians and the
ratio (target: <= 1.5).

    python bench/cli_startup.py [-n 20]

``status`` does real work besides starting: it reads both slots' version
files (straight from the ext2 images: kubesolo_adapters/extread.py), the
grubenv and the state file. Both commands run with the same interpreter and
environment, with the .pyc files of both written by the warm-up runs (as
after an install: ``PYTHONDONTWRITEBYTECODE`` is dropped for the runs, or an
editable checkout would be compiled from source at every start).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubesolo_adapters import sandbox
from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_core.codec import dumps_state
from kubesolo_core.lifecycle import Phase, UpdateState
from kubesolo_core.slots import Slot


def sample_box(root: Path) -> list[str]:
    """The sample box; returns the CLI arguments that point at it."""
    box = sandbox.Sandbox(root)
    for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "1.1.0")):
        image = sandbox.make_fs_image(root, version, size=1 << 20)
        with box.slot(slot).open("wb") as f:
            f.truncate(2 << 20)
            f.write(image)
    PythonBackend(box.grubenv).set({"active_slot": "B", "boot_counter": "3", "boot_success": "1"})
    box.cmdline.write_text("BOOT_IMAGE=/vmlinuz ro kubesolo.slot=B\n")
    box.boot_id.write_text("3f1c-bench\n")
    now = dt.datetime.now(dt.UTC)
    state = UpdateState(
        phase=Phase.SUCCESS,
        from_version="1.0.0",
        to_version="1.1.0",
        target_slot=Slot.B,
        attempt_count=1,
        started_at=now,
        updated_at=now,
    )
    (root / "state.json").write_text(dumps_state(state))
    return [*box.cli_args(root / "state.json"), "status", "--json"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="repetitions of each command")
    args = parser.parse_args()
    cli = shutil.which("kubesolo-update", path=str(Path(sys.executable).parent))
    agent = [cli] if cli else [sys.executable, "-m", "kubesolo_entrypoints"]
    with tempfile.TemporaryDirectory(prefix="kubesolo-bench-") as tmp:
        root = Path(tmp)
        status_argv = [*agent, *sample_box(root)]
        env = {**os.environ, "KUBESOLO_UPDATE_BOOT_ID": str(root / "boot_id")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        typer_argv = [sys.executable, "-c", "import typer"]
        for _ in range(2):  # warm the page cache and the .pyc files
            timed(status_argv, env)
            timed(typer_argv, env)
        ours, base = [], []
        for _ in range(args.n):
            ours.append(timed(status_argv, env))
            base.append(timed(typer_argv, env))
    m_ours, m_base = statistics.median(ours), statistics.median(base)
    print(
        f"kubesolo-update status --json : median {m_ours * 1000:7.1f} ms  "
        f"(min {min(ours) * 1000:.1f}, n={args.n})"
    )
    print(
        f'python -c "import typer"      : median {m_base * 1000:7.1f} ms  '
        f"(min {min(base) * 1000:.1f}, n={args.n})"
    )
    print(f"ratio (medians)               : {m_ours / m_base:.2f}x  (target <= 1.5x)")
    print(f"ratio (minimums)              : {min(ours) / min(base):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
