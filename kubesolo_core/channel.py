"""The signed channel document and the rules for target paths (pure).

In a TUF repository (made by ``kubesolo-release``) a release is two targets:
the *channel document* ``channels/<channel>.json`` and the image it names.
TUF vouches for the length and hashes of both; the channel document says
which image is the channel's release and what must end up on the slot::

    {"schema": 1, "kind": "kubesolo-channel", "channel": "stable", "version": "1.3.0",
     "image": {"target": "images/kubesolo-os-1.3.0.img.zst", "compression": "zstd",
               "raw_size": 536870912, "raw_sha256": "<hex>",
               "chunk_size": 4194304, "chunk_sha256": ["<hex>", ...],
               "chunks": {"index": "images/kubesolo-os-1.3.0.chunks", "store": "chunks"}},
     "min_from_version": "1.0.0"}

``chunk_sha256`` (optional) lists the SHA-256 of each ``chunk_size`` piece of
the served image: the agent checks every piece before it hands it to the
slot writer, so no byte that TUF has not vouched for (through the channel
document's hash) reaches the slot. Without it (a repository made by other
TUF tooling) the agent checks the image's TUF hash as the stream ends.

``chunks`` (optional) offers an adaptive update (:mod:`kubesolo_core.chunks`):
``index`` is the target path of the image's chunk index, a TUF target of its
own, so its length and SHA-256 come from the signed targets metadata like the
image's; ``store`` is the folder (under ``targets/``) of the content-addressed
chunk store shared by all releases. The chunk files are *not* TUF targets:
each is named by the SHA-256 of its raw bytes, listed in the verified index,
and checked against it before it is written, so TUF vouches for every chunk
through the index (and a repository's targets metadata does not grow with
every chunk).

python-tuf does not judge target paths; :func:`safe_target_path` does, for
every path a signed document names (the image, the chunk index and the chunk
store: ``../``, absolute paths, backslashes, empty segments, URL syntax).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from kubesolo_core.errors import CorruptInput
from kubesolo_core.release import COMPRESSIONS
from kubesolo_core.versions import Version, as_version, to_version

CHANNEL_KIND = "kubesolo-channel"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHANNEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: characters a target path segment may hold (no URL syntax: ? # % and no blanks)
_SEGMENT = re.compile(r"^[A-Za-z0-9._+-]+$")
DEFAULT_CHUNK = 4 << 20
#: the chunk store's folder under targets/ (kubesolo-release's, shared by every release)
CHUNK_STORE = "chunks"


class UnsafeTargetPath(CorruptInput):
    """A signed document names a target outside the repository."""


class InvalidChannel(CorruptInput):
    """The signed channel document is malformed or names another channel."""


def channel_name(text: str) -> str:
    """Validate a channel name (``stable``, ``beta-2``...): lower case, digits, ``.-_``."""
    if not isinstance(text, str) or not _CHANNEL.match(text):
        raise InvalidChannel(
            f"channel {text!r} is not a channel name",
            way_out="use lower-case letters, digits, '.', '-' or '_' (e.g. stable)",
        )
    return text


def safe_target_path(path: object) -> str:
    """``path`` if it is a relative path inside the repository, else UnsafeTargetPath."""
    if not isinstance(path, str) or not path:
        raise UnsafeTargetPath(f"target path {path!r} is empty or not text")
    if path.startswith("/") or "\\" in path or "\0" in path:
        raise UnsafeTargetPath(f"target path {path!r} is absolute or not a URL path")
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise UnsafeTargetPath(
                f"target path {path!r} has a segment {segment!r} that could leave the "
                "repository or is not plain text"
            )
    return path


def channel_target(channel: str) -> str:
    """The target path of a channel's document."""
    return f"channels/{channel_name(channel)}.json"


@attrs.frozen(kw_only=True)
class ChannelChunks:
    """The chunk index (a TUF target) and the chunk store (a folder under targets/) of an image."""

    index: str
    store: str = CHUNK_STORE


@attrs.frozen(kw_only=True)
class ChannelImage:
    """The image a channel names."""

    target: str
    compression: str
    raw_size: int
    raw_sha256: str
    chunk_size: int = 0
    chunk_sha256: tuple[str, ...] = ()
    chunks: ChannelChunks | None = None


@attrs.frozen(kw_only=True)
class ChannelDoc:
    """One channel document."""

    channel: str
    version: Version = attrs.field(converter=to_version)
    image: ChannelImage
    min_from_version: Version | None = attrs.field(default=None, converter=as_version)


