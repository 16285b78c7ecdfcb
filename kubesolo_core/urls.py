"""One validator for every URL the agent takes in.

The release server (flag, environment, update.conf, cloud-init, library
mapping), the health-check probe URL and the image URL of a release
document all pass through :func:`check_url` where they enter, so a bad URL is
refused with the name of its key or field instead of surfacing later as a
traceback from an HTTP library, or as 18 seconds of retries against port
99999.

It lives in the core because the release document is parsed here, and it
is written by hand (RFC 3986's generic syntax, restricted to what an update
agent needs) because the core may not import urllib; the adapters then
split an already-valid URL with urllib, which can no longer raise.

What is refused, each with a sentence that says where and why:

* anything that is not text, longer than :data:`MAX_URL`, or empty;
* control characters (C0, DEL, C1), blanks, non-ASCII characters
  (percent-encode them; an international host name is written in its
  ``xn--`` form) and the ASCII characters RFC 3986 does not allow
  (``"<>\\^`{|}``), and a ``%`` not followed by two hex digits;
* a scheme not in the allowed set; an http(s) URL without ``//host``; a
  ``file:`` URL naming another host or a relative path;
* a host that is not a DNS name, a dotted IPv4 address or a bracketed IPv6
  address (an unclosed ``[``, a bad group, a zone id); a port that is not a
  number from 1 to 65535.

Relative references (an image URL relative to its release document) are
accepted only where the caller says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kubesolo_core.errors import InvalidUrl

__all__ = ["MAX_URL", "check_image_url", "check_url", "scheme_of"]

#: longer than any sane URL, short enough to print in one error line
MAX_URL = 2048

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
_HEX = frozenset("0123456789abcdefABCDEF")
#: ASCII that may never appear in a URL, encoded or not
_FORBIDDEN = frozenset('"<>\\^`{|}')
_UNRESERVED_SUBDELIMS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;="
)
_PATH_CHARS = _UNRESERVED_SUBDELIMS | frozenset(":@/%")
_QUERY_CHARS = _PATH_CHARS | frozenset("?")
_USERINFO_CHARS = _UNRESERVED_SUBDELIMS | frozenset(":%")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
_NUMERIC_HOST = re.compile(r"[0-9.]+", re.ASCII)
_H16 = re.compile(r"[0-9A-Fa-f]{1,4}", re.ASCII)


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X}"


def _check_characters(text: str) -> None:
    for position, char in enumerate(text):
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            raise InvalidUrl(
                f"control character {_char_name(char)} at position {position}",
                way_out="remove it; a URL is one line of printable ASCII",
            )
        if code > 0x7F:
            raise InvalidUrl(
                f"non-ASCII character {char!r} ({_char_name(char)}) at position {position}",
                way_out="percent-encode it (and write an international host name as xn--...)",
            )
        if char == " ":
            raise InvalidUrl(f"a blank at position {position}", way_out="percent-encode it as %20")
        if char in _FORBIDDEN:
            raise InvalidUrl(
                f"character {char!r} at position {position} is not allowed in a URL",
                way_out="percent-encode it",
            )


def _check_part(part: str, allowed: frozenset[str], what: str) -> None:
    for index, char in enumerate(part):
        if char not in allowed:
            raise InvalidUrl(
                f"character {char!r} is not allowed in the {what}", way_out="percent-encode it"
            )
        if char == "%":
            digits = part[index + 1 : index + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise InvalidUrl(
                    f"a '%' in the {what} is not followed by two hex digits",
                    way_out="write a literal '%' as %25",
                )


def _check_ipv6(address: str) -> None:
    shown = f"[{address}]"
    if "%" in address:
        raise InvalidUrl(f"IPv6 zone ids are not supported: {shown}")
    if address.count("::") > 1:
        raise InvalidUrl(f"{shown} has '::' more than once")
    text = address
    last = text.rsplit(":", 1)[-1]
    if "." in last:
        _check_ipv4(last, f"the IPv4 part of {shown}:")
        text = text[: len(text) - len(last)] + "0:0"
    if "::" in text:
        head, _, tail = text.partition("::")
        parts = (head.split(":") if head else []) + (tail.split(":") if tail else [])
        if len(parts) > 7:
            raise InvalidUrl(f"{shown} has too many groups for '::'")
    else:
        parts = text.split(":")
        if len(parts) != 8:
            raise InvalidUrl(f"{shown} is not an IPv6 address (8 groups, or fewer with '::')")
    for part in parts:
        if not _H16.fullmatch(part):
            raise InvalidUrl(f"{shown} is not an IPv6 address: {part!r} is not 1-4 hex digits")


def _check_ipv4(host: str, what: str) -> None:
    octets = host.split(".")
    if len(octets) != 4 or not all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
        raise InvalidUrl(f"{what} {host!r} is not a dotted IPv4 address (four numbers 0-255)")


def _check_host(host: str) -> None:
    if len(host) > 253:
        raise InvalidUrl(f"the host name is {len(host)} characters long, at most 253")
    if _NUMERIC_HOST.fullmatch(host):
        _check_ipv4(host, "the host")
        return
    name = host[:-1] if host.endswith(".") else host
    for label in name.split("."):
        if not _HOST_LABEL.fullmatch(label):
            raise InvalidUrl(
                f"the host {host!r} is not a DNS name"
                + (f" (label {label!r})" if label else " (an empty label)"),
                way_out="use a host name, a dotted IPv4 address or [an IPv6 address]",
            )


def _check_port(port: str) -> None:
    if not port:
        raise InvalidUrl("an empty port after ':'", way_out="give a port from 1 to 65535 or none")
    if not port.isdigit() or not port.isascii():
        raise InvalidUrl(f"port {port!r} is not a number")
    if len(port) > 5 or not 1 <= int(port) <= 65535:
        raise InvalidUrl(f"port {port} is out of range (1-65535)")


def _check_authority(authority: str, *, need_host: bool) -> str:
    """Validate ``[userinfo@]host[:port]``; returns the host."""
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        if "@" in userinfo:
            raise InvalidUrl("more than one '@' in the host part", way_out="percent-encode '@'")
        _check_part(userinfo, _USERINFO_CHARS, "user name")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise InvalidUrl(
                f"the IPv6 address {hostport!r} has no closing ']'",
                way_out="write it as [address] or [address]:port",
            )
        _check_ipv6(hostport[1:end])
        rest = hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidUrl(f"{rest!r} after the IPv6 address ']' is not ':port'")
        if rest:
            _check_port(rest[1:])
        return hostport[: end + 1]
    if "]" in hostport:
        raise InvalidUrl(f"a ']' without '[' in {hostport!r}")
    host, colon, port = hostport.partition(":")
    if ":" in port:
        raise InvalidUrl(
            f"{hostport!r} has more than one ':'", way_out="an IPv6 address goes in [brackets]"
        )
    if colon:
        _check_port(port)
    if not host:
        if need_host:
            raise InvalidUrl("it has no host", way_out="e.g. https://updates.example.com/...")
        return host
    _check_host(host)
    return host


def scheme_of(text: str) -> str | None:
    """The lower-cased scheme of ``text``, None for a relative reference."""
    match = _SCHEME.match(text)
    if match is None or text[match.end() : match.end() + 1] != ":":
        return None
    return match.group(0).lower()


def check_url(
    text: object,
    *,
    schemes: Iterable[str] = ("https", "http", "file"),
    relative: bool = False,
) -> str:
    """Return ``text`` if it is a well-formed URL of one of ``schemes``, else raise InvalidUrl.

    ``relative``: a relative reference (resolved later against another URL)
    is accepted too. The message says what is wrong but not which key or
    field held it: the caller adds that.
    """
    allowed = tuple(s.lower() for s in schemes)
    if not isinstance(text, str):
        raise InvalidUrl(f"a URL must be text, got {type(text).__name__}")
    if not text:
        raise InvalidUrl("the URL is empty")
    if len(text) > MAX_URL:
        raise InvalidUrl(f"the URL is {len(text)} characters long, at most {MAX_URL}")
    _check_characters(text)
    rest, hash_mark, fragment = text.partition("#")
    if hash_mark:
        _check_part(fragment, _QUERY_CHARS, "fragment")
    rest, question, query = rest.partition("?")
    if question:
        _check_part(query, _QUERY_CHARS, "query")
    scheme = scheme_of(rest)
    if scheme is None:
        if not relative:
            raise InvalidUrl(
                "it has no scheme",
                way_out="write it as " + ", ".join(f"{s}://..." for s in allowed),
            )
        hier = rest
    else:
        if scheme not in allowed:
            raise InvalidUrl(
                f"scheme {scheme!r} is not supported here",
                way_out="use " + ", ".join(f"{s}://" for s in allowed),
            )
        hier = rest[len(scheme) + 1 :]
    if hier.startswith("//"):
        authority, slash, path = hier[2:].partition("/")
        path = slash + path
        host = _check_authority(authority, need_host=scheme != "file")
        if scheme == "file" and host not in ("", "localhost"):
            raise InvalidUrl(
                f"a file URL on another host ({host}) cannot be read",
                way_out="use file:///absolute/path",
            )
    elif scheme in ("http", "https"):
        raise InvalidUrl(f"an {scheme} URL needs //host after '{scheme}:'")
    else:
        path = hier
    if scheme == "file" and not path.startswith("/"):
        raise InvalidUrl("a file URL needs an absolute path", way_out="use file:///absolute/path")
    if "[" in path or "]" in path:
        raise InvalidUrl("'[' or ']' outside an IPv6 host", way_out="percent-encode them")
    _check_part(path, _PATH_CHARS, "path")
    if scheme is None and not hier.startswith("//") and not path and not question:
        raise InvalidUrl("the relative URL names nothing")
    return text


def check_image_url(document_url: str, image_url: str) -> None:
    """Refuse an image URL that a document at ``document_url`` may not name.

    A document fetched from a server must never make the agent read local
    files, nor downgrade https to http: the image must use the document's
    scheme, or https under an http document. A relative image URL inherits
    the document's scheme and is always fine. A local document (file://, a
    USB stick) may name any image.
    """
    image_scheme = scheme_of(image_url)
    document_scheme = scheme_of(document_url) or "file"
    if image_scheme is None or document_scheme in ("file", image_scheme):
        return
    if document_scheme == "http" and image_scheme == "https":
        return
    raise InvalidUrl(
        f"a release document fetched over {document_scheme} may not name a "
        f"{image_scheme} image ({image_url})",
        way_out=f"publish the image over {document_scheme}"
        + (" or https" if document_scheme == "http" else "")
        + ", or give a URL relative to the document",
    )
