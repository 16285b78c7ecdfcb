#!/usr/bin/env python3
"""Plant known bugs one at a time in a scratch copy and check the tests catch each.

Not part of CI (it runs the unit tier once per mutant); run it by hand:
    .venv/bin/python scripts/mutants.py [NAME ...]
Each mutant is a (file, old text, new text) replacement, checked by the unit
tier's model tests or, for a real adapter, by the contract tests named in
TESTS. Prints caught/MISSED and the first failing test for each.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: list of (file, old text, new text); several edits where the code guards twice on purpose
MUTANTS: dict[str, list[tuple[str, str, str]]] = {
    "grub-rollback-keeps-failed-slot": [
        (
            "kubesolo_core/bootmodel.py",
            "        fallback = active.other()\n",
            "        fallback = active\n",
        )
    ],
    "grub-counter-never-runs-out": [
        (
            "kubesolo_core/bootmodel.py",
            '    return int(value) if value in ("1", "2", "3") else 0\n',
            '    return int(value) if value in ("1", "2", "3") else 1\n',
        )
    ],
    "grub-garbage-success-reads-as-trial": [
        (
            "kubesolo_core/bootmodel.py",
            '    return env.get(SUCCESS) == "0"\n',
            '    return env.get(SUCCESS) != "1"\n',
        )
    ],
    "tryboot-flag-not-cleared": [
        (
            "kubesolo_core/bootmodel.py",
            "slot=slot, env=attrs.evolve(env, flag=False), wrote=True, trial=True",
            "slot=slot, env=env, wrote=True, trial=True",
        )
    ],
    "apply-stages-unverified-image": [
        (
            "kubesolo_core/release.py",
            "    if length != image.raw_size or sha256 != image.raw_sha256:\n",
            "    if False:\n",
        ),
    ],
    "apply-writes-the-running-slot": [
        (
            "kubesolo_core/services.py",
            "        target = booted.other()\n",
            "        target = booted\n",
        ),
        (
            "kubesolo_core/services.py",
            "        if target in (view.committed_slot, view.trial_slot):\n",
            "        if False:\n",
        ),
    ],
    "apply-during-a-pending-trial": [
        (
            "kubesolo_core/lifecycle.py",
            "    P.ACTIVATED: frozenset({P.ACTIVATED, P.VERIFYING, P.ROLLED_BACK, P.FAILED}),\n",
            "    P.ACTIVATED: frozenset({P.ACTIVATED, P.VERIFYING, P.ROLLED_BACK, P.FAILED, "
            "P.CHECKING}),\n",
        ),
        (
            "kubesolo_core/services.py",
            "        if state.phase in POST_ACTIVATION:\n",
            "        if False:\n",
        ),
        (
            "kubesolo_core/services.py",
            "        if target in (view.committed_slot, view.trial_slot):\n",
            "        if False:\n",
        ),
    ],
    "reconcile-misses-bootloader-rollback": [
        (
            "kubesolo_core/reconcile.py",
            "    if view.committed_slot is old and view.trial_slot is None:\n",
            "    if False:\n",
        )
    ],
    "rollback-to-the-passive-slot-whatever-it-holds": [
        (
            "kubesolo_core/services.py",
            "        if state.phase not in (*POST_ACTIVATION, Phase.SUCCESS) or state.target_slot is None:\n",
            "        if state.target_slot is None:\n",
        ),
        (
            "kubesolo_core/services.py",
            "        old = state.target_slot.other()\n",
            "        old = self._booted_or_committed(self.boot_env.read()).other()\n",
        ),
    ],
    "auto-rollback-off-by-one": [
        (
            "kubesolo_core/policies.py",
            "    return threshold > 0 and failures >= threshold\n",
            "    return threshold > 0 and failures > threshold\n",
        )
    ],
    "state-save-not-atomic": [
        (
            "kubesolo_adapters/fakes/memory.py",
            '        self.power.durable("state.save")\n        self.text = dumps_state(state)\n',
            '        self.text = dumps_state(state)[:40]\n        self.power.durable("state.save")\n'
            "        self.text = dumps_state(state)\n",
        )
    ],
    "commit-before-health-check": [
        (
            "kubesolo_core/health.py",
            "    if report.healthy:\n        state = agent.save(transition(state, Phase.VERIFYING",
            "    if True:\n        state = agent.save(transition(state, Phase.VERIFYING",
        )
    ],
    "slot-guard-removed": [
        (
            "kubesolo_adapters/slotguard.py",
            "        reason = write_refusal(ident, target_name, others, mounts=mounts)\n"
            "        if reason is not None:\n",
            "        reason = write_refusal(ident, target_name, others, mounts=mounts)\n"
            "        if False:\n",
        )
    ],
    "slot-identity-by-spelling": [
        (
            "kubesolo_adapters/slotguard.py",
            "        return (self.kind, self.dev, self.ino) == (other.kind, other.dev, other.ino)\n",
            "        return self.path == other.path\n",
        )
    ],
    "apply-skips-the-identity-check": [
        (
            "kubesolo_core/services.py",
            "        self.slots.check_writable(target)\n",
            "",
        )
    ],
    "slot-head-written-before-the-read-back-matched": [
        (
            "kubesolo_adapters/slotpipe.py",
            "        verify_written(image, length=verifier.done, sha256=digest, where=what)\n",
            "",
        )
    ],
    # decisions moved into the core (issue 9): each guarded by the unit tier
    "tryboot-plain-reboot-starts-trial": [
        (
            "kubesolo_core/bootmodel.py",
            "        return self is Bootloader.GRUB\n",
            "        return True\n",
        )
    ],
    "reboot-required-ignores-the-trial": [
        (
            "kubesolo_core/bootmodel.py",
            "        return booted is not None and booted is not self.next_boot\n",
            "        return booted is not None and booted is not self.committed_slot\n",
        )
    ],
    "crash-keeps-the-tryboot-flag": [
        (
            "kubesolo_core/bootmodel.py",
            "        if not clean_shutdown:\n            env = attrs.evolve(env, flag=False)\n",
            "",
        )
    ],
    # signed adaptive updates (issues 10 + 13): caught by the TUF contract tests
    "signed-chunk-paths-unjudged": [
        (
            "kubesolo_core/channel.py",
            '        index=safe_target_path(value.get("index")),\n'
            '        store=safe_target_path(value.get("store", CHUNK_STORE)),\n',
            '        index=str(value.get("index")),\n'
            '        store=str(value.get("store", CHUNK_STORE)),\n',
        )
    ],
    "signed-chunk-index-hash-unchecked": [
        (
            "kubesolo_adapters/chunkfetch.py",
            "hashed([data], size=spec.size, sha256=spec.sha256, what=url)",
            "hashed([data], size=spec.size, sha256=None, what=url)",
        )
    ],
    # apply's cost guards (issue 14): thousands of chunk requests, a kubectl left running
    "adaptive-fetches-chunk-files-whatever-they-cost": [
        (
            "kubesolo_core/chunks.py",
            "    return len(plan.fetches) >= FULL_FILES and plan.download_bytes > served_size * FULL_SHARE\n",
            "    return False\n",
        )
    ],
    "kubectl-query-ahead-outlives-the-agent": [
        (
            "kubesolo_adapters/kubectl.py",
            "        atexit.register(self.stop)\n",
            "",
        )
    ],
    # one kubesolo-update at a time: two applies would write one slot together
    "run-lock-never-locks": [
        (
            "kubesolo_adapters/runlock.py",
            "                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
            "                    pass\n",
        )
    ],
    "apply-runs-without-the-run-lock": [
        (
            "kubesolo_entrypoints/cli.py",
            '@handled\n@locked("apply")\ndef apply(',
            "@handled\ndef apply(",
        )
    ],
}

UNIT_TESTS = [
    "tests/unit/test_stateful.py",
    "tests/unit/test_crashpoints.py",
    "tests/unit/test_bootmodel.py",
    "tests/unit/test_services.py",
]
#: mutants of a real adapter are caught by its contract tests (image files: no root needed)
TESTS: dict[str, list[str]] = {
    "slot-guard-removed": ["tests/contract/test_slot_identity.py"],
    "slot-identity-by-spelling": ["tests/contract/test_slot_identity.py"],
    "slot-head-written-before-the-read-back-matched": ["tests/contract/test_slots_files.py"],
    "signed-chunk-paths-unjudged": [
        "tests/contract/test_tuf_attacks.py::test_chunk_index_path_outside_the_repository"
    ],
    "signed-chunk-index-hash-unchecked": [
        "tests/contract/test_tuf_adaptive.py::test_a_bad_index_or_chunk_falls_back_to_the_full_image"
    ],
    "adaptive-fetches-chunk-files-whatever-they-cost": ["tests/unit/test_adaptive.py"],
    "kubectl-query-ahead-outlives-the-agent": ["tests/contract/test_kube_kubectl.py"],
    "run-lock-never-locks": ["tests/contract/test_runlock.py"],
    "apply-runs-without-the-run-lock": ["tests/contract/test_runlock.py"],
}


def run(name: str) -> tuple[bool, str, float]:
    with tempfile.TemporaryDirectory(prefix="ksolo-mutant-") as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(
            ROOT,
            work,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "__pycache__", ".hypothesis", "*.egg-info"
            ),
        )
        for path, old, new in MUTANTS[name]:
            target = work / path
            text = target.read_text()
            if text.count(old) != 1:
                return False, f"mutation text not found exactly once in {path}", 0.0
            target.write_text(text.replace(old, new))
        start = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                *TESTS.get(name, UNIT_TESTS),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
            env={
                "PYTHONPATH": str(work),
                # sbin too: the contract tests make filesystems (mkfs.ext4 lives there)
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                "KUBESOLO_HYPOTHESIS_PROFILE": "dev",
            },
        )
        took = time.monotonic() - start
        failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        # A test that errors (a missing tool, a broken fixture) has caught nothing.
        return bool(failed), (failed[0] if failed else proc.stdout[-300:]), took


def main() -> int:
    names = sys.argv[1:] or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        print(
            "usage: scripts/mutants.py [MUTANT ...]  (none: all of them)\n"
            f"unknown: {' '.join(unknown)}\nmutants: {' '.join(MUTANTS)}",
            file=sys.stderr,
        )
        return 2
    missed = 0
    for name in names:
        caught, detail, took = run(name)
        missed += not caught
        print(f"{'caught' if caught else 'MISSED'}  {name}  ({took:.1f}s)  {detail}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
