"""The hostile-input catalogue, part 3: the release document, the image, the server's behaviour.

A malformed release document is corrupt input (5) naming the field; an
image or a server that does not deliver what the document promised is an
operation failure (1) that leaves state.json ``failed`` with the reason,
never ``checking``/``downloading``; the running slot and the boot env are
never touched.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from kubesolo_core.lifecycle import Phase
from tests.contract.faultserver import Fault
from tests.hostile import Case, HostileBox, case, image, run_case

FAILED, REFUSED, CORRUPT = 1, 3, 5


# --------------------------------------------------------------------------- release document

RELEASE = "release document"


def _doc(mutate: Callable[[dict[str, Any]], object]):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> None:
        box.publish("1.1.0", mutate=mutate)

    return prepare


def _raw(body: bytes):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> None:
        box.publish_raw(body)

    return prepare


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for name in parents:
            target = target[name]
        target[last] = value

    return mutate


def _image_url(value: str) -> Callable[[dict[str, Any]], None]:
    return _set("image.url", value)


def _doc_case(
    name: str,
    mutate: Callable[[dict[str, Any]], object],
    culprit: tuple[str, ...],
    command: str = "check",
    **rest: object,
) -> Case:
    return case(RELEASE, name, command, CORRUPT, culprit, prepare=_doc(mutate), **rest)  # fmt: skip


RELEASE_CASES: list[Case] = [
    case(RELEASE, "html-error-page", "check", CORRUPT, "not JSON",
         prepare=_raw(b"<html><body>502 Bad Gateway</body></html>")),
    case(RELEASE, "json-array", "check", CORRUPT, "JSON object", prepare=_raw(b"[1, 2]")),
    case(RELEASE, "nested-100k-deep", "check", CORRUPT, ("release document", "nested"),
         prepare=_raw(b"[" * 100_000)),
    case(RELEASE, "not-utf8", "check", CORRUPT, "release document",
         prepare=_raw(b'{"schema": 1, "version": "\xff\xfe"}')),
    _doc_case("schema-2", _set("schema", 2), ("schema 2",)),
    _doc_case("version-5000-digits", _set("version", "1" * 5000), ("version", "64")),
    _doc_case("version-component-10-digits", _set("version", "1.1234567890.0"),
              ("version", "digits")),
    _doc_case("version-65-characters", _set("version", "1.0.0-" + "a" * 59), ("version", "64")),
    _doc_case("version-with-newline", _set("version", "1.1.0\nslot_b=/dev/sda1"), ("version",)),
    _doc_case("version-arabic-digits", _set("version", "\u0661.\u0662.\u0663"), ("version",)),
    _doc_case("min-from-version-5000-digits", _set("min_from_version", "2" * 5000),
              ("min_from_version", "64")),
    _doc_case("image-url-control-character", _image_url("kubesolo\x01.img.gz"),
              ("image.url", "U+0001"), command="apply"),
    _doc_case("image-url-ipv6-unclosed", _image_url("http://[::1/kubesolo.img.gz"),
              ("image.url", "]"), command="apply"),
    _doc_case("image-url-port-out-of-range", _image_url("http://127.0.0.1:99999/k.img.gz"),
              ("image.url", "99999"), command="apply", max_seconds=10),
    _doc_case("image-url-file-from-http", _image_url("file:///etc/shadow"),
              ("image.url", "file"), command="apply"),
    _doc_case("image-url-ftp", _image_url("ftp://127.0.0.1/k.img.gz"), ("image.url", "ftp")),
    _doc_case("image-url-empty", _image_url(""), ("image.url",)),
    _doc_case("image-url-not-a-string", _image_url(["a", "b"]), ("image.url",)),  # type: ignore[arg-type]
    _doc_case("image-sha256-not-hex", _set("image.sha256", "z" * 64), ("image.sha256",)),
    _doc_case("image-size-negative", _set("image.size", -1), ("image.size",)),
    _doc_case("image-size-true", _set("image.size", True), ("image.size",)),
    _doc_case("image-size-10-to-the-30", _set("image.size", 10**30), ("image.size",)),
    _doc_case("image-raw-size-float-nan", _set("image.raw_size", float("nan")),
              ("image.raw_size",)),
    _doc_case("image-compression-xz", _set("image.compression", "xz"), ("image.compression",)),
]  # fmt: skip


@pytest.mark.parametrize("spec", RELEASE_CASES, ids=lambda c: c.id)
def test_release_document(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)
    assert hostile.load_state() is None, "a refused document never starts an attempt"


def test_release_document_file_image_from_http_reads_nothing(hostile: HostileBox) -> None:
    """The image URL names a local file that would even match: it is still never read."""
    secret = hostile.root / "secret.img"
    raw = image("1.1.0")
    secret.write_bytes(raw)
    served = gzip.compress(raw, compresslevel=1, mtime=0)
    secret.with_suffix(".gz").write_bytes(served)

    def mutate(doc: dict[str, Any]) -> None:
        doc["image"]["url"] = secret.with_suffix(".gz").as_uri()

    spec = case(RELEASE, "image-url-file-that-exists", "apply", CORRUPT, ("image.url", "file"),
                prepare=_doc(mutate))  # fmt: skip
    run_case(hostile, spec)
    assert hostile.load_state() is None


# --------------------------------------------------------------------------- images

IMAGES = "images"


def _spoil_image(served: bytes | None = None, **fields: object):  # type: ignore[no-untyped-def]
    """Publish 1.1.0, then serve ``served`` as its image and/or change fields of the document."""

    def prepare(box: HostileBox) -> None:
        doc = box.publish("1.1.0")
        name = "/" + doc["image"]["url"]
        if served is not None:
            box.server.publish(name, served)
        if fields:
            box.publish("1.1.0", mutate=lambda d: d["image"].update(fields))
            if served is not None:
                box.server.publish(name, served)

    return prepare


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bomb(box: HostileBox) -> None:
    """A gzip that inflates far past raw_size (which it claims is the real image's)."""
    bomb = _gz(b"\0" * (64 << 20))
    box.publish("1.1.0", mutate=lambda d: d["image"].update(
        sha256=_sha(bomb), size=len(bomb)))  # fmt: skip
    box.server.publish("/kubesolo-os-1.1.0-amd64.img.gz", bomb)


def _wrong_raw(box: HostileBox) -> None:
    """Served bytes match the document, but they inflate to another image."""
    other = _gz(image("0.9.0"))
    box.publish("1.1.0", mutate=lambda d: d["image"].update(sha256=_sha(other), size=len(other)))
    box.server.publish("/kubesolo-os-1.1.0-amd64.img.gz", other)


def _too_big(box: HostileBox) -> None:
    box.publish("1.1.0", mutate=lambda d: d["image"].update(raw_size=64 << 20))


def _not_gzip(box: HostileBox) -> None:
    junk = b"this is not gzip at all" * 100
    box.publish("1.1.0", mutate=lambda d: d["image"].update(sha256=_sha(junk), size=len(junk)))
    box.server.publish("/kubesolo-os-1.1.0-amd64.img.gz", junk)


def _missing(box: HostileBox) -> None:
    box.publish("1.1.0", mutate=_image_url("nowhere.img.gz"))


IMAGE_CASES: list[Case] = [
    case(IMAGES, "sha256-mismatch", "apply", FAILED, ("SHA-256",),
         prepare=_spoil_image(sha256="0" * 64), phase=Phase.FAILED),
    case(IMAGES, "shorter-than-announced", "apply", FAILED, ("bytes",),
         prepare=_spoil_image(size=10 << 20), phase=Phase.FAILED),
    case(IMAGES, "not-gzip", "apply", FAILED, ("gzip",), prepare=_not_gzip, phase=Phase.FAILED),
    case(IMAGES, "inflates-to-another-image", "apply", FAILED, ("slot B",),
         prepare=_wrong_raw, phase=Phase.FAILED),
    case(IMAGES, "gzip-bomb", "apply", FAILED, ("raw",), prepare=_bomb, phase=Phase.FAILED,
         max_seconds=30),
    case(IMAGES, "bigger-than-the-slot", "apply", REFUSED, ("passive slot", "image needs"),
         prepare=_too_big),
    case(IMAGES, "missing-404", "apply", FAILED, ("nowhere.img.gz", "404"),
         prepare=_missing, phase=Phase.FAILED),
]  # fmt: skip


@pytest.mark.parametrize("spec", IMAGE_CASES, ids=lambda c: c.id)
def test_images(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


# --------------------------------------------------------------------------- server behaviour

SERVER = "server behaviour"
_PASS = Fault("ignore_range")  # a plain request: serve the file as is


def _faults(*faults: Fault, always: Fault | None = None):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> None:
        box.server.inject(*faults)
        box.server.always(always)

    return prepare


def _cut_image(*after: Fault):  # type: ignore[no-untyped-def]
    """The image's first response is cut half-way (wherever that is), then ``after`` follow."""

    def prepare(box: HostileBox) -> None:
        doc = box.publish("1.1.0")
        half = doc["image"]["size"] // 2
        assert half > 100, "the image is large enough to be cut"
        box.server.inject(_PASS, Fault("truncate", at=half), *after)

    return prepare


SERVER_CASES: list[Case] = [
    case(SERVER, "release-404", "check", FAILED, ("release.json", "404"),
         prepare=_faults(always=Fault("status", status=404))),
    case(SERVER, "release-403-on-apply", "apply", FAILED, ("release.json", "403"),
         prepare=_faults(always=Fault("status", status=403)), state_intact=True),
    case(SERVER, "one-503-then-fine", "apply", 0, ("staged",),
         prepare=_faults(Fault("status", status=503, retry_after=0)), phase=Phase.STAGED),
    case(SERVER, "redirect-to-file-url", "check", FAILED, ("release.json",),
         prepare=_faults(always=Fault("redirect", status=302, location="file:///etc/passwd"))),
    case(SERVER, "image-redirect-to-file-url", "apply", FAILED, ("img.gz",),
         prepare=_faults(_PASS, always=Fault("redirect", status=302,
                                             location="file:///etc/passwd")),
         phase=Phase.FAILED),
    case(SERVER, "release-huge-body", "check", FAILED, ("bigger than",),
         prepare=_faults(always=Fault("extra_unannounced", delta=2 << 20))),
    case(SERVER, "image-extra-bytes", "apply", FAILED, ("more",),
         prepare=_faults(_PASS, always=Fault("extra", delta=100)), phase=Phase.FAILED),
    case(SERVER, "image-cut-mid-way-resumes", "apply", 0, ("staged",),
         prepare=_cut_image(), phase=Phase.STAGED),
    case(SERVER, "image-wrong-content-range", "apply", FAILED, ("Content-Range",),
         prepare=_cut_image(Fault("bad_range")),
         phase=Phase.FAILED),
    case(SERVER, "image-client-error", "apply", FAILED, ("410",),
         prepare=_faults(_PASS, always=Fault("status", status=410)), phase=Phase.FAILED),
]  # fmt: skip


@pytest.mark.parametrize("spec", SERVER_CASES, ids=lambda c: c.id)
def test_server_behaviour(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)
