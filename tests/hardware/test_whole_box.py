"""The whole box: the agent runs inside a real Linux booted by the shipped GRUB and updates itself.

Each scenario boots a disk image again and again under QEMU (UEFI, TCG,
``-no-reboot``): GRUB (deploy/grub.cfg) picks a slot, Debian's kernel boots
it, the slot's init mounts the data partition and the ESP and runs the real
boot helper (deploy/kubesolo-update-boot) and the real agent; a reboot ends
QEMU and the scenario starts the next boot. After every boot the host reads
the disk: the grubenv GRUB will see next, state.json on the data partition,
the slots' versions. See tests/hardware/wholebox/ for how the box is built
and what in it is a stand-in (Kubernetes and containerd only).

Every release is signed: the release disk holds a TUF repository made by
kubesolo-release's code, the slots ship its root.json, and every update
asserts that the agent in the guest verified it through TUF
(:func:`_verified_by_tuf`). The first update also meets what a compromised
mirror would serve, a tampered image and an expired timestamp, which the
agent must refuse (exit 6) before one byte reaches the passive partition.

A scenario is a function that boots and asserts; each test waits for its
scenario's outcome. The selected scenarios run two at a time (one QEMU per
core; ``KUBESOLO_WHOLEBOX_JOBS`` changes that): each is one single-threaded
TCG process, and they share nothing but the cached images. Scenarios 1 and
5 share one box: the second update (back into A) starts where the first
(into B) ended.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesolo_core.slots import Slot
from tests.hardware.wholebox import driver, signing
from tests.hardware.wholebox.driver import Boot, WholeBox
from tests.hardware.wholebox.rootfs import SlotVariant, base_tree, slot_image
from tests.tools import require_tool

OLD, NEW, NEWER = "1.0.0", "1.1.0", "1.2.0"
COMMITTED_A = {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
TRIAL_B = {"active_slot": "B", "boot_counter": "3", "boot_success": "0"}
#: more boots than any scenario needs: a loop that waits for GRUB never runs away
MAX_BOOTS = 6
#: one scenario's time limit (a dozen boots' worth under TCG)
SCENARIO_TIMEOUT = 3600.0

HEALTHY = SlotVariant(version=NEW)
NOT_READY = SlotVariant(version=NEW, health="node-not-ready")
NO_CONTAINERD = SlotVariant(version=NEW, health="containerd-down")
BROKEN = SlotVariant(version=NEW, broken_init=True)
SECOND = SlotVariant(version=NEWER)
#: what every box runs on slot A when it is made
FIRST = SlotVariant(version=OLD)


# --------------------------------------------------------------------------- helpers


def _box(tmp: Path, name: str, **kwargs: Any) -> WholeBox:
    return WholeBox.build(tmp, name, slot_a=FIRST, **kwargs)


def _ran(boot: Boot, slot: Slot, version: str) -> None:
    """GRUB chose ``slot`` and the kernel and init of that slot's release ran."""
    assert boot.grub_slot is slot, f"GRUB chose {boot.grub_slot}\n{boot.tail()}"
    assert (boot.guest_slot, boot.version) == (slot.value, version), boot.tail()
    assert not boot.result.timed_out, boot.tail()


def _rc(boot: Boot, step: str) -> int | None:
    """The exit code of the last run of ``step`` in this boot, None if it never ended."""
    found = boot.step(step)
    return None if found is None else found.rc


def _step_ok(boot: Boot, step: str, rc: int = 0) -> None:
    """Step ``step`` of this boot ended with ``rc``; if not, show what it printed."""
    assert _rc(boot, step) == rc, f"step {step}: want exit {rc}\n{boot.output(step)}"


def _state(boot: Boot) -> dict[str, Any]:
    assert boot.state is not None, "no state.json on the data partition"
    return boot.state


