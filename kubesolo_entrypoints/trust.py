"""Trust as the operator sees it: signed (TUF) or unsigned, and why an update is held back.

The mode is decided by configuration alone, in one place (:func:`trust_view`),
so ``status``, ``check``, ``apply`` and the metrics say the same thing on
every run:

* ``tuf``: ``trust_root=`` names the root.json shipped in the OS image;
  ``server=`` is the TUF repository and ``channel=`` the channel to follow;
* ``unsigned``: no trust root, and ``allow_unsigned=true`` was set by name:
  ``server=`` is a plain release document (DESIGN.md 5) trusted as served;
* ``unconfigured``: neither: ``check`` and ``apply`` refuse (exit 2) and say how.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubesolo_core.errors import ConfigError, PreflightRefused
from kubesolo_core.refusals import REASONS, Refusal, TrustRefused

if TYPE_CHECKING:
    import datetime as dt

    from kubesolo_core.ports import Fetcher, Progress
    from kubesolo_core.release import ImageSpec
    from kubesolo_entrypoints.config import Settings

UNSIGNED_WARNING = (
    "UNSIGNED: allow_unsigned=true and no trust_root: releases are trusted as served, "
    "without signatures, rollback or freeze protection"
)


def trust_view(settings: Settings) -> dict[str, Any]:
    """The trust mode of ``settings`` as a JSON-ready mapping (also the status line's source)."""
    if settings.trust_root is not None:
        return {
            "mode": "tuf",
            "unsigned": False,
            "trust_root": str(settings.trust_root),
            "channel": settings.channel,
            "note": f"TUF, channel {settings.channel}, trust root {settings.trust_root}",
        }
    if settings.allow_unsigned:
        return {"mode": "unsigned", "unsigned": True, "note": UNSIGNED_WARNING}
    return {
        "mode": "unconfigured",
        "unsigned": False,
        "note": "no trust_root: check and apply refuse until one is set",
    }


def tuf_cache(settings: Settings) -> Path:
    """ngclient's metadata cache: next to state.json, on the data partition."""
    return settings.state.parent / "tuf"


def _no_trust() -> ConfigError:
    return ConfigError(
        "no trust_root configured: releases must be signed",
        way_out="set trust_root=/etc/kubesolo/root.json (the repository's 1.root.json, shipped "
        "in the OS image), or allow_unsigned=true for a lab",
    )


class UntrustedFetcher:
    """The Fetcher of a box with neither a trust root nor ``allow_unsigned``: it fetches nothing.

    ``status``, ``rollback``, ``healthcheck`` and the metrics work as ever;
    ``check`` and ``apply`` end in a usage error that says how to configure trust.
    """

    def fetch_release(self, url: str) -> bytes:
        raise _no_trust()

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        raise _no_trust()


def build_fetcher(settings: Settings) -> Fetcher:
    """The Fetcher the trust mode calls for (cheap: the adapters import their libraries on use)."""
    if settings.trust_root is None and not settings.allow_unsigned:
        return UntrustedFetcher()
    from kubesolo_adapters.http import HttpFetcher

    if settings.trust_root is not None:
        from kubesolo_adapters.tuf import TufFetcher

        return TufFetcher(
            trust_root=settings.trust_root,
            cache_dir=tuf_cache(settings),
            channel=settings.channel,
            http=HttpFetcher(),
        )
    return HttpFetcher()


def announce(settings: Settings) -> dict[str, Any]:
    """The trust view of ``settings``; an unsigned box is warned about on stderr (every run)."""
    from kubesolo_entrypoints.invocation import say

    view = trust_view(settings)
    if view["unsigned"]:
        say(f"kubesolo-update: warning: {UNSIGNED_WARNING}")
    return view


def refused(
    state: Path, now: dt.datetime, error: BaseException, view: dict[str, Any], *, json_out: bool
) -> None:
    """Record a failed check/apply with its refusal reasons; print its ``--json`` document."""
    from kubesolo_entrypoints import records, render
    from kubesolo_entrypoints.exitcodes import exit_code_for
    from kubesolo_entrypoints.invocation import tell

    found = refusals_of(error)
    reasons = [r.reason for r in found]
    records.note_check(state, now, error=error, refusals=reasons, unsigned=view["unsigned"])
    if json_out:
        from kubesolo_entrypoints.invocation import json_reported

        doc = {"ok": False, "error": str(error), "exit_code": int(exit_code_for(error))}
        tell(render.dumps({**doc, "refusals": refusal_docs(found), "trust": view}))
        json_reported(error)


def refusals_of(error: BaseException) -> list[Refusal]:
    """The machine reasons behind an error (empty for plain failures)."""
    if isinstance(error, TrustRefused):
        return [error.refusal]
    if isinstance(error, PreflightRefused):
        codes = error.codes or ("",) * len(error.reasons)
        return [
            Refusal.of(code, detail) if code else Refusal(reason="preflight", message=detail)
            for code, detail in zip(codes, error.reasons, strict=False)
        ]
    return []


def refusal_docs(refusals: list[Refusal]) -> list[dict[str, str]]:
    """Refusals as ``--json`` shows them."""
    return [{"reason": r.reason, "message": r.message, "detail": r.detail} for r in refusals]


#: every reason the metric kubesolo_update_refusal{reason} always emits
ALL_REASONS = tuple(REASONS)
