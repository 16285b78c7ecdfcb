"""Exit codes of ``kubesolo-update``: few, stable, and mapped from errors in one place.

| code | name        | meaning                                                             |
|------|-------------|---------------------------------------------------------------------|
| 0    | OK          | the command did what was asked (or there was nothing to do)         |
| 1    | FAILED      | the operation failed (network, disk, bootloader, wrong phase);      |
|      |             | nothing was committed, the box boots what it booted before          |
| 2    | USAGE       | bad usage or configuration: unknown option or key, malformed value, |
|      |             | unreadable config file, wrong slot spec                             |
| 3    | REFUSED     | refused by preflight before any byte of the passive slot was       |
|      |             | touched (no room, node label, downgrade); ``--force`` or            |
|      |             | ``--allow-downgrade`` say how to override                          |
| 4    | UNHEALTHY   | the health check failed (init scripts reboot on it when             |
|      |             | ``status --json`` says ``"reboot_required": true``)                 |
| 5    | CORRUPT     | corrupt input: state.json, the release document, a version string   |
| 6    | UNTRUSTED   | the release failed TUF verification (signature, expiry, rollback,   |
|      |             | hash, length, target path): nothing it did not vouch for was staged |

These numbers are part of the operator's contract (scripts, the CronJob and
the init script depend on them): never renumber, only add.
"""

from __future__ import annotations

import enum

from kubesolo_core.errors import (
    ConfigError,
    CorruptInput,
    KubesoloError,
    PreflightRefused,
)
from kubesolo_core.refusals import TrustRefused


class ExitCode(enum.IntEnum):
    """The documented exit codes (see the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    UNHEALTHY = 4
    CORRUPT = 5
    UNTRUSTED = 6


#: the one mapping from error classes to exit codes; the first match wins,
#: so subclasses come before their bases
_BY_CLASS: tuple[tuple[type[KubesoloError], ExitCode], ...] = (
    (ConfigError, ExitCode.USAGE),
    (TrustRefused, ExitCode.UNTRUSTED),
    (PreflightRefused, ExitCode.REFUSED),
    (CorruptInput, ExitCode.CORRUPT),
)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for ``error``; anything not listed above is an operation failure."""
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return ExitCode.FAILED


#: the table as shown at the end of ``kubesolo-update --help``
HELP_EPILOG = (
    "Exit codes: 0 ok; 1 operation failed (nothing committed); 2 usage or "
    "configuration error; 3 refused by preflight; 4 health check failed; "
    "5 corrupt input (state.json, release document); 6 untrusted release (TUF verification "
    "refused it)."
)
