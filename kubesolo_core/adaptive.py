"""Adaptive updates, orchestrated: two ports, and the choice between chunks and the full image.

:func:`write_release` is what ``apply`` calls to put a release's image on the
passive slot. When the release offers a chunk index and the agent has the
adaptive ports, it fetches the index (trusted through the hash the release
document names), asks the slots which chunks they already hold, plans
(:func:`kubesolo_core.chunks.plan_update`) and lets the slot adapter carry
the plan out. Anything wrong about the index or a chunk (missing, corrupt,
not matching the release) abandons the adaptive path with a reason, and the
full image is downloaded instead, exactly as without an index. The slot is
in either case read back against ``raw_sha256`` before it may be staged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import attrs

from kubesolo_core.chunks import (
    INDEX_LIMIT,
    AdaptiveStats,
    ChunkIndex,
    InvalidChunkIndex,
    Need,
    Plan,
    cheaper_in_full,
    parse_index,
    plan_update,
)
from kubesolo_core.errors import FetchError, VerifyError
from kubesolo_core.ports import Fetcher, Progress, SlotStore, WriteResult
from kubesolo_core.release import ChunksSpec, ImageSpec
from kubesolo_core.slots import Slot

#: (need, raw bytes as received and decompressed, bytes served for it)
Fetched = tuple[Need, bytes, int]
#: start fetching these chunks (bounded concurrency); iterate the results in any order
FetchChunks = Callable[[Sequence[Need]], Iterator[Fetched]]


class AdaptiveFallback(Exception):
    """The adaptive path cannot be used; ``reason`` says why (logged, then a full download)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChunkSource(Protocol):
    """The chunk index and the chunk store of a release (the Fetcher's adaptive half)."""

    def fetch_index(self, release_url: str, spec: ChunksSpec) -> bytes:
        """The index bytes; FetchError when missing, over ``spec.size`` or not ``spec.sha256``."""

    def fetch_chunks(
        self, release_url: str, spec: ChunksSpec, needs: Sequence[Need]
    ) -> Iterator[Fetched]:
        """Fetch the chunk files of ``needs`` with bounded concurrency (started at once).

        Yields each need with its decompressed bytes (never more than its
        length) and the bytes served, in any order. The bytes are not
        trusted: the writer checks each against its SHA-256. Raises
        FetchError for a chunk that cannot be had (after the retries of a
        full download) or does not decompress.
        """


@attrs.frozen(kw_only=True)
class Survey:
    """What the slots hold already, in terms of an index."""

    #: per chunk of the index: the passive slot holds it at its offset
    in_place: tuple[bool, ...]
    #: chunk hash -> an offset where the booted slot holds it (index hashes only)
    seed: Mapping[bytes, int]


@attrs.frozen(kw_only=True)
class ChunkWrite:
    """What carrying out a plan did."""

    raw_sha256: str
    copied: int
    downloaded: int
    written: int
    requests: int