def _verified_by_tuf(box: WholeBox, boot: Boot, *, must_be_adaptive: bool = True) -> None:
    """The agent in the guest took the release it applied through TUF, under the shipped root.

    ``apply --json`` names the trust mode and root; ngclient's metadata cache
    on the data partition (next to state.json) holds the very timestamp the
    signed repository serves, and only verified metadata is ever stored
    there; the image the agent verified on the slot is the one the signed
    channel document names.
    """
    doc = boot.documents.get("apply")
    assert doc is not None and doc["ok"] is True, boot.tail()
    assert doc["trust"]["mode"] == "tuf", doc["trust"]
    assert doc["trust"]["trust_root"] == signing.GUEST_TRUST_ROOT, doc["trust"]
    assert "UNSIGNED" not in boot.result.serial, boot.tail()
    repo = box.repository
    assert repo is not None
    served = (repo.metadata_dir / "timestamp.json").read_bytes()
    assert box.tuf_metadata("timestamp") == served, "the guest's TUF cache is not the served one"
    channel = signing.channel_document(repo)
    assert channel["version"] == _state(boot)["to_version"]
    assert _state(boot)["image_sha256"] == channel["image"]["raw_sha256"]
    # The signed chunk index is published (kubesolo-release add --chunks): the slot is
    # built from the booted slot's chunks and the store, not from the whole image.
    # A release built apart (BROKEN's slot shares little with the booted one) may
    # be taken whole by the rule that many chunk files carrying most of the image
    # cost more than one stream; then that must be the reason.
    stats = doc["stats"]
    assert channel["image"].get("chunks") is not None, channel["image"]
    if stats["mode"] == "full" and not must_be_adaptive:
        assert "hold too little" in str(stats["fallback"]), stats
        return
    assert (stats["mode"], stats["fallback"]) == ("adaptive", None), stats
    assert 0 < stats["downloaded_bytes"] < stats["image_bytes"] // 2, stats


def _refused(boot: Boot, how: str, reason: str) -> None:
    """The agent refused what the mirror ``how`` served: exit 6, ``reason``, no sector written."""
    name = f"refuse-{how}"
    _step_ok(boot, name, 6)
    doc = boot.documents.get(name)
    assert doc is not None, boot.tail()
    assert (doc["ok"], doc["exit_code"], doc["trust"]["mode"]) == (False, 6, "tuf"), doc
    assert [r["reason"] for r in doc["refusals"]] == [reason], doc
    assert boot.written.get(name) == 0, f"{boot.written.get(name)} sectors reached the passive slot"


def _update(
    box: WholeBox, plan: str = "apply,activate-reboot", *, must_be_adaptive: bool = True
) -> Boot:
    """One boot on the committed slot that applies and activates the offered (signed) release."""
    booted = box.boots[-1].grub_slot if box.boots else Slot.A
    assert booted is not None
    boot = box.boot(plan)
    assert boot.grub_slot is booted, boot.tail()
    _step_ok(boot, "boot-helper")
    _step_ok(boot, "apply")
    assert boot.end == "reboot", f"activate --reboot did not reboot\n{boot.tail()}"
    target = booted.other()
    assert boot.env == {"active_slot": target.value, "boot_counter": "3", "boot_success": "0"}
    state = _state(boot)
    assert (state["phase"], state["target_slot"]) == ("activated", target.value)
    _verified_by_tuf(box, boot, must_be_adaptive=must_be_adaptive)
    return boot


# --------------------------------------------------------------------------- scenarios


def healthy_update_commits(tmp: Path) -> WholeBox:
    """1. Boot A, apply and activate B, reboot; GRUB trials B; the agent in B commits."""
    box = _box(tmp, "1 healthy update A->B (and 5: B->A on the same box)")
    # The release disk also carries what a compromised mirror would serve.
    box.publish(HEALTHY, attacks=signing.ATTACKS)
    update = _update(
        box,
        "measure,check,refuse-tampered-image,refuse-expired-timestamp,apply,activate-reboot",
    )
    _ran(update, Slot.A, OLD)
    for step in ("python-start", "agent-version", "agent-status", "check"):
        _step_ok(update, step)
    _refused(update, "tampered-image", "hash_mismatch")
    _refused(update, "expired-timestamp", "expired_metadata")
    assert update.env == TRIAL_B
    # GRUB's first trial boot of B: counted down, and the agent in B commits.
    trial = box.boot()
    _ran(trial, Slot.B, NEW)
    assert (trial.result.markers[-1].counter, trial.result.markers[-1].saved) == ("2", True)
    _step_ok(trial, "boot-helper")
    assert trial.env == {"active_slot": "B", "boot_counter": "2", "boot_success": "1"}
    state = _state(trial)
    assert (state["phase"], state["from_version"], state["to_version"]) == ("success", OLD, NEW)
    assert state["last_error"] is None
    # The next boot is B, committed: GRUB writes nothing, the agent changes nothing.
    stable = box.boot("status")
    _ran(stable, Slot.B, NEW)
    assert stable.result.markers[-1].saved is False
    assert stable.env == trial.env
    assert stable.state == trial.state
    assert stable.status is not None, stable.tail()
    assert stable.status["booted_slot"] == "B" and stable.status["next_boot"] == "B"
    seen = {row["slot"]: row["version"] for row in stable.status["slots"]}
    assert seen == {"A": OLD, "B": NEW}
    # The host's own look at the disk agrees.
    assert (box.slot_version(Slot.A), box.slot_version(Slot.B)) == (OLD, NEW)
    assert [line.split()[1] for line in box.boots_log()] == ["slot=A", "slot=B", "slot=B"]
    return box


