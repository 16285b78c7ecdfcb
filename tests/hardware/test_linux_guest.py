"""A real Debian kernel, chosen by GRUB from a slot, reports the kubesolo.slot it was given.

Both slots carry the same kernel and busybox initramfs; the slot filesystem
GRUB finds by label is the one it boots. Legacy BIOS, to keep it to about
10-15 s a boot. The image also carries the test-only halt switch, which must
change nothing when the chosen slot has a kernel (so a stray copy on a real
box is harmless).
"""

from __future__ import annotations

from pathlib import Path

from kubesolo_core.slots import DEFAULT_LABELS, Slot
from tests.hardware.diskimage import build_disk_image, make_slot_filesystem
from tests.hardware.guest import busybox_initramfs, debian_kernel
from tests.hardware.harness import GRUB_CFG, TEST_ENV_FILES, GrubRig, counted_boot, tail
from tests.tools import require_tool


def test_debian_kernel_gets_the_slot_grub_chose(hardware_tools: None, tmp_path: Path) -> None:
    require_tool("apt-get", "dpkg-deb", "cpio")
    kernel = debian_kernel()
    initrd = busybox_initramfs(tmp_path / "initrd.img")
    # Both slots carry the same filesystem label, as after one release image was
    # written to both: GRUB must still pick the slot's partition by number.
    slots = {
        slot: make_slot_filesystem(
            tmp_path / f"slot{slot.value}.img",
            label=DEFAULT_LABELS[Slot.A],
            size_mib=16,
            files={"vmlinuz": kernel, "initrd.img": initrd, "version": b"1.0.0\n"},
        )
        for slot in Slot
    }
    layout = build_disk_image(
        tmp_path / "disk.img",
        slot_a=slots[Slot.A],
        slot_b=slots[Slot.B],
        grub_cfg=GRUB_CFG,
        esp_files=TEST_ENV_FILES,
    )
    rig = GrubRig(layout=layout, workdir=tmp_path)
    runner = rig.runner("bios")
    runner.timeout = 120.0

    # A fresh image is committed on A; then the agent's activate starts a trial of B.
    for step, expected in (("fresh image", Slot.A), ("after activate B", Slot.B)):
        if expected is Slot.B:
            rig.agent("activate", Slot.B)
        result = counted_boot(runner, serial_log=tmp_path / f"serial-{expected.value}.log")
        assert not result.timed_out, f"{step}: the guest did not power off\n{tail(result)}"
        assert result.slot is expected, f"{step}: GRUB chose {result.slot}\n{tail(result)}"
        assert "KSOLO-GUEST cmdline:" in result.serial, f"{step}: no guest output\n{tail(result)}"
        assert set(result.cmdline_slots) == {expected.value}, (
            f"{step}: the kernel saw kubesolo.slot={result.cmdline_slots}, GRUB chose "
            f"{expected.value}\n{tail(result)}"
        )
        # GRUB loaded the kernel from the chosen slot's partition, not just any copy.
        part = layout.slot(expected).number
        assert f"BOOT_IMAGE=(hd0,gpt{part})/vmlinuz" in result.serial, tail(result)
        assert not result.halted
    env = rig.read_env()
    assert env is not None
    assert env["active_slot"] == "B"
    assert env["boot_counter"] == "2"
    assert env["boot_success"] == "0"
