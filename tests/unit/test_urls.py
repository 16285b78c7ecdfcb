"""kubesolo_core.urls: the one URL validator (issue 8, bug 2), by example."""

from __future__ import annotations

import pytest

from kubesolo_core.errors import CorruptInput, InvalidUrl
from kubesolo_core.urls import MAX_URL, check_image_url, check_url, scheme_of

GOOD = [
    "https://updates.example.com/stable/release.json",
    "http://127.0.0.1:8080/release.json?channel=stable#top",
    "https://user:p%40ss@updates.example.com/r.json",
    "http://[::1]:8080/r.json",
    "http://[2001:db8::1]/r.json",
    "http://[::ffff:192.0.2.1]/r.json",
    "http://[1:2:3:4:5:6:7:8]/",
    "http://xn--bcher-kva.example/r.json",
    "http://host_with_underscore.local/r.json",
    "http://example.com./r.json",
    "file:///srv/media/release.json",
    "file://localhost/srv/media/release.json",
    "file:/srv/media/release.json",
    "HTTPS://UPDATES.EXAMPLE.COM/R.JSON",
]


@pytest.mark.parametrize("url", GOOD)
def test_good_urls_pass_unchanged(url: str) -> None:
    assert check_url(url) == url


BAD = [
    ("http://[::1/release.json", "no closing ']'"),
    ("http://[::1]x/", "':port'"),
    ("http://::1/", "more than one ':'"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://[1:2]/", "IPv6"),
    ("http://[1::2::3]/", "'::' more than once"),
    ("http://[12345::]/", "hex"),
    ("http://[vF.x]/", "not a dotted IPv4"),
    ("http://127.0.0.1:99999/r.json", "out of range"),
    ("http://127.0.0.1:0/r.json", "out of range"),
    ("http://127.0.0.1:/r.json", "empty port"),
    ("http://127.0.0.1:8o/r.json", "not a number"),
    ("http://999.1.1.1/", "IPv4"),
    ("http://1.2.3/", "IPv4"),
    ("http:///r.json", "no host"),
    ("http:r.json", "//host"),
    ("http://a..b/", "empty label"),
    ("http://-bad-.example/", "DNS name"),
    ("http://" + "a" * 64 + ".example/", "DNS name"),
    ("http://a@b@c/", "'@'"),
    ("http://h/a b", "blank"),
    ("http://h/\x01", "U+0001"),
    ("http://h/\x7f", "U+007F"),
    ("http://h/\u0085", "U+0085"),
    ("http://h/\r\nHost: evil", "U+000D"),
    ("http://exämple.com/", "non-ASCII"),
    ("http://h/{x}", "not allowed"),
    ("http://h/%zz", "two hex digits"),
    ("http://h/%4", "two hex digits"),
    ("http://h/a[b]", "'['"),
    ("http://h/#a#b", "fragment"),
    ("ftp://h/r.json", "scheme 'ftp'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("release.json", "no scheme"),
    ("file://otherhost/r.json", "another host"),
    ("file:relative/r.json", "absolute path"),
    ("", "empty"),
    ("http://h/" + "a" * MAX_URL, "at most"),
]


@pytest.mark.parametrize(("url", "needle"), BAD)
def test_bad_urls_say_what_is_wrong(url: str, needle: str) -> None:
    with pytest.raises(InvalidUrl) as info:
        check_url(url)
    assert needle in str(info.value), str(info.value)
    assert isinstance(info.value, CorruptInput)


def test_not_text_is_refused() -> None:
    with pytest.raises(InvalidUrl, match="text"):
        check_url(b"http://h/")


def test_schemes_are_the_callers() -> None:
    assert check_url("http://h/x", schemes=("http", "https"))
    with pytest.raises(InvalidUrl, match="scheme 'file'"):
        check_url("file:///etc/passwd", schemes=("http", "https"))


@pytest.mark.parametrize(
    "ref", ["kubesolo-os-1.3.0.img.gz", "../images/x.img", "/images/x.img", "//cdn.example/x.img"]
)
def test_relative_references_only_where_allowed(ref: str) -> None:
    assert check_url(ref, relative=True) == ref
    with pytest.raises(InvalidUrl, match="no scheme"):
        check_url(ref)


def test_scheme_of() -> None:
    assert scheme_of("HTTPS://x/") == "https"
    assert scheme_of("x.img") is None
    assert scheme_of("a/b:c") is None


@pytest.mark.parametrize(
    ("document", "image", "allowed"),
    [
        ("http://h/r.json", "x.img", True),
        ("http://h/r.json", "http://other/x.img", True),
        ("http://h/r.json", "https://cdn/x.img", True),
        ("https://h/r.json", "http://cdn/x.img", False),
        ("http://h/r.json", "file:///etc/shadow", False),
        ("https://h/r.json", "file:///dev/sda", False),
        ("file:///media/r.json", "file:///media/x.img", True),
        ("file:///media/r.json", "https://cdn/x.img", True),
        ("/media/r.json", "file:///media/x.img", True),
    ],
)
def test_an_image_url_keeps_its_documents_scheme(document: str, image: str, allowed: bool) -> None:
    if allowed:
        check_image_url(document, image)
    else:
        with pytest.raises(InvalidUrl, match="may not name"):
            check_image_url(document, image)
