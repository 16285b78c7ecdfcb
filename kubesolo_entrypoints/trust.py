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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubesolo_core.errors import ConfigError, PreflightRefused
from kubesolo_core.refusals import REASONS, Refusal, TrustRefused

if TYPE_CHECKING:
    from kubesolo_core.ports import Fetcher
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


def build_fetcher(settings: Settings) -> Fetcher:
    """The Fetcher the trust mode calls for (imported and built on first use)."""
    from kubesolo_adapters.http import HttpFetcher

    if settings.trust_root is not None:
        from kubesolo_adapters.tuf import TufFetcher

        return TufFetcher(
            trust_root=settings.trust_root,
            cache_dir=tuf_cache(settings),
            channel=settings.channel,
            http=HttpFetcher(),
        )
    if settings.allow_unsigned:
        return HttpFetcher()
    raise ConfigError(
        "no trust_root configured: releases must be signed",
        way_out="set trust_root=/etc/kubesolo/root.json (the repository's 1.root.json, shipped "
        "in the OS image), or allow_unsigned=true for a lab",
    )


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
