"""The release document of DESIGN.md 5 and version ordering."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubesolo_core.errors import CorruptInput, InvalidRelease
from kubesolo_core.release import parse_release, release_document
from kubesolo_core.versions import Version, as_version

SHA = "a" * 64
RAW = "b" * 64


def doc(**image: Any) -> dict[str, Any]:
    img = {
        "url": "os.img.gz",
        "sha256": SHA,
        "size": 10,
        "compression": "gzip",
        "raw_size": 20,
        "raw_sha256": RAW,
        **image,
    }
    return {"schema": 1, "version": "1.3.0", "image": img, "min_from_version": "1.0.0"}


def test_parse_and_round_trip() -> None:
    release = parse_release(json.dumps(doc()).encode())
    assert str(release.version) == "1.3.0"
    assert release.image.raw_size == 20
    assert parse_release(release_document(release)) == release


def test_uncompressed_defaults_raw_to_served() -> None:
    d = doc(compression="none", raw_size=10, raw_sha256=SHA)
    del d["image"]["raw_size"], d["image"]["raw_sha256"]
    release = parse_release(d)
    assert (release.image.raw_size, release.image.raw_sha256) == (10, SHA)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("version"), "version is missing"),
        (lambda d: d.update(schema=2), "schema 2"),
        (lambda d: d.update(version="latest"), "latest"),
        (lambda d: d["image"].update(sha256="xyz"), "image.sha256"),
        (lambda d: d["image"].update(size=0), "image.size"),
        (lambda d: d["image"].update(size=True), "image.size"),
        (lambda d: d["image"].update(compression="lzma"), "compression"),
        (lambda d: d["image"].pop("raw_sha256"), "raw_sha256"),
        (lambda d: d["image"].update(compression="none"), "uncompressed"),
        (lambda d: d.update(image=[]), "image must be an object"),
    ],
)
def test_malformed_documents_name_the_field(mutate: Any, needle: str) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(InvalidRelease, match=needle):
        parse_release(d)


def test_not_json() -> None:
    with pytest.raises(InvalidRelease, match="not JSON"):
        parse_release(b"<html>")


@pytest.mark.parametrize(
    "ordered",
    [
        ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0"],
        ["0.9", "1", "1.0.1", "v2.0.0"],
    ],
)
def test_version_order(ordered: list[str]) -> None:
    parsed = [Version.parse(v) for v in ordered]
    assert parsed == sorted(parsed)
    assert all(a < b for a, b in itertools.pairwise(parsed))


def test_equal_versions_and_newer() -> None:
    assert Version.parse("1.3") == Version.parse("1.3.0")
    assert Version.parse("1.3.0+build7") == Version.parse("1.3.0")
    assert Version.parse("1.3.0") > Version.parse("1.2.9")
    assert not Version.parse("1.3.0") > Version.parse("1.3.0")
    assert as_version(None) is None and as_version("1.3") == Version.parse("1.3.0")
    with pytest.raises(CorruptInput, match="MAJOR"):
        Version.parse("one")


@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=4),
    st.lists(st.integers(0, 50), min_size=1, max_size=4),
)
def test_version_order_matches_tuple_order(a: list[int], b: list[int]) -> None:
    va, vb = Version.parse(".".join(map(str, a))), Version.parse(".".join(map(str, b)))

    def norm(x: list[int]) -> list[int]:
        while len(x) > 1 and x[-1] == 0:
            x = x[:-1]
        return x

    assert (va < vb) == (norm(a) < norm(b))


# ---------------------------------------------------------------- issue 8, bug 3: sane bounds


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1" * 5000, "longer than 64"),  # past Python's int-string limit: was a traceback
        ("1." + "9" * 4301, "longer than 64"),
        ("1.1234567890.0", "digits"),  # one component of 10 digits
        ("1.0.0-rc." + "7" * 10, "digits"),  # a numeric pre-release identifier too
        ("1.0.0-" + "a" * 59, "64"),  # 65 characters
        ("\u0661.\u0662.\u0663", "MAJOR"),  # Arabic-Indic digits are not version digits
        ("1.0.0\n", "MAJOR"),  # a line break is not a blank to strip
        ("1.0.0 ", "MAJOR"),
    ],
)
def test_versions_have_sane_bounds(text: str, needle: str) -> None:
    with pytest.raises(CorruptInput, match=needle):
        Version.parse(text)


def test_nine_digit_components_and_64_characters_still_parse() -> None:
    assert Version.parse("999999999.0.1").numbers == (999999999, 0, 1)
    assert Version.parse("1.0.0-" + "a" * 58).text == "1.0.0-" + "a" * 58


@pytest.mark.parametrize("field", ["version", "min_from_version"])
def test_release_names_the_field_of_an_overlong_version(field: str) -> None:
    with pytest.raises(InvalidRelease, match=f"release document: {field}: .*longer than 64"):
        parse_release({**doc(), field: "2" * 5000})
