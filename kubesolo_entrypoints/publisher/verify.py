"""``kubesolo-release verify``: check a repository exactly as a box would.

It runs the agent's own :class:`~kubesolo_adapters.tuf.TufFetcher` over
``file://`` against a fresh metadata cache, bootstrapped from the trust root
a box ships (``--trust-root``, default the repository's ``1.root.json``), for
every channel: refresh, channel document, image target, and the image
streamed through the same chunk and hash checks the agent applies before a
byte reaches a slot. A channel that offers a chunk index has the index
fetched and checked as the agent does (TUF length and hash, format, the
image it describes), and every chunk file it lists is looked for in the
store with the size the index gives: a box would fall back to the full image
for want of any of them, so a missing one fails the channel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kubesolo_core.errors import KubesoloError
from kubesolo_core.release import ImageSpec, parse_release


def _chunk_store(image: ImageSpec) -> dict[str, Any]:
    """The channel's chunk index and store as a box sees them; KubesoloError when unusable."""
    from kubesolo_adapters.chunkfetch import HttpChunkSource
    from kubesolo_adapters.http import _local_path
    from kubesolo_core.chunks import chunk_path, parse_index
    from kubesolo_core.errors import CorruptInput

    spec = image.chunks
    if spec is None:
        return {}
    index = parse_index(HttpChunkSource().fetch_index("", spec))
    if (index.image_size, index.raw_sha256) != (image.raw_size, image.raw_sha256):
        raise CorruptInput(f"chunk index {spec.index} describes another image")
    store = Path(_local_path(spec.store) or spec.store)
    sizes = {c.sha256: c.stored for c in index}
    missing = []
    for sha, stored in sizes.items():
        path = store / chunk_path(sha)
        try:
            ok = path.stat().st_size == stored
        except OSError:
            ok = False
        if not ok:
            missing.append(path.name)
    if missing:
        raise CorruptInput(
            f"{len(missing)} of {len(sizes)} chunk files are missing from {store} or have "
            f"another size than the index says (first: {missing[0]}); boxes would download "
            "the full image",
            way_out="upload the whole chunk store (targets/chunks/) before the metadata",
        )
    return {"chunks": len(index), "distinct_chunks": len(sizes)}


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
                continue
            except KubesoloError as exc:
                results[channel] = {"ok": False, "reason": "error", "error": exc.message}
                continue
            try:
                results[channel].update(_chunk_store(release.image))
            except KubesoloError as exc:
                results[channel] = {"ok": False, "reason": "chunk_store", "error": exc.message}
    return results
