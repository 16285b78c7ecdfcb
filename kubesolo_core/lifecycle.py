"""The update lifecycle: phases, the persisted UpdateState, the transition table.

A transition is ``transition(state, to, now, ...) -> state`` or raises
:class:`IllegalTransition`; the table below is data, so tests, docs and the
simulator read the same thing. Time is passed in.

Phase meanings:

* ``idle``: nothing in flight (a fresh box).
* ``checking``: an attempt started: the release was fetched, preflight runs.
* ``downloading``: the passive slot is being written; its content is unknown.
* ``staged``: the passive slot holds the verified new image; nothing switched.
* ``activated``: the bootloader will trial (or is trialling) the new slot.
* ``verifying``: the health check passed; committing the bootloader (a crash
  here is resumed by the next health check).
* ``success``: the new slot is committed.
* ``rolled_back``: back on the previous slot (bootloader, auto or manual).
* ``failed``: the attempt failed before activation; the committed slot was
  never touched.
"""

from __future__ import annotations

import datetime as dt
import enum

import attrs

from kubesolo_core.errors import IllegalTransition
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version, as_version


class Phase(enum.Enum):
    """The nine phases of DESIGN.md 2.2."""

    IDLE = "idle"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    STAGED = "staged"
    ACTIVATED = "activated"
    VERIFYING = "verifying"
    SUCCESS = "success"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


P = Phase

#: phases from which a new attempt may start (-> checking)
RESTARTABLE = frozenset(
    {P.IDLE, P.CHECKING, P.DOWNLOADING, P.STAGED, P.SUCCESS, P.ROLLED_BACK, P.FAILED}
)

#: the transition table: phase -> phases it may move to
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.IDLE: frozenset({P.CHECKING}),
    # checking/downloading -> checking: an interrupted attempt is restarted
    P.CHECKING: frozenset({P.CHECKING, P.DOWNLOADING, P.FAILED}),
    P.DOWNLOADING: frozenset({P.CHECKING, P.STAGED, P.FAILED}),
    P.STAGED: frozenset({P.CHECKING, P.ACTIVATED, P.FAILED}),
    # activated -> activated: a failed health check bumps the failure count
    P.ACTIVATED: frozenset({P.ACTIVATED, P.VERIFYING, P.ROLLED_BACK, P.FAILED}),
    P.VERIFYING: frozenset({P.ACTIVATED, P.VERIFYING, P.SUCCESS, P.ROLLED_BACK}),
    P.SUCCESS: frozenset({P.CHECKING, P.ROLLED_BACK}),
    P.ROLLED_BACK: frozenset({P.CHECKING}),
    P.FAILED: frozenset({P.CHECKING}),
}

#: phases in which the target slot's content is being replaced (unknown until staged)
WRITING = frozenset({P.CHECKING, P.DOWNLOADING})
#: phases after an activation, before the outcome is known
POST_ACTIVATION = frozenset({P.ACTIVATED, P.VERIFYING})

SCHEMA_VERSION = 3


@attrs.frozen(kw_only=True)
class UpdateState:
    """The persisted state of the agent (state.json)."""

    phase: Phase = Phase.IDLE
    from_version: Version | None = attrs.field(default=None, converter=as_version)
    to_version: Version | None = attrs.field(default=None, converter=as_version)
    target_slot: Slot | None = None
    attempt_count: int = 0
    last_error: str | None = None
    started_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    health_check_failures: int = 0
    #: /proc/sys/kernel/random/boot_id when activated: a later boot on the old
    #: slot with another id means the trial ran and failed (tryboot leaves no trace)
    activation_boot_id: str | None = None
    #: raw SHA-256 of the image verified on the target slot
    image_sha256: str | None = None
    #: the highest version this box ever committed (the downgrade floor): it only
    #: rises, at every commit, and lives here so that it is saved in the same
    #: atomic write as the commit itself
    floor_version: Version | None = attrs.field(default=None, converter=as_version)
    #: the current attempt was let below the floor (or the running version) by
    #: ``--allow-downgrade``
    downgrade_allowed: bool = False

    @property
    def from_slot(self) -> Slot | None:
        """The slot the attempt started from (the one to fall back to)."""
        return self.target_slot.other() if self.target_slot is not None else None


def raised_floor(floor: Version | None, committed: Version | None) -> Version | None:
    """The downgrade floor after committing ``committed``: the higher of the two."""
    if committed is None or (floor is not None and committed <= floor):
        return floor
    return committed


def transition(
    state: UpdateState,
    to: Phase,
    now: dt.datetime,
    *,
    error: str | None = None,
    **changes: object,
) -> UpdateState:
    """Move ``state`` to phase ``to`` at time ``now``.

    Rules (DESIGN.md 2.2): -> checking with a target starts an attempt: it
    bumps attempt_count, and a new target version resets it to 1 and stamps
    started_at; -> failed and -> rolled_back record ``error`` in last_error;
    -> success clears it and the health failure count. ``changes`` sets other
    fields (validated by attrs).
    """
    if to not in TRANSITIONS[state.phase]:
        allowed = ", ".join(sorted(p.value for p in TRANSITIONS[state.phase]))
        raise IllegalTransition(
            f"cannot go from {state.phase.value} to {to.value} (allowed: {allowed})",
            way_out="run `kubesolo-update status` to see where the update stands",
        )
    fields: dict[str, object] = {"phase": to, "updated_at": now, **changes}
    if to is P.CHECKING:
        target = as_version(changes.get("to_version", state.to_version))  # type: ignore[arg-type]
        same = target == state.to_version and state.phase in RESTARTABLE - {P.IDLE}
        fields["attempt_count"] = state.attempt_count + 1 if same else 1
        fields["started_at"] = now
        fields["health_check_failures"] = 0
        fields["activation_boot_id"] = None
        fields.setdefault("image_sha256", None)
        fields.setdefault("downgrade_allowed", False)
    if to in (P.FAILED, P.ROLLED_BACK):
        if not error:
            raise IllegalTransition(f"a move to {to.value} must say why (last_error)")
        fields["last_error"] = error
    if to is P.SUCCESS:
        fields["last_error"] = None
        fields["health_check_failures"] = 0
        fields["floor_version"] = raised_floor(state.floor_version, state.to_version)
    return attrs.evolve(state, **fields)  # type: ignore[arg-type]
