"""Smoke test of bench/apply_vs_peers.py: its whole set-up, one small image, one round.

The bench itself is run by hand (512 MiB, 7 rounds, minutes). This runs it
as a subprocess with a 24 MiB image: the ext4 image of real files, the
private nginx, the CLI's sandbox with kubectl against the stand-in API, the
RAUC bundle signed with the bench's key and installed through ``rauc
service`` on a private D-Bus, the signed .swu streamed by ``swupdate -d``,
the zstd variants of all three, and the agent with a signed release (a
kubesolo-release TUF repository, trust_root set). Before each run the
target is discarded (it reads as zeros), after each run the bench re-reads
it and compares its SHA-256: a tool that did not write the whole image
fails the run. No timing is asserted (STYLE: no timed assertions in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.apply_vs_peers import NEEDED, VERIFIES
from tests.tools import require_root, require_tool

BENCH = Path(__file__).resolve().parents[2] / "bench" / "apply_vs_peers.py"
AGENTS = (
    "kubesolo-update",
    "kubesolo-update zstd",
    "kubesolo-update signed",
    "kubesolo-update signed zstd",
)
TOOLS = {*AGENTS, "rauc", "swupdate", "rauc zstd", "swupdate zstd"}


def test_one_small_round_of_every_tool(tmp_path: Path) -> None:
    require_root()
    require_tool(*NEEDED)
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--size-mib", "24", "--rounds", "1", "--zstd", "--signed",
         "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    assert {r["tool"] for r in runs} == TOOLS
    assert len(runs) == len(TOOLS)
    # Every tool wrote the whole image: the slot was zeros before and reads back right.
    assert all(r["sha_ok"] for r in runs), runs
    assert all(r["install"] > 0 and r["tree_rss"] > 0 for r in runs), runs
    # The agent's own Python process and RAUC's service report their memory too.
    assert all(r["own_rss"] for r in runs if not r["tool"].startswith("swupdate")), runs
    # SWUpdate says it succeeded before its downloader notices and exits.
    assert all(r["install"] <= r["elapsed"] for r in runs), runs
    assert set(doc["ratios"]) == {
        f"{a} / {p}" for a in AGENTS for p in ("rauc", "swupdate", "rauc zstd", "swupdate zstd")
    }
    # The table shows what each tool verifies.
    for text in VERIFIES.values():
        assert text in proc.stdout
    assert f"SHA-256 ok ({len(TOOLS)} runs)" in proc.stdout
    # Nothing left behind in the work folder the bench was given.
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]
