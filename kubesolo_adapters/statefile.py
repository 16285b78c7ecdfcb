"""state.json on the data partition: the StateStore port as one JSON file.

* Format: :mod:`kubesolo_core.codec` (schema_version, step-by-step migrations).
* Saves are atomic (:func:`kubesolo_adapters.atomic.atomic_write`: temp file,
  fsync, rename, directory fsync): a power cut leaves the old state or the
  new one. The file is 0644 (the metrics exporter and operators read it);
  a missing directory is created 0755, whatever the umask.
* A garbage, truncated, empty, wrong-typed or future-schema file is never a
  traceback and never silently lost: it is renamed aside to
  ``<name>.corrupt-<UTC YYYYmmddTHHMMSSZ>`` and :class:`CorruptState` names
  both paths. The next load finds no file and starts from idle, so a box with
  a damaged state file recovers by itself after reporting it once.
* Only a file named ``*.json`` that looks like ours
  (:func:`kubesolo_core.codec.looks_like_state`: empty, or naming our keys)
  is ever renamed. A ``--state`` that points at something else by mistake
  (``/etc/passwd``, the update.conf, a kubelet's ``config.json``) is
  reported as corrupt and left exactly where it is: the agent must never
  move an operator's file because of a typo. Every operation loads before
  it saves, so such a file is never overwritten either.
* A path that is not a regular file (a FIFO, a directory, a device) is
  never opened for reading (:mod:`kubesolo_adapters.inputs`: a FIFO would
  hang every command), and a file that cannot be read at all (an I/O
  error) is :class:`OperationFailed` with the path and what was found; it is
  left in place, since nothing says its content is bad.
"""

from __future__ import annotations

import errno
from pathlib import Path

import attrs

from kubesolo_adapters.atomic import atomic_write, fsync_dir
from kubesolo_adapters.clock import SystemClock
from kubesolo_adapters.inputs import open_input
from kubesolo_core.codec import dumps_state, loads_state, looks_like_state
from kubesolo_core.errors import CorruptState, OperationFailed
from kubesolo_core.lifecycle import UpdateState
from kubesolo_core.ports import Clock

__all__ = ["JsonStateStore", "foreign_state"]

FILE_MODE = 0o644
DIR_MODE = 0o755
#: a real state file is well under 1 KiB; anything this big is not one
MAX_BYTES = 1 << 20
#: set-aside names tried per second before giving up (several corruptions in one second)
_ASIDE_TRIES = 100


def _oserror(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


@attrs.define
class JsonStateStore:
    """UpdateState in a JSON file at ``path`` (default /var/lib/kubesolo/update/state.json)."""

    path: Path = attrs.field(converter=Path)
    #: stamps the name of a set-aside corrupt file
    clock: Clock = attrs.field(factory=SystemClock, kw_only=True)

    def load(self) -> UpdateState:
        """The saved state; idle when there is no file; CorruptState (file set aside) if bad."""
        try:
            with open_input(self.path) as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return UpdateState()
        except OSError as exc:
            raise OperationFailed(
                f"state file {self.path}: cannot read it: {_oserror(exc)}",
                way_out=f"check {self.path} and its directory, or point --state elsewhere",
            ) from None
        try:
            if len(data) > MAX_BYTES:
                raise CorruptState(
                    f"{self.path}: {len(data)}+ bytes, larger than any state file "
                    f"({MAX_BYTES} bytes at most)"
                )
            return loads_state(data, source=str(self.path))
        except CorruptState as exc:
            raise self._set_aside(exc, data) from None

    def save(self, state: UpdateState) -> None:
        """Replace the file atomically with ``state`` (0644, directory fsynced)."""
        try:
            self._ensure_dir(self.path.parent)
            atomic_write(self.path, dumps_state(state).encode(), FILE_MODE)
        except OSError as exc:
            raise OperationFailed(
                f"state file {self.path}: could not save: {_oserror(exc)}; "
                "the previous state is unchanged",
                way_out=f"free space or fix permissions on {self.path.parent}, or --state",
            ) from None

    # ------------------------------------------------------------------ helpers

    def _set_aside(self, exc: CorruptState, data: bytes) -> CorruptState:
        """Rename the bad file aside and return the error that says where it went."""
        if self.path.suffix != ".json":
            return CorruptState(
                f"{exc.message}; left in place: only a *.json state file is ever moved aside",
                way_out=f"check --state (state= in update.conf): is {self.path} the state file?",
            )
        if not looks_like_state(data[:MAX_BYTES]):
            return CorruptState(
                f"{exc.message}; left in place: it is not a kubesolo-update state file "
                "(no schema_version or state keys), so it is not moved",
                way_out=f"check --state (state= in update.conf): is {self.path} the state file?",
            )
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
        base = f"{self.path.name}.corrupt-{stamp}"
        try:
            for n in range(_ASIDE_TRIES):
                aside = self.path.with_name(base if n == 0 else f"{base}-{n}")
                if not aside.exists():
                    break
            else:
                raise FileExistsError(errno.EEXIST, "too many set-aside files", str(aside))
            # rename, not copy: the bad bytes are kept as they were, and the
            # next load finds no file and starts from idle.
            self.path.rename(aside)
            fsync_dir(self.path.parent)
        except OSError as err:
            return CorruptState(
                f"{exc.message}; it could not be set aside ({_oserror(err)}), "
                "so the agent stops here on every run",
                way_out=f"move {self.path} away by hand to start from idle",
            )
        return CorruptState(
            f"{exc.message}; the file was kept as {aside} and the next run starts from idle",
            way_out=f"inspect {aside}; delete it once understood",
        )

    @staticmethod
    def _ensure_dir(directory: Path) -> None:
        missing: list[Path] = []
        d = directory
        while not d.exists() and d != d.parent:
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            # mkdir's mode is narrowed by the umask; the contract is 0755
            d.chmod(DIR_MODE)


def foreign_state(path: Path) -> bool:
    """Whether ``path`` holds something that is not a state file of ours.

    Then the agent refuses it (and leaves it in place) and must write nothing
    next to it either: no run lock, no last-check.json in some other
    program's folder. A missing file is not foreign (the agent creates it);
    a damaged file of ours is not foreign (it is set aside, under the lock).
    """
    try:
        with open_input(path) as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # a FIFO, a directory, a device, an unreadable file
    return not looks_like_state(data[:MAX_BYTES])