def second_update_goes_back_to_a(box: WholeBox) -> WholeBox:
    """5. On the box scenario 1 left committed on B: update again, into A, and commit."""
    box.publish(SECOND)
    update = _update(box, "check,apply,activate-reboot")
    _ran(update, Slot.B, NEW)
    assert (_state(update)["from_version"], _state(update)["to_version"]) == (NEW, NEWER)
    trial = box.boot()
    _ran(trial, Slot.A, NEWER)
    assert trial.env == {"active_slot": "A", "boot_counter": "2", "boot_success": "1"}
    assert _state(trial)["phase"] == "success"
    assert (box.slot_version(Slot.A), box.slot_version(Slot.B)) == (NEWER, NEW)
    return box


def unhealthy_release_is_rolled_back_by_grub(tmp: Path) -> WholeBox:
    """2. B's node never gets Ready: GRUB's three trial boots run out, it boots A again."""
    box = _box(tmp, "2 unhealthy release: GRUB's trial boots run out")
    box.publish(NOT_READY)
    _ran(_update(box), Slot.A, OLD)
    trials = []
    for _ in range(MAX_BOOTS):
        boot = box.boot()
        if boot.grub_slot is not Slot.B:
            break
        trials.append(boot)
        _ran(boot, Slot.B, NEW)
        # The helper's healthcheck fails (4) and it reboots: that is how GRUB counts down.
        assert "KSOLO-STEP name=boot-helper" not in boot.result.serial, boot.tail()
        assert boot.end == "reboot", boot.tail()
        assert _state(boot)["phase"] == "activated"
        assert _state(boot)["health_check_failures"] == len(trials)
    assert [b.result.markers[-1].counter for b in trials] == ["2", "1", "0"]
    # GRUB's rollback boot: slot A, committed, written by GRUB itself.
    _ran(boot, Slot.A, OLD)
    marker = boot.result.markers[-1]
    assert (marker.saved, marker.counter, marker.success) == (True, "3", "1")
    assert boot.env == COMMITTED_A
    state = _state(boot)
    assert state["phase"] == "rolled_back"
    assert "rolled back to slot A" in state["last_error"] and NEW in state["last_error"], state
    assert boot.end == "poweroff"
    assert box.slot_version(Slot.A) == OLD
    return box


def auto_rollback_after_two_failed_checks(tmp: Path) -> WholeBox:
    """3. auto_rollback_after=2: the agent in B gives up before GRUB's trial boots run out."""
    box = _box(
        tmp,
        "3 auto-rollback after 2 failed health checks",
        settings={"KUBESOLO_UPDATE_AUTO_ROLLBACK_AFTER": "2"},
    )
    box.publish(NO_CONTAINERD)
    _ran(_update(box), Slot.A, OLD)
    first = box.boot()
    _ran(first, Slot.B, NEW)
    assert (_state(first)["phase"], _state(first)["health_check_failures"]) == ("activated", 1)
    assert first.end == "reboot"
    second = box.boot()
    _ran(second, Slot.B, NEW)
    state = _state(second)
    assert (state["phase"], state["health_check_failures"]) == ("rolled_back", 2)
    assert "auto-rollback to slot A after 2 failed health checks" in state["last_error"]
    assert "containerd" in state["last_error"]
    # The agent switched back itself, one trial boot before GRUB would have.
    assert second.env == COMMITTED_A
    assert second.end == "reboot"
    back = box.boot()
    _ran(back, Slot.A, OLD)
    assert back.result.markers[-1].saved is False  # GRUB had nothing left to do
    assert _state(back)["phase"] == "rolled_back"
    assert back.env == COMMITTED_A
    return box