class ChunkedSlots(Protocol):
    """The slots' adaptive half: survey what is there, write a plan verified."""

    def survey(self, target: Slot, seed: Slot | None, index: ChunkIndex) -> Survey:
        """Hash the target at each chunk's range; find the missing chunks in the seed slot.

        The seed is checked at the missing chunks' own offsets, and chunked
        whole (with the index's rule) when :func:`~kubesolo_core.chunks.worth_a_full_scan`
        says so. An unreadable, torn or foreign seed simply contributes no chunks.
        """

    def write_plan(
        self,
        target: Slot,
        *,
        seed: Slot | None,
        index: ChunkIndex,
        plan: Plan,
        fetch: FetchChunks,
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> ChunkWrite:
        """Copy and fetch what the plan says, verify every chunk before it is written.

        Writes only the blocks that differ from what the slot holds, the
        first MiB last; then flushes, reads back ``image.raw_size`` bytes and
        raises VerifyError unless they hash to ``image.raw_sha256``. A seed
        chunk that no longer matches is fetched instead; a fetched chunk that
        does not match raises VerifyError. Every chunk write is a durable
        write (a power cut leaves the slot torn, never the other slot touched).
        """


@attrs.define(kw_only=True)
class AdaptiveUpdater:
    """The two adaptive ports, as the Agent holds them."""

    source: ChunkSource
    slots: ChunkedSlots

    def write(
        self,
        target: Slot,
        seed: Slot | None,
        release_url: str,
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> tuple[WriteResult, AdaptiveStats]:
        """Build ``target`` from chunks; AdaptiveFallback when that cannot be done."""
        spec = image.chunks
        if spec is None:
            raise AdaptiveFallback("the release offers no chunk index")
        if spec.size > INDEX_LIMIT:
            raise AdaptiveFallback(f"chunk index of {spec.size} bytes is over {INDEX_LIMIT}")
        try:
            data = self.source.fetch_index(release_url, spec)
            index = parse_index(data)
        except (FetchError, InvalidChunkIndex) as exc:
            raise AdaptiveFallback(f"chunk index unusable: {exc}") from None
        if index.image_size != image.raw_size or index.raw_sha256 != image.raw_sha256:
            raise AdaptiveFallback(
                f"chunk index describes another image ({index.image_size} bytes, "
                f"{index.raw_sha256[:12]}...) than the release ({image.raw_size} bytes, "
                f"{image.raw_sha256[:12]}...)"
            )
        survey = self.slots.survey(target, seed, index)
        plan = plan_update(index, survey.in_place, survey.seed)
        if cheaper_in_full(plan, image.size):
            raise AdaptiveFallback(
                f"the slots hold too little of this release: {len(plan.fetches)} chunk files "
                f"of {plan.download_bytes} bytes would be fetched, the full image is "
                f"{image.size} bytes in one stream"
            )

        def fetch(needs: Sequence[Need]) -> Iterator[Fetched]:
            return self.source.fetch_chunks(release_url, spec, needs)

        try:
            done = self.slots.write_plan(
                target,
                seed=seed,
                index=index,
                plan=plan,
                fetch=fetch,
                image=image,
                progress=progress,
            )
        except (FetchError, VerifyError) as exc:
            raise AdaptiveFallback(f"chunked write abandoned: {exc}") from None
        stats = AdaptiveStats(
            mode="adaptive",
            image_size=image.raw_size,
            in_place=plan.in_place_bytes,
            copied=done.copied,
            downloaded=done.downloaded + len(data),
            written=done.written,
            chunks=plan.chunks,
            requests=done.requests,
        )
        # ``written`` of a WriteResult counts the image's raw bytes now on the slot (as read
        # back), whether written now or found in place; the bytes written are in the stats.
        result = WriteResult(written=image.raw_size, raw_sha256=done.raw_sha256, served_sha256="")
        return result, stats


def write_release(
    *,
    slots: SlotStore,
    fetcher: Fetcher,
    adaptive: AdaptiveUpdater | None,
    target: Slot,
    seed: Slot | None,
    release_url: str,
    image: ImageSpec,
    progress: Progress | None = None,
    events: Callable[..., None] | None = None,
) -> tuple[WriteResult, AdaptiveStats]:
    """Put ``image`` on ``target``: from chunks when offered and possible, else the full image."""
    if image.chunks is None:
        reason = "the release offers no chunk index"
    elif adaptive is None:
        reason = "adaptive updates are off"
    else:
        try:
            return adaptive.write(target, seed, release_url, image, progress)
        except AdaptiveFallback as exc:
            reason = exc.reason
            if events is not None:
                events("update.adaptive_fallback", reason=reason)
    chunks = fetcher.open_image(release_url, image)
    result = slots.write_image(target, chunks, image, progress)
    return result, AdaptiveStats(
        mode="full",
        image_size=image.raw_size,
        downloaded=image.size,
        written=result.written,
        fallback=reason,
    )
