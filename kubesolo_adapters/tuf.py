"""Signed releases: the Fetcher port over a TUF repository (python-tuf's ngclient).

The trust anchor is a ``root.json`` shipped in the OS image (``trust_root=``);
ngclient's metadata cache lives next to state.json on the data partition, so
rollback and freeze protection hold across runs and reboots. All bytes come
through :class:`~kubesolo_adapters.http.HttpFetcher` (one HTTP stack: the same
timeouts, size caps, minimum speed, retries and file:// URLs).

A release is two TUF targets (see :mod:`kubesolo_core.channel`): the channel
document ``channels/<channel>.json`` and the image it names. ``fetch_release``
refreshes the metadata (root chain, timestamp, snapshot, targets), looks both
targets up, downloads and verifies the channel document, and hands the
services an ordinary release document (DESIGN.md 5) in which *every* value
was vouched for by TUF: the image's length and SHA-256 come from the signed
targets metadata, the rest from the verified channel document.
``open_image`` then streams the image straight to the slot writer:

* at most the TUF length is read (the HTTP layer refuses a longer body or
  ``Content-Length`` before the first byte);
* with a chunk list in the channel document, each chunk is held until its
  SHA-256 matches and only then passed on, and the last one is held until
  the stream ended at exactly the TUF length: no byte TUF has not vouched
  for reaches the slot (the list is vouched for through the channel
  document's TUF hash, so the whole-image hash is not computed again);
* without one (a repository of other TUF tooling), the TUF hash is checked
  as the stream ends, before the slot is staged (the slot writer never
  writes the head of a failed image);
* the slot writer reads the slot back against ``raw_sha256``.

When the channel document offers a chunk index (adaptive updates), the index
is a TUF target too: the release document's ``image.chunks`` carries the
index's URL with the length and SHA-256 of the signed targets metadata, and
the store's URL. The adaptive path (:mod:`kubesolo_core.adaptive`) checks the
index against them before it reads a byte of it, and each chunk against the
index before it is written; anything wrong there falls back to the image
above.

python-tuf does not judge target paths: :func:`kubesolo_core.channel.safe_target_path`
does, for the channel document and for the image, chunk index and chunk
store it names.

Every refusal is a :class:`~kubesolo_core.refusals.TrustRefused` with a machine
reason; a network failure stays a :class:`~kubesolo_core.errors.FetchError`.

As in :mod:`kubesolo_adapters.http`, what only a fetch needs (the channel and
release formats, hashing, python-tuf) is imported by the methods that fetch:
every command builds this fetcher, and ``status`` never fetches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from kubesolo_adapters.http import HttpFetcher
from kubesolo_core.errors import ConfigError, FetchError, VerifyError
from kubesolo_core.refusals import TrustRefused

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile
    from tuf.ngclient import Updater

    from kubesolo_core.channel import ChannelDoc
    from kubesolo_core.ports import Progress
    from kubesolo_core.release import ChunksSpec, ImageSpec

__all__ = ["CHANNEL_LIMIT", "TufFetcher", "classify_fetch_error"]

#: a channel document is a few KiB (a 4 GiB image in 4 MiB chunks: ~70 KiB)
CHANNEL_LIMIT = 1 << 20
#: the shipped root.json: ngclient takes a root of at most 512,000 bytes from a repository
MAX_ROOT_BYTES = 512_000


def classify_fetch_error(exc: BaseException) -> str | None:
    """The refusal reason behind a FetchError of the HTTP layer, None for a plain failure."""
    from kubesolo_adapters.download import FetchTooLong

    if isinstance(exc, FetchTooLong):
        return "length_mismatch"
    text = str(exc)
    if "slower than" in text:
        return "slow_retrieval"
    if "SHA-256" in text:
        return "hash_mismatch"
    if "more than the" in text or "release announces" in text or "the release says" in text:
        return "length_mismatch"
    return None


@attrs.frozen(kw_only=True)
class _Vouched:
    """What TUF said about one image target in this run."""

    size: int
    sha256: str
    chunk_size: int
    chunk_sha256: tuple[str, ...]


@attrs.define(kw_only=True)
class TufFetcher:
    """The Fetcher port over a TUF repository; ``url`` is the repository's base URL.

    The repository serves ``metadata/`` (root chain, timestamp, snapshot,
    targets) and ``targets/`` under that URL.
    """

    trust_root: Path
    cache_dir: Path
    channel: str = "stable"
    http: HttpFetcher = attrs.field(factory=HttpFetcher)
    _vouched: dict[str, _Vouched] = attrs.field(factory=dict, init=False)

    # ----------------------------------------------------------------- plumbing

    def _root_bytes(self) -> bytes:
        from kubesolo_adapters.inputs import read_input

        try:
            # a regular file only (a FIFO would block, /dev/zero never end),
            # and no bigger than ngclient would take a root from a repository
            return read_input(self.trust_root, limit=MAX_ROOT_BYTES)
        except OSError as exc:
            raise ConfigError(
                f"trust_root {self.trust_root} cannot be read: {exc.strerror or exc}",
                way_out="point trust_root= (--trust-root) at the root.json shipped in the OS image",
            ) from None

    def _updater(self, base: str) -> Updater:
        from kubesolo_adapters.tufclient import new_updater

        root = self._root_bytes()
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return new_updater(
            root, base=base, cache_dir=self.cache_dir, http=self.http, source=self.trust_root
        )

    def _consistent(self) -> bool:
        from kubesolo_adapters.tufclient import consistent_snapshot

        return consistent_snapshot(self.cache_dir)

    def _target_url(self, base: str, info: TargetFile) -> str:
        from kubesolo_core.channel import UnsafeTargetPath, safe_target_path

        path = info.get_prefixed_paths()[0] if self._consistent() else info.path
        try:
            # the hash prefix comes from signed metadata too: judge the whole path
            safe_target_path(path)
        except UnsafeTargetPath as exc:
            raise TrustRefused("unsafe_target_path", exc.message) from None
        return f"{base}targets/{path}"

    # ----------------------------------------------------------------- Fetcher port

    def fetch_release(self, url: str) -> bytes:
        """Refresh the metadata and return the channel's release as a DESIGN.md 5 document."""
        from kubesolo_adapters.tufclient import refusals as _refusals
        from kubesolo_core.channel import (
            InvalidChannel,
            UnsafeTargetPath,
            channel_target,
            parse_channel,
        )

        base = url if url.endswith("/") else f"{url}/"
        doc_path = channel_target(self.channel)
        updater = self._updater(base)
        with _refusals("TUF metadata"):
            updater.refresh()
        with _refusals(f"target {doc_path}"):
            info = updater.get_targetinfo(doc_path)
        if info is None:
            raise TrustRefused(
                "unknown_target",
                f"{doc_path} is not a target of the signed metadata",
                way_out=f"publish the channel: kubesolo-release add IMAGE --channel {self.channel}",
            )
        if info.length > CHANNEL_LIMIT:
            raise TrustRefused(
                "length_mismatch", f"{doc_path} is {info.length} bytes, over {CHANNEL_LIMIT}"
            )
        with _refusals(f"target {doc_path}"):
            data = self.http.fetch_release(self._target_url(base, info), limit=info.length)
            info.verify_length_and_hashes(data)
        try:
            doc = parse_channel(data, channel=self.channel)
        except UnsafeTargetPath as exc:
            raise TrustRefused("unsafe_target_path", f"{doc_path}: {exc.message}") from None
        except InvalidChannel as exc:
            raise TrustRefused("invalid_release", f"{doc_path}: {exc.message}") from None
        with _refusals(f"target {doc.image.target}"):
            image = updater.get_targetinfo(doc.image.target)
        if image is None:
            raise TrustRefused(
                "unknown_target", f"{doc.image.target} (named by {doc_path}) is not a target"
            )
        index = None
        if doc.image.chunks is not None:
            with _refusals(f"target {doc.image.chunks.index}"):
                index = updater.get_targetinfo(doc.image.chunks.index)
            if index is None:
                # The signed metadata contradicts itself (kubesolo-release never writes
                # this, `verify` reports it): refused like an image that is not a target.
                raise TrustRefused(
                    "unknown_target",
                    f"chunk index {doc.image.chunks.index} (named by {doc_path}) is not a target",
                )
        return self._release_doc(base, doc_path, doc, image, index)

    def _chunks_spec(
        self, base: str, doc: ChannelDoc, index: TargetFile | None
    ) -> ChunksSpec | None:
        """The index as TUF vouches for it (URL, length, SHA-256) and the store's URL."""
        from kubesolo_core.release import ChunksSpec

        if doc.image.chunks is None or index is None:
            return None
        return ChunksSpec(
            index=self._target_url(base, index),
            sha256=_sha256(index),
            size=index.length,
            store=f"{base}targets/{doc.image.chunks.store}/",
        )

    def _release_doc(
        self,
        base: str,
        doc_path: str,
        doc: ChannelDoc,
        image: TargetFile,
        index: TargetFile | None = None,
    ) -> bytes:
        from kubesolo_core.channel import chunk_count
        from kubesolo_core.release import ImageSpec, Release, release_document

        sha = _sha256(image)
        chunks = doc.image.chunk_sha256
        if chunks and len(chunks) != chunk_count(image.length, doc.image.chunk_size):
            raise TrustRefused(
                "invalid_release",
                f"{doc_path} lists {len(chunks)} chunks, the image target of {image.length} "
                f"bytes has {chunk_count(image.length, doc.image.chunk_size)}",
            )
        if doc.image.compression == "none" and (
            doc.image.raw_size != image.length or doc.image.raw_sha256 != sha
        ):
            raise TrustRefused(
                "invalid_release",
                f"{doc_path}: an uncompressed image's raw size and hash must be the target's",
            )
        url = self._target_url(base, image)
        self._vouched[url] = _Vouched(
            size=image.length,
            sha256=sha,
            chunk_size=doc.image.chunk_size,
            chunk_sha256=chunks,
        )
        release = Release(
            schema=1,
            version=doc.version,
            image=ImageSpec(
                url=url,
                sha256=sha,
                size=image.length,
                compression=doc.image.compression,
                raw_size=doc.image.raw_size,
                raw_sha256=doc.image.raw_sha256,
                chunks=self._chunks_spec(base, doc, index),
            ),
            min_from_version=doc.min_from_version,
        )
        return json.dumps(release_document(release)).encode()

    def open_image(
        self, release_url: str, image: ImageSpec, progress: Progress | None = None
    ) -> Iterator[bytes]:
        """Stream the image target; only what TUF vouched for leaves this iterator."""
        vouched = self._vouched.get(image.url)
        if vouched is None or (vouched.size, vouched.sha256) != (image.size, image.sha256):
            raise TrustRefused(
                "unknown_target",
                f"{image.url} was not looked up through TUF in this run",
                way_out="run check/apply again: the image must come from a verified release",
            )
        # With a chunk list every byte is checked before it is passed on (the list
        # is vouched for by TUF through the channel document's hash), so a second
        # whole-image hash would only cost a pass over the image.
        try:
            chunks = self.http.open_image(
                image.url, image, progress, check_hash=not vouched.chunk_sha256
            )
        except FetchError as exc:
            reason = classify_fetch_error(exc)
            if reason is None:
                raise
            raise TrustRefused(reason, str(exc)) from None
        if vouched.chunk_sha256:
            chunks = _chunk_verified(chunks, vouched, image.url)
        return _classified(chunks)


