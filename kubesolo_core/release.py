"""The release document (DESIGN.md 5) and its validation.

The document is JSON; parsing the text is pure, so it lives here. URLs are
checked (:func:`kubesolo_core.urls.check_url`) but kept as written:
resolving a relative image URL against the document's URL is the Fetcher's
job (the core may not import urllib). Which image URL a document may name
depends on where the document came from (:func:`kubesolo_core.urls.check_image_url`,
applied by the Agent, which knows the server URL). Every refusal is
:class:`InvalidRelease` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from kubesolo_core.errors import CorruptInput, InvalidRelease, VerifyError
from kubesolo_core.urls import check_url
from kubesolo_core.versions import Version

COMPRESSIONS = ("none", "gzip", "zstd")
#: schemes an image URL may have (relative URLs inherit the document's)
IMAGE_SCHEMES = ("https", "http", "file")
#: no slot image is this big (256 TiB); a larger size is a typo or an attack
MAX_IMAGE_BYTES = 1 << 48
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)


@attrs.frozen(kw_only=True)
class ChunksSpec:
    """The optional chunk index of an image (adaptive updates, kubesolo_core.chunks).

    ``index`` and ``store`` are URLs relative to the release document (or
    absolute); the index is trusted through ``sha256`` and ``size`` named
    here, so it is vouched for exactly like the image.
    """

    index: str
    sha256: str
    size: int
    store: str = "chunks/"


@attrs.frozen(kw_only=True)
class ImageSpec:
    """The image of a release: what is served and what must end up on the slot."""

    url: str
    sha256: str
    size: int
    compression: str = "none"
    raw_size: int
    raw_sha256: str
    chunks: ChunksSpec | None = None


def verify_written(image: ImageSpec, *, length: int, sha256: str, where: str) -> None:
    """Raise VerifyError unless the slot read back exactly the image's raw bytes.

    The one judgement of a slot write, shared by every slot store and the
    services: ``length`` and ``sha256`` are what was read back from the
    medium (not what was sent to it).
    """
    if length != image.raw_size or sha256 != image.raw_sha256:
        raise VerifyError(
            f"{where} reads back {length} bytes with SHA-256 {sha256}, the release says "
            f"{image.raw_size} bytes with {image.raw_sha256}",
            way_out="the slot is not staged; check the disk (dmesg) and the release",
        )


@attrs.frozen(kw_only=True)
class Release:
    """One release document."""

    schema: int
    version: Version
    image: ImageSpec
    min_from_version: Version | None = None


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**20 else "a huge number"
    return text if len(text) <= 80 else text[:80] + "..."


def _need(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise InvalidRelease(f"release document: {where}{key} is missing")
    value = mapping[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRelease(
            f"release document: {where}{key} must be an integer, got {_shown(value)}"
        )
    if kind is str and not isinstance(value, str):
        raise InvalidRelease(
            f"release document: {where}{key} must be a string, got {_shown(value)}"
        )
    return value


def _sha(value: str, where: str) -> str:
    value = value.lower()
    if not _HEX64.fullmatch(value):
        raise InvalidRelease(f"release document: {where} is not 64 hex digits: {value[:80]!r}")
    return value


def _version(text: str, where: str) -> Version:
    try:
        return Version.parse(text)
    except CorruptInput as exc:
        raise InvalidRelease(f"release document: {where}: {exc.message}") from None


def _size(value: int, where: str) -> int:
    if not 0 < value <= MAX_IMAGE_BYTES:
        shown = value if -(10**20) < value < 10**20 else "a number of more than 20 digits"
        raise InvalidRelease(
            f"release document: {where} must be > 0 and at most {MAX_IMAGE_BYTES}, got {shown}"
        )
    return value


def parse_release(data: bytes | str | Mapping[str, Any]) -> Release:
    """Parse and validate a release document; raise :class:`InvalidRelease` naming the field."""
    if isinstance(data, bytes | str):
        try:
            doc = json.loads(data)
        except RecursionError:
            raise InvalidRelease("release document is nested too deeply to be one") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRelease(f"release document is not JSON: {str(exc)[:200]}") from None
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise InvalidRelease("release document must be a JSON object")
    schema = _need(doc, "schema", int, "")
    if schema != 1:
        raise InvalidRelease(
            f"release document schema {schema} is not supported (this agent reads schema 1)",
            way_out="upgrade the agent or publish a schema 1 document",
        )
    version = _version(_need(doc, "version", str, ""), "version")
    image = doc.get("image")
    if not isinstance(image, Mapping):
        raise InvalidRelease("release document: image must be an object")
    url = _need(image, "url", str, "image.")
    if not url:
        raise InvalidRelease("release document: image.url is empty")
    try:
        check_url(url, schemes=IMAGE_SCHEMES, relative=True)
    except CorruptInput as exc:
        raise InvalidRelease(
            f"release document: image.url {url[:80]!r}: {exc.message}", way_out=exc.way_out
        ) from None
    sha = _sha(_need(image, "sha256", str, "image."), "image.sha256")
    size = _size(_need(image, "size", int, "image."), "image.size")
    compression = image.get("compression", "none")
    if compression not in COMPRESSIONS:
        raise InvalidRelease(
            f"release document: image.compression {_shown(compression)} is not one of "
            + ", ".join(COMPRESSIONS)
        )
    if compression == "none":
        raw_size = image.get("raw_size", size)
        raw_sha = image.get("raw_sha256", sha)
        if raw_size != size or str(raw_sha).lower() != sha:
            raise InvalidRelease(
                "release document: an uncompressed image must have raw_size == size "
                "and raw_sha256 == sha256"
            )
    else:
        raw_size = _need(image, "raw_size", int, "image.")
        raw_sha = _need(image, "raw_sha256", str, "image.")
    raw_size = _size(raw_size, "image.raw_size")
    raw_sha = _sha(raw_sha, "image.raw_sha256")
    chunks = _chunks(image.get("chunks"))
    min_from_text = doc.get("min_from_version")
    min_from = None
    if min_from_text is not None:
        if not isinstance(min_from_text, str):
            raise InvalidRelease("release document: min_from_version must be a string")
        min_from = _version(min_from_text, "min_from_version")
    return Release(
        schema=schema,
        version=version,
        image=ImageSpec(
            url=url,
            sha256=sha,
            size=size,
            compression=compression,
            raw_size=raw_size,
            raw_sha256=raw_sha,
            chunks=chunks,
        ),
        min_from_version=min_from,
    )


def _chunks(value: Any) -> ChunksSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRelease("release document: image.chunks must be an object")
    index = _need(value, "index", str, "image.chunks.")
    if not index:
        raise InvalidRelease("release document: image.chunks.index is empty")
    sha = _sha(_need(value, "sha256", str, "image.chunks."), "image.chunks.sha256")
    size = _need(value, "size", int, "image.chunks.")
    if size <= 0:
        raise InvalidRelease(f"release document: image.chunks.size must be > 0, got {size}")
    store = value.get("store", "chunks/")
    if not isinstance(store, str) or not store:
        raise InvalidRelease("release document: image.chunks.store must be a non-empty string")
    return ChunksSpec(index=index, sha256=sha, size=size, store=store)


def release_document(release: Release) -> dict[str, Any]:
    """The JSON-ready mapping of ``release`` (what a server publishes)."""
    doc: dict[str, Any] = {
        "schema": release.schema,
        "version": str(release.version),
        "image": attrs.asdict(release.image),
    }
    if release.image.chunks is None:
        del doc["image"]["chunks"]
    if release.min_from_version is not None:
        doc["min_from_version"] = str(release.min_from_version)
    return doc
