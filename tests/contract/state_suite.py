"""The StateStore port's contract: one suite for MemoryStateStore and JsonStateStore.

A subclass overrides the ``world`` fixture with a :class:`StateWorld`: the
store under test plus raw access to what it keeps, so a test can plant a
damaged file and see where the store put it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Protocol

import pytest

from kubesolo_core.codec import dumps_state
from kubesolo_core.errors import CorruptState
from kubesolo_core.lifecycle import SCHEMA_VERSION, Phase, UpdateState
from kubesolo_core.ports import StateStore
from kubesolo_core.slots import Slot

T0 = dt.datetime(2026, 2, 3, 4, 5, 6, tzinfo=dt.UTC)

RICH = UpdateState(
    phase=Phase.ACTIVATED,
    from_version="1.2.0",
    to_version="1.3.0",
    target_slot=Slot.B,
    attempt_count=2,
    last_error="previous attempt: slot B read back a different SHA-256",
    started_at=T0,
    updated_at=T0 + dt.timedelta(minutes=3),
    health_check_failures=1,
    activation_boot_id="0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    image_sha256="ab" * 32,
)

_VALID = dumps_state(RICH).encode()
_DOC = json.loads(_VALID)

#: damaged documents of ours, each must be CorruptState, kept aside, and leave idle behind
CORRUPT: dict[str, bytes] = {
    "garbage": b'\x00\x01\x02 "phase": this is not json {{{',
    "truncated": _VALID[: len(_VALID) // 2],
    "empty": b"",
    "blank": b"  \n\t\n",
    "future-schema": json.dumps({**_DOC, "schema_version": SCHEMA_VERSION + 97}).encode(),
    "wrong-types": json.dumps({**_DOC, "attempt_count": "three", "phase": 42}).encode(),
    "unknown-phase": json.dumps({**_DOC, "phase": "exploding"}).encode(),
    "unknown-key": json.dumps({**_DOC, "surprise": True}).encode(),
    "bad-time": json.dumps({**_DOC, "started_at": "yesterday"}).encode(),
}

#: files that are not a state file of ours (a mistyped --state): CorruptState, left in place
FOREIGN: dict[str, bytes] = {
    "binary": b"\x7fELF\x02\x01\x01\x00 not json at all",
    "not-an-object": b"[1, 2, 3]\n",
    "other-json": b'{"kind": "KubeletConfiguration", "apiVersion": "kubelet.config.k8s.io/v1"}',
    "nested-deep": b"[" * 100_000,
}

#: what the original agent (schema 1) wrote: no schema_version, no boot id, no image hash
SCHEMA_1 = {
    "phase": "staged",
    "from_version": "1.0.0",
    "to_version": "1.1.0",
    "target_slot": "B",
    "attempt_count": 1,
    "last_error": None,
    "started_at": "2025-12-01T10:00:00+00:00",
    "updated_at": "2025-12-01T10:05:00+00:00",
    "health_check_failures": 0,
}


class StateWorld(Protocol):
    """The store under test and raw access to its storage."""

    store: StateStore
    #: how the store names itself in errors (the real store: its path)
    name: str

    def write_raw(self, data: bytes) -> None: ...

    def read_raw(self) -> bytes | None:
        """The stored bytes, None when there is nothing."""

    def kept_aside(self) -> list[bytes]:
        """Every damaged content the store set aside, oldest first."""

    def fail_next_save(self) -> type[BaseException]:
        """Make the next save fail while replacing; returns what it raises."""


class StateContract:
    """Every StateStore adapter must pass these."""

    @pytest.fixture
    def world(self) -> StateWorld:
        raise NotImplementedError("a subclass provides the world")

    def test_absent_is_idle(self, world: StateWorld) -> None:
        assert world.read_raw() is None
        assert world.store.load() == UpdateState()

    def test_round_trip(self, world: StateWorld) -> None:
        world.store.save(RICH)
        assert world.store.load() == RICH

    def test_save_replaces(self, world: StateWorld) -> None:
        world.store.save(RICH)
        world.store.save(UpdateState(phase=Phase.SUCCESS, to_version="1.3.0"))
        assert world.store.load() == UpdateState(phase=Phase.SUCCESS, to_version="1.3.0")

    def test_saved_text_is_versioned_json(self, world: StateWorld) -> None:
        world.store.save(RICH)
        raw = world.read_raw()
        assert raw is not None
        assert json.loads(raw)["schema_version"] == SCHEMA_VERSION

    @pytest.mark.parametrize("kind", sorted(CORRUPT))
    def test_corrupt_is_reported_kept_and_recovered(self, world: StateWorld, kind: str) -> None:
        world.write_raw(CORRUPT[kind])
        with pytest.raises(CorruptState) as info:
            world.store.load()
        assert world.name in str(info.value)
        # kept, byte for byte, never silently lost
        assert world.kept_aside() == [CORRUPT[kind]]
        assert world.read_raw() is None
        # the next run starts from idle, and can save again
        assert world.store.load() == UpdateState()
        world.store.save(RICH)
        assert world.store.load() == RICH

    @pytest.mark.parametrize("kind", sorted(FOREIGN))
    def test_a_foreign_file_is_refused_and_left_in_place(
        self, world: StateWorld, kind: str
    ) -> None:
        world.write_raw(FOREIGN[kind])
        for _ in range(2):  # every run refuses it; none moves it
            with pytest.raises(CorruptState, match="left in place") as info:
                world.store.load()
            assert world.name in str(info.value)
        assert world.read_raw() == FOREIGN[kind]
        assert world.kept_aside() == []

    def test_every_corruption_is_kept(self, world: StateWorld) -> None:
        for kind in ("garbage", "empty"):
            world.write_raw(CORRUPT[kind])
            with pytest.raises(CorruptState):
                world.store.load()
        assert world.kept_aside() == [CORRUPT["garbage"], CORRUPT["empty"]]

    @pytest.mark.parametrize("explicit", [False, True])
    def test_schema_1_is_migrated(self, world: StateWorld, explicit: bool) -> None:
        doc = {**SCHEMA_1, "schema_version": 1} if explicit else SCHEMA_1
        world.write_raw(json.dumps(doc).encode())
        assert world.store.load() == UpdateState(
            phase=Phase.STAGED,
            from_version="1.0.0",
            to_version="1.1.0",
            target_slot=Slot.B,
            attempt_count=1,
            started_at=dt.datetime(2025, 12, 1, 10, 0, tzinfo=dt.UTC),
            updated_at=dt.datetime(2025, 12, 1, 10, 5, tzinfo=dt.UTC),
            activation_boot_id=None,
            image_sha256=None,
        )
        assert world.kept_aside() == []

    def test_failed_save_keeps_the_old_state(self, world: StateWorld) -> None:
        world.store.save(RICH)
        before = world.read_raw()
        error = world.fail_next_save()
        with pytest.raises(error):
            world.store.save(UpdateState(phase=Phase.FAILED, last_error="never written"))
        assert world.read_raw() == before
        assert world.store.load() == RICH
