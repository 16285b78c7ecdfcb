"""The value parsers of the configuration keys: text in, a value or ValueError with the reason.

Each key of :class:`kubesolo_entrypoints.config.Settings` names one of these;
the reason becomes part of the one-line ConfigError that names the key and
where its value came from. Every value, whatever its source, is first one
line of printable text (:func:`check_text`): a value can never smuggle a
second key into update.conf.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from kubesolo_core.errors import KubesoloError
from kubesolo_core.urls import check_url

#: no value of any key is longer (a path is at most PATH_MAX)
MAX_VALUE = 4096
#: whole numbers (counts) have at most this many digits
MAX_DIGITS = 9


def default_node_name() -> str:
    """The host name (``os.uname`` is what `hostname` prints; no socket import at start-up)."""
    return os.uname().nodename


def shown(value: str, limit: int = 40) -> str:
    """``value`` for an error line: repr'd and cut short (a 5000-digit value stays one line)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


#: characters that end a line for str.splitlines() but are no line break in update.conf
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def check_text(value: str) -> str:
    """Refuse control characters, line breaks of any kind and overlong values; return ``value``."""
    if len(value) > MAX_VALUE:
        raise ValueError(f"{shown(value)} is longer than {MAX_VALUE} characters")
    for position, char in enumerate(value):
        if char in _LINE_BREAKS or not (char.isprintable() or char == " "):
            raise ValueError(
                f"control character U+{ord(char):04X} at position {position}: "
                "a value is one line of printable text"
            )
    return value


def path(value: str) -> Path:
    if not value.strip():
        raise ValueError("a path is required")
    return Path(value.strip())


def optional_path(value: str) -> Path | None:
    return Path(value.strip()) if value.strip() else None


def url_of(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        text = value.strip()
        if not text:
            return None
        try:
            return check_url(text, schemes=schemes)
        except KubesoloError as exc:
            raise ValueError(f"{shown(text, 80)}: {exc}") from None

    return parse


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


_WHOLE = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)


def nonneg_int(value: str) -> int:
    text = value.strip()
    if text.startswith("-") and _WHOLE.fullmatch(text[1:]):
        raise ValueError(f"{shown(text)} is negative")
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{shown(text)} is not a whole number >= 0")
    if len(text.lstrip("0")) > MAX_DIGITS:
        raise ValueError(f"{shown(text)} has more than {MAX_DIGITS} digits")
    return int(text)


def nonneg_float(value: str) -> float:
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{shown(text)} is not a finite number of seconds >= 0 (e.g. 30 or 2.5)")
    if len(text.lstrip("0").split(".")[0]) > MAX_DIGITS:
        raise ValueError(f"{shown(text)} has more than {MAX_DIGITS} digits before the point")
    return float(text)


def slot_spec(value: str) -> str:
    """Validate a slot spec: ``PARTLABEL=NAME``, ``LABEL=NAME``, a device or image file path."""
    text = value.strip()
    if not text:
        raise ValueError("a slot spec is required")
    if "=" in text.split("/", 1)[0]:
        kind, _, name = text.partition("=")
        if kind not in ("LABEL", "PARTLABEL"):
            raise ValueError(
                f"{value!r}: only PARTLABEL=NAME, LABEL=NAME, a block device or an image "
                "file path are supported"
            )
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{value!r}: {kind}= needs a name without blanks")
    return text


_NODE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?", re.ASCII)


def node_name(value: str) -> str:
    text = value.strip()
    if not _NODE_NAME.fullmatch(text):
        raise ValueError(
            f"{shown(text)} is not a node name (letters, digits, '-', '.', '_'; "
            "at most 253; no '/')"
        )
    return text


def boolean(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def channel(value: str) -> str:
    from kubesolo_core.channel import channel_name
    from kubesolo_core.errors import CorruptInput

    try:
        return channel_name(value.strip())
    except CorruptInput as exc:
        raise ValueError(exc.message) from None
