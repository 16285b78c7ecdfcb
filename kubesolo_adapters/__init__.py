"""The adapters of kubesolo-update: one module per port implementation, real and fake.

Real adapters, by port: BootEnv (:mod:`~kubesolo_adapters.grub` over
:mod:`~kubesolo_adapters.grubenv`/:mod:`~kubesolo_adapters.grubenvfile`,
:mod:`~kubesolo_adapters.tryboot` over :mod:`~kubesolo_adapters.autoboot`, the
kernel's facts in :mod:`~kubesolo_adapters.bootfacts`), SlotStore
(:mod:`~kubesolo_adapters.blockdev`, with :mod:`~kubesolo_adapters.slotfind`,
:mod:`~kubesolo_adapters.fsversion`, :mod:`~kubesolo_adapters.slotwriter` over the
write pipeline :mod:`~kubesolo_adapters.slotpipe` (:mod:`~kubesolo_adapters.slotio`,
:mod:`~kubesolo_adapters.slotverify`) and the identity guard
:mod:`~kubesolo_adapters.slotguard`), Fetcher
(:mod:`~kubesolo_adapters.http` with :mod:`~kubesolo_adapters.download`; signed
releases: :mod:`~kubesolo_adapters.tuf` over python-tuf's ngclient in
:mod:`~kubesolo_adapters.tufclient`), Kube (:mod:`~kubesolo_adapters.kubectl`),
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
    "download",
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
    "slotio",
    "slotpipe",
    "slotverify",
    "slotwriter",
    "statefile",
    "tryboot",
    "tuf",
    "tufclient",
]
