"""``kubesolo-release verify``: check a repository exactly as a box would.

It runs the agent's own :class:`~kubesolo_adapters.tuf.TufFetcher` over
``file://`` against a fresh metadata cache, bootstrapped from the trust root
a box ships (``--trust-root``, default the repository's ``1.root.json``), for
every channel: refresh, channel document, image target, and the image
streamed through the same chunk and hash checks the agent applies before a
byte reaches a slot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kubesolo_core.errors import KubesoloError
from kubesolo_core.release import parse_release


def verify_repository(served: Path, trust_root: Path, channels: list[str]) -> dict[str, Any]:
    """One entry per channel: ``{"ok": bool, "version"|"reason"+"error": ...}``."""
    from kubesolo_adapters.http import HttpFetcher
    from kubesolo_adapters.tuf import TufFetcher
    from kubesolo_core.refusals import TrustRefused

    results: dict[str, Any] = {}
    for channel in channels:
        with tempfile.TemporaryDirectory(prefix="kubesolo-verify-") as cache:
            fetcher = TufFetcher(
                trust_root=trust_root,
                cache_dir=Path(cache),
                channel=channel,
                http=HttpFetcher(retries=0),
            )
            try:
                release = parse_release(fetcher.fetch_release(served.as_uri() + "/"))
                size = 0
                for chunk in fetcher.open_image("", release.image):
                    size += len(chunk)
                results[channel] = {
                    "ok": True,
                    "version": str(release.version),
                    "image": release.image.url.rsplit("/", 1)[-1],
                    "bytes": size,
                }
            except TrustRefused as exc:
                results[channel] = {
                    "ok": False,
                    "reason": exc.refusal.reason,
                    "error": exc.message,
                }
            except KubesoloError as exc:
                results[channel] = {"ok": False, "reason": "error", "error": exc.message}
    return results