def _sha256(info: TargetFile) -> str:
    """The SHA-256 the signed metadata gives a target; refused when it gives none."""
    sha = info.hashes.get("sha256")
    if sha is None:
        raise TrustRefused(
            "untrusted_repository",
            f"{info.path} has no sha256 in the signed metadata ({', '.join(info.hashes)})",
        )
    return sha


def _classified(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass ``chunks`` through, turning the HTTP layer's mismatch errors into refusals."""
    try:
        yield from chunks
    except FetchError as exc:
        reason = classify_fetch_error(exc)
        if reason is None:
            raise
        raise TrustRefused(reason, str(exc)) from None
    except VerifyError as exc:
        raise TrustRefused("hash_mismatch", str(exc)) from None


def _chunk_verified(chunks: Iterator[bytes], vouched: _Vouched, what: str) -> Iterator[bytes]:
    """Yield each chunk only after its SHA-256 matched; hold the last until the stream ends.

    Pieces pass through without copies when they fall inside one chunk (the
    HTTP layer's pieces divide the chunk size); memory is one chunk.
    """
    import hashlib

    size, step, hashes = vouched.size, vouched.chunk_size, vouched.chunk_sha256
    index = 0
    have = 0
    digest = hashlib.sha256()
    pending: list[bytes] = []
    held: list[bytes] = []

    def expected(i: int) -> int:
        return min(step, size - i * step)

    for piece in chunks:
        if index < len(hashes) and have + len(piece) < expected(index):
            # the common case: a whole piece inside the current chunk
            digest.update(piece)
            pending.append(piece)
            have += len(piece)
            continue
        view = memoryview(piece)
        while view:
            if index >= len(hashes):
                raise TrustRefused(
                    "length_mismatch", f"{what}: more than the {size} bytes TUF declares"
                )
            take = min(expected(index) - have, len(view))
            part = view[:take]
            digest.update(part)
            pending.append(piece if take == len(piece) else bytes(part))
            have += take
            view = view[take:]
            if have < expected(index):
                continue
            if digest.hexdigest() != hashes[index]:
                raise TrustRefused(
                    "hash_mismatch",
                    f"{what}: chunk {index} (bytes {index * step}-{index * step + have - 1}) "
                    f"has SHA-256 {digest.hexdigest()}, the signed channel document says "
                    f"{hashes[index]}; nothing of it was written",
                )
            index += 1
            if index == len(hashes):
                held = pending
            else:
                yield from pending
            pending, have, digest = [], 0, hashlib.sha256()
    if index < len(hashes):
        raise TrustRefused("length_mismatch", f"{what}: ended after chunk {index} of {len(hashes)}")
    # The upstream ended cleanly at the TUF length.
    yield from held
