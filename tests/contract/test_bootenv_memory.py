"""The BootEnv contract against the in-memory adapter, with both bootloader models."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest

from kubesolo_adapters.fakes import MemoryBootEnv
from kubesolo_core.bootmodel import BootModel, GrubModel, TrybootModel
from kubesolo_core.slots import Slot
from tests.contract.bootenv_suite import BootEnvContract, WorldFactory

_ids = itertools.count(1)


@attrs.define
class MemoryWorld:
    """MemoryBootEnv on a box whose firmware is the same pure model."""

    model: BootModel[Any]
    env: MemoryBootEnv[Any] = attrs.field(init=False)
    kind: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.env = MemoryBootEnv(model=self.model, env=self.model.initial(Slot.A))
        self.kind = self.model.kind

    def set_booted(self, slot: Slot | None) -> None:
        self.env.booted = slot

    def set_boot_id(self, boot_id: str | None) -> None:
        self.env.current_boot_id = boot_id

    def forget_env(self) -> None:
        # What the real adapters read for a missing file: GRUB an empty
        # variable set, tryboot the documented fresh autoboot.txt.
        self.env.env = {} if self.kind == "grub" else self.model.initial(Slot.A)

    def reopen(self) -> MemoryBootEnv[Any]:
        return self.env

    def reboot(self, *, clean: bool = True) -> Slot:
        if clean:
            self.env.request_reboot()
        outcome = self.model.boot(self.env.env, clean_shutdown=clean)
        self.env.env = outcome.env
        self.env.booted = outcome.slot
        self.env.current_boot_id = f"memory-boot-{next(_ids)}"
        self.env.reboot_requested = False
        return outcome.slot

    def reboot_requested(self) -> bool:
        return self.env.reboot_requested

    def snapshot(self) -> object:
        env = self.env.env
        return dict(env) if isinstance(env, dict) else env


class TestMemoryGrubBootEnv(BootEnvContract):
    @pytest.fixture
    def make_world(self) -> WorldFactory:
        return lambda: MemoryWorld(GrubModel())


class TestMemoryTrybootBootEnv(BootEnvContract):
    @pytest.fixture
    def make_world(self) -> WorldFactory:
        return lambda: MemoryWorld(TrybootModel())
