"""The adapters of kubesolo-update: one module per port implementation, real and fake.

Real adapters, by port: BootEnv (:mod:`~kubesolo_adapters.grub` over
:mod:`~kubesolo_adapters.grubenv`/:mod:`~kubesolo_adapters.grubenvfile`,
:mod:`~kubesolo_adapters.tryboot` over :mod:`~kubesolo_adapters.autoboot`, the
kernel's facts in :mod:`~kubesolo_adapters.bootfacts`), SlotStore
(:mod:`~kubesolo_adapters.blockdev`, with :mod:`~kubesolo_adapters.slotfind`,
:mod:`~kubesolo_adapters.fsversion`, :mod:`~kubesolo_adapters.slotwriter` and the
identity guard :mod:`~kubesolo_adapters.slotguard`), Fetcher
(:mod:`~kubesolo_adapters.http`), Kube (:mod:`~kubesolo_adapters.kubectl`),
HealthProbes (:mod:`~kubesolo_adapters.probes`), StateStore
(:mod:`~kubesolo_adapters.statefile`), Clock (:mod:`~kubesolo_adapters.clock`).

Stand-ins that ship for library users, the simulator and the tests:
:mod:`~kubesolo_adapters.fakes` (every port in memory, a whole box, the
simulator) and :mod:`~kubesolo_adapters.sandbox` (a box made of files: firmware
players, a release builder, a local server). Modules are imported on use, so
a command pays only for the adapters it needs.
"""

__all__ = [
    "autoboot",
    "blockdev",
    "bootfacts",
    "clock",
    "fakes",
    "fsversion",
    "grub",
    "grubenv",
    "grubenvfile",
    "http",
    "kubectl",
    "probes",
    "sandbox",
    "slotfind",
    "slotguard",
    "slotwriter",
    "statefile",
    "tryboot",
]