def chunk_count(length: int, chunk_size: int) -> int:
    """How many ``chunk_size`` pieces a ``length``-byte file has."""
    return max(1, -(-length // chunk_size))


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidChannel(f"channel document: {where}{key} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise InvalidChannel(f"channel document: {where}{key} must be a string, got {value!r}")
    return value


def _hex(value: object, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise InvalidChannel(f"channel document: {where} is not 64 lower-case hex digits")
    return value


def parse_channel(data: bytes | str, *, channel: str) -> ChannelDoc:
    """Parse and check a channel document fetched for ``channel``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidChannel(f"channel document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidChannel("channel document must be a JSON object")
    if doc.get("schema") != 1 or doc.get("kind") != CHANNEL_KIND:
        raise InvalidChannel(
            f"channel document: schema {doc.get('schema')!r} kind {doc.get('kind')!r} "
            f"is not schema 1 {CHANNEL_KIND}",
            way_out="publish with kubesolo-release, or upgrade the agent",
        )
    named = _field(doc, "channel", str, "")
    if named != channel:
        raise InvalidChannel(
            f"the document fetched for channel {channel!r} is channel {named!r}'s",
            way_out="the repository swapped channels; republish the channel",
        )
    version = _field(doc, "version", str, "")
    min_from = doc.get("min_from_version")
    if min_from is not None and not isinstance(min_from, str):
        raise InvalidChannel("channel document: min_from_version must be a string")
    for where, text in (("version", version), ("min_from_version", min_from)):
        if text is None:
            continue
        try:
            Version.parse(text)
        except CorruptInput as exc:
            raise InvalidChannel(f"channel document: {where}: {exc.message}") from None
    image = doc.get("image")
    if not isinstance(image, dict):
        raise InvalidChannel("channel document: image must be an object")
    target = safe_target_path(image.get("target"))
    compression = image.get("compression", "none")
    if compression not in COMPRESSIONS:
        raise InvalidChannel(f"channel document: image.compression {compression!r} is unknown")
    raw_size = _field(image, "raw_size", int, "image.")
    if raw_size <= 0:
        raise InvalidChannel("channel document: image.raw_size must be > 0")
    raw_sha = _hex(image.get("raw_sha256"), "image.raw_sha256")
    chunk_size = 0
    chunks: tuple[str, ...] = ()
    if "chunk_sha256" in image:
        chunk_size = _field(image, "chunk_size", int, "image.")
        if chunk_size < 4096:
            raise InvalidChannel("channel document: image.chunk_size must be >= 4096")
        listed = image["chunk_sha256"]
        if not isinstance(listed, list) or not listed:
            raise InvalidChannel("channel document: image.chunk_sha256 must be a list")
        chunks = tuple(_hex(h, f"image.chunk_sha256[{i}]") for i, h in enumerate(listed))
    return ChannelDoc(
        channel=named,
        version=version,
        image=ChannelImage(
            target=target,
            compression=compression,
            raw_size=raw_size,
            raw_sha256=raw_sha,
            chunk_size=chunk_size,
            chunk_sha256=chunks,
            chunks=_chunks(image.get("chunks")),
        ),
        min_from_version=min_from,
    )


def _chunks(value: object) -> ChannelChunks | None:
    """``image.chunks``: both paths judged like the image's (UnsafeTargetPath)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidChannel("channel document: image.chunks must be an object")
    return ChannelChunks(
        index=safe_target_path(value.get("index")),
        store=safe_target_path(value.get("store", CHUNK_STORE)),
    )


def channel_document(doc: ChannelDoc) -> dict[str, Any]:
    """The JSON-ready mapping of ``doc`` (what the publisher signs as a target)."""
    image: dict[str, Any] = {
        "target": doc.image.target,
        "compression": doc.image.compression,
        "raw_size": doc.image.raw_size,
        "raw_sha256": doc.image.raw_sha256,
    }
    if doc.image.chunk_sha256:
        image["chunk_size"] = doc.image.chunk_size
        image["chunk_sha256"] = list(doc.image.chunk_sha256)
    if doc.image.chunks is not None:
        image["chunks"] = {"index": doc.image.chunks.index, "store": doc.image.chunks.store}
    out: dict[str, Any] = {
        "schema": 1,
        "kind": CHANNEL_KIND,
        "channel": doc.channel,
        "version": str(doc.version),
        "image": image,
    }
    if doc.min_from_version is not None:
        out["min_from_version"] = str(doc.min_from_version)
    return out