def power_cuts_mid_apply_then_mid_activate(tmp: Path) -> WholeBox:
    """4. Cut the power while apply writes slot B, then between activate's two writes."""
    box = _box(tmp, "4 power cut mid-apply, then mid-activate; the retry completes")
    box.publish(HEALTHY)
    cut = box.boot("cut-apply", cut=True)
    _ran(cut, Slot.A, OLD)
    assert cut.power_cut and "KSOLO-CUT-NOW apply" in cut.result.serial, cut.tail()
    assert "KSOLO-STEP name=apply" not in cut.result.serial, "apply ended before the cut"
    assert cut.env == COMMITTED_A
    assert _state(cut)["phase"] == "downloading"
    # The committed slot boots; the retried apply completes; the cut comes in activate.
    cut2 = box.boot("apply,cut-activate", cut=True)
    _ran(cut2, Slot.A, OLD)
    _step_ok(cut2, "apply")
    assert cut2.power_cut and "KSOLO-CUT-NOW activate" in cut2.result.serial, cut2.tail()
    # The state was saved (activated), the env write never happened.
    assert _state(cut2)["phase"] == "activated"
    assert cut2.env == COMMITTED_A
    # The committed slot boots again; the agent sees the trial never started and retries.
    retry = _update(box)
    _ran(retry, Slot.A, OLD)
    assert "bootloader rolled back to slot A" in retry.result.serial, retry.tail()
    done = box.boot()
    _ran(done, Slot.B, NEW)
    assert _state(done)["phase"] == "success"
    assert done.env == {"active_slot": "B", "boot_counter": "2", "boot_success": "1"}
    assert box.slot_version(Slot.B) == NEW
    return box


def kernel_panic_in_b_rolled_back_by_grub_alone(tmp: Path) -> WholeBox:
    """6. B's init exits at once: the kernel panics three times and GRUB rolls back alone."""
    box = _box(tmp, "6 B's init exits: kernel panic, GRUB rolls back alone")
    box.publish(BROKEN)
    activated = _state(_update(box, must_be_adaptive=False))
    panics = []
    for _ in range(MAX_BOOTS):
        boot = box.boot()
        if boot.grub_slot is not Slot.B:
            break
        panics.append(boot)
        assert boot.panicked and "KSOLO-BROKEN" in boot.result.serial, boot.tail()
        assert boot.guest_slot is None  # no init of ours ran, so neither did the agent
        assert boot.state == activated  # nothing in B touched the state
    assert [b.result.markers[-1].counter for b in panics] == ["2", "1", "0"]
    _ran(boot, Slot.A, OLD)
    assert boot.result.markers[-1].saved is True
    assert boot.env == COMMITTED_A
    state = _state(boot)
    assert state["phase"] == "rolled_back" and NEW in state["last_error"]
    return box


# --------------------------------------------------------------------------- the runner

#: one box's signed repository after each of its publications: the releases in order
Repo = tuple[SlotVariant, ...]
#: test name -> (scenario, the repositories its box is offered, the test whose box it continues)
SCENARIOS: dict[str, tuple[Callable[..., WholeBox], tuple[Repo, ...], str | None]] = {
    "test_healthy_update_commits": (healthy_update_commits, ((HEALTHY,),), None),
    "test_second_update_goes_back_to_a": (
        second_update_goes_back_to_a,
        ((HEALTHY, SECOND),),
        "test_healthy_update_commits",
    ),
    "test_unhealthy_release_is_rolled_back_by_grub": (
        unhealthy_release_is_rolled_back_by_grub,
        ((NOT_READY,),),
        None,
    ),
    "test_auto_rollback_after_two_failed_health_checks": (
        auto_rollback_after_two_failed_checks,
        ((NO_CONTAINERD,),),
        None,
    ),
    "test_power_cuts_mid_apply_then_mid_activate": (
        power_cuts_mid_apply_then_mid_activate,
        ((HEALTHY,),),
        None,
    ),
    "test_kernel_panic_in_b_is_rolled_back_by_grub_alone": (
        kernel_panic_in_b_rolled_back_by_grub_alone,
        ((BROKEN,),),
        None,
    ),
}


def _jobs() -> int:
    return max(1, int(os.environ.get("KUBESOLO_WHOLEBOX_JOBS", "2")))


