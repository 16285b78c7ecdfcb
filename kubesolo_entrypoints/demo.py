"""``kubesolo-update demo``: the whole update lifecycle in a throw-away sandbox.

No root, no network beyond 127.0.0.1, a few seconds. What is real and what
stands in:

* real: the grubenv file (:class:`~kubesolo_adapters.grub.GrubBootEnv`,
  the 1024-byte GRUB env block), the two slots as image files
  (:class:`~kubesolo_adapters.blockdev.BlockSlotStore`) carrying ext2
  filesystems with a ``version`` file when ``mkfs.ext2`` is available (read
  back with ``debugfs``, no mount), a signed TUF repository made by
  ``kubesolo-release``'s code (Ed25519 keys in the sandbox) served on
  127.0.0.1 (Python's http.server) and read with the agent's TUF client
  (:class:`~kubesolo_adapters.tuf.TufFetcher` over
  :class:`~kubesolo_adapters.http.HttpFetcher`), a gzip-compressed image
  decompressed on the fly and verified chunk by chunk, and state.json
  (:class:`~kubesolo_adapters.statefile.JsonStateStore`);
* stand-ins: the Kubernetes node (:class:`~kubesolo_adapters.fakes.MemoryKube`
  and :class:`~kubesolo_adapters.fakes.MemoryProbes`, since no cluster runs
  here) and the firmware: the box is a :class:`kubesolo_adapters.sandbox.Sandbox`,
  whose "reboot" applies the GRUB model (which deploy/grub.cfg is proven equal
  to) to the grubenv file's variables and gives the kernel command line file
  ``kubesolo.slot=X`` and a new boot id.

It shows apply -> activate -> reboot -> healthcheck -> commit, then a second
update whose node never gets healthy, until GRUB runs out of trial boots and
rolls back, with ``status`` between the steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import attrs
import typer

from kubesolo_adapters.sandbox import Sandbox, find_tool, make_fs_image, release_server
from kubesolo_core.policies import PodInfo
from kubesolo_core.slots import Slot

SLOT_BYTES = 6 << 20
#: the release the demo commits, and the one whose node never gets Ready
GOOD, SICK = "1.1.0", "1.2.0"


def _say(text: str = "") -> None:
    # The demo's narrative is its output: one stream keeps it in order when piped.
    typer.echo(text)


def _say_aside(text: str = "") -> None:
    # With --json the narrative goes to stderr: stdout holds one document.
    typer.echo(text, err=True)


@attrs.frozen(kw_only=True)
class DemoResult:
    """Checkpoints of a demo run (for tests)."""

    sandbox: Path
    first_phase: str
    first_booted: str
    second_phase: str
    second_booted: str
    boots: int
    kept: bool = False

    @property
    def as_expected(self) -> bool:
        """The good release committed on B; the bad one ended rolled back, B still booted."""
        return (self.first_phase, self.first_booted, self.second_phase, self.second_booted) == (
            "success",
            "B",
            "rolled_back",
            "B",
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.as_expected,
            "sandbox": str(self.sandbox),
            "kept": self.kept,
            "first_update": {
                "version": GOOD,
                "expected": "success on slot B",
                "phase": self.first_phase,
                "booted": self.first_booted,
            },
            "second_update": {
                "version": SICK,
                "expected": "rolled_back, slot B booted",
                "phase": self.second_phase,
                "booted": self.second_booted,
                "trial_boots": self.boots,
            },
        }


def run_demo(*, keep: bool = False, workdir: Path | None = None, aside: bool = False) -> DemoResult:
    """Run the demo; everything it shows goes to stdout, in order (stderr if ``aside``)."""
    say = _say_aside if aside else _say
    from kubesolo_adapters.fakes import MemoryKube, MemoryProbes
    from kubesolo_entrypoints import render
    from kubesolo_entrypoints.bootstrap import bootstrap
    from kubesolo_entrypoints.config import load_settings
    from kubesolo_entrypoints.publisher.sandbox import publish_signed, signed_repository
    from kubesolo_entrypoints.trust import trust_view

    # debugfs and mkfs live in sbin, which a non-root PATH may lack.
    path = os.environ.get("PATH", "")
    extra = [d for d in ("/usr/sbin", "/sbin") if d not in path.split(os.pathsep)]
    if extra:
        os.environ["PATH"] = os.pathsep.join([path, *extra]) if path else os.pathsep.join(extra)

    root = Path(tempfile.mkdtemp(prefix="kubesolo-demo-", dir=workdir))
    box = Sandbox(root)
    try:
        repo = signed_repository(root / "publisher")
        factory = make_fs_image(root, "1.0.0")
        for slot in Slot:
            with box.slot(slot).open("wb") as f:
                f.truncate(SLOT_BYTES)
                if slot is Slot.A:
                    f.write(factory)
        real_fs = find_tool("mkfs.ext2") is not None
        with release_server(repo.served) as base:
            settings = load_settings(
                {
                    "config": "/dev/null",
                    "state": str(root / "state" / "state.json"),
                    "server": f"{base}/",
                    "trust_root": str(repo.metadata_dir / "1.root.json"),
                    "bootloader": "grub",
                    "grubenv": str(box.grubenv),
                    "slot_a": str(box.slot(Slot.A)),
                    "slot_b": str(box.slot(Slot.B)),
                    "cmdline": str(box.cmdline),
                    "boot_id": str(box.boot_id),
                    "data_dir": str(root),
                    "kube_system_settle": "0",
                    "settle_timeout": "0",
                    "node_name": "demo-node",
                },
                environ={},
            )
            kube = MemoryKube()
            probes = MemoryProbes()

            def event(name: str, **fields: object) -> None:
                detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
                say(f"    . {name} {detail}")

            agent = bootstrap(settings, events=event, kube=kube, probes=probes)

            def reboot() -> Slot:
                slot, how = box.boot()
                version = agent.slots.read_version(slot)
                healthy = version != SICK
                kube.ready = healthy
                kube.pods = [
                    PodInfo(
                        name="coredns",
                        phase="Running" if healthy else "CrashLoopBackOff",
                        running_since=agent.clock.now() if healthy else None,
                    )
                ]
                say(f"  reboot: GRUB boots slot {slot.value} ({version}): {how}")
                return slot

            def status(title: str) -> None:
                say(f"\n$ kubesolo-update status   # {title}")
                say(render.status_text(agent.status(), where=str(box.grubenv)))
                say(f"Trust:       {trust_view(settings)['note']}")

            def healthcheck() -> bool:
                say("$ kubesolo-update healthcheck   # what init runs at every boot")
                outcome = agent.healthcheck()
                say(render.health_text(outcome))
                return outcome.healthy

            say(f"kubesolo-update demo: a box in a sandbox at {root}")
            say(
                "  real: grubenv file, "
                + (
                    "ext2 image files"
                    if real_fs
                    else "image files (no mkfs.ext2: versions unknown)"
                )
                + f" as slots, a signed TUF repository (kubesolo-release) on {base}, "
                "the agent's TUF client, gzip image, state.json"
            )
            say("  stand-ins: the node (in-memory Kubernetes), the firmware (the GRUB model)")
            agent.boot_env.force_rollback(Slot.A)  # a fresh env, committed on A
            reboot()
            status("a fresh box on 1.0.0")

            say(f"\n== first update: {GOOD}, a good release ==")
            publish_signed(repo, GOOD, make_fs_image(root, GOOD))
            say("$ kubesolo-update check")
            say(agent.check().reason)
            say("$ kubesolo-update apply")
            say(agent.apply().message)
            say("$ kubesolo-update activate")
            state = agent.activate().state
            say(f"slot {state.target_slot.value if state.target_slot else '?'} activated")
            status("activated, before the reboot")
            reboot()
            healthcheck()
            status("after the trial boot and the health check")
            first = agent.status()

            say(f"\n== second update: {SICK}, its node never gets Ready ==")
            publish_signed(repo, SICK, make_fs_image(root, SICK))
            say("$ kubesolo-update apply")
            say(agent.apply().message)
            say("$ kubesolo-update activate")
            agent.activate()
            boots = 0
            for _ in range(8):  # bounded: GRUB gives up after three trial boots
                slot = reboot()
                boots += 1
                healthy = healthcheck()
                if healthy or agent.status().state.phase.value == "rolled_back":
                    break
                say(f"  (init reboots: the trial of slot {slot.value} is unhealthy)")
            status("after GRUB rolled back")
            second = agent.status()
        say(f"\ndone: {'kept' if keep else 'removing'} the sandbox {root}")
        return DemoResult(
            sandbox=root,
            first_phase=first.state.phase.value,
            first_booted=first.booted_slot.value if first.booted_slot else "?",
            second_phase=second.state.phase.value,
            second_booted=second.booted_slot.value if second.booted_slot else "?",
            boots=boots,
            kept=keep,
        )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