def _chain(
    names: list[str],
    tmp: pytest.TempPathFactory,
    outcomes: dict[str, concurrent.futures.Future[Any]],
) -> None:
    """Run scenarios one after the other, each continuing the box of the one before."""
    box: WholeBox | None = None
    for name in names:
        scenario = SCENARIOS[name][0]
        try:
            box = scenario(tmp.mktemp(name.removeprefix("test_")) if box is None else box)
        except BaseException as exc:
            outcomes[name].set_exception(exc)
            for rest in names[names.index(name) + 1 :]:
                outcomes[rest].set_exception(
                    RuntimeError(f"{name} failed, and this scenario continues its box")
                )
            break
        outcomes[name].set_result(box)
    if box is not None:
        box.cleanup()


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, hardware_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, concurrent.futures.Future[Any]]]:
    """Start every selected scenario (two at a time) and hand out their outcomes."""
    require_tool(
        "apt-get", "apt-cache", "dpkg-deb", "cpio", "mkfs.ext4", "debugfs", "e2fsck",
        "mkfs.vfat", "mcopy", "strip", "chroot",
    )  # fmt: skip
    started = time.monotonic()
    selected = [
        item.originalname
        for item in request.session.items
        if item.module is request.module and item.originalname in SCENARIOS
    ]
    # Chains: a scenario that continues another's box runs right after it, in one job.
    chains: list[list[str]] = []
    for name in selected:
        before = SCENARIOS[name][2]
        chain = next((c for c in chains if before in c), None)
        if before is not None and chain is None:
            chains.append([before, name])
        elif chain is not None:
            chain.append(name)
        elif not any(name in c for c in chains):
            chains.append([name])
    # Build every image and sign every repository first (cached across runs), so
    # the jobs only boot.
    base = base_tree()
    slot_image(FIRST, base)
    for releases in {repo for n in selected for repo in SCENARIOS[n][1]}:
        signing.published([(v.version, slot_image(v, base)) for v in releases])
    driver.RUN["setup"] = time.monotonic() - started
    futures = {name: concurrent.futures.Future[Any]() for chain in chains for name in chain}
    driver.RUN["jobs"] = _jobs()
    # The jobs make their folders from one factory: make its base folder here, in
    # one thread, or two jobs race to create it.
    tmp_path_factory.getbasetemp()
    with concurrent.futures.ThreadPoolExecutor(_jobs(), thread_name_prefix="wholebox") as pool:
        for chain in chains:
            pool.submit(_chain, chain, tmp_path_factory, futures)
        try:
            yield futures
        finally:
            # Interrupted or failing fast: no box powers on again; running boots finish.
            driver.STOP.set()
    driver.STOP.clear()
    driver.RUN["wall"] = time.monotonic() - started


def _outcome(outcomes: dict[str, concurrent.futures.Future[Any]], name: str) -> None:
    outcomes[name].result(timeout=SCENARIO_TIMEOUT)


def test_healthy_update_commits(outcomes: dict[str, concurrent.futures.Future[Any]]) -> None:
    """Scenario 1: healthy_update_commits."""
    _outcome(outcomes, "test_healthy_update_commits")


def test_unhealthy_release_is_rolled_back_by_grub(
    outcomes: dict[str, concurrent.futures.Future[Any]],
) -> None:
    """Scenario 2: unhealthy_release_is_rolled_back_by_grub."""
    _outcome(outcomes, "test_unhealthy_release_is_rolled_back_by_grub")


def test_auto_rollback_after_two_failed_health_checks(
    outcomes: dict[str, concurrent.futures.Future[Any]],
) -> None:
    """Scenario 3: auto_rollback_after_two_failed_checks."""
    _outcome(outcomes, "test_auto_rollback_after_two_failed_health_checks")


def test_power_cuts_mid_apply_then_mid_activate(
    outcomes: dict[str, concurrent.futures.Future[Any]],
) -> None:
    """Scenario 4: power_cuts_mid_apply_then_mid_activate."""
    _outcome(outcomes, "test_power_cuts_mid_apply_then_mid_activate")


def test_second_update_goes_back_to_a(outcomes: dict[str, concurrent.futures.Future[Any]]) -> None:
    """Scenario 5: second_update_goes_back_to_a (continues scenario 1's box)."""
    _outcome(outcomes, "test_second_update_goes_back_to_a")


def test_kernel_panic_in_b_is_rolled_back_by_grub_alone(
    outcomes: dict[str, concurrent.futures.Future[Any]],
) -> None:
    """Scenario 6: kernel_panic_in_b_rolled_back_by_grub_alone."""
    _outcome(outcomes, "test_kernel_panic_in_b_is_rolled_back_by_grub_alone")
