"""The value parsers of the configuration keys: text in, a value or ValueError with the reason.

Each key of :class:`kubesolo_entrypoints.config.Settings` names one of these;
the reason becomes part of the one-line ConfigError that names the key and
where its value came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

URL_SCHEMES = ("https://", "http://", "file://")


def default_node_name() -> str:
    """The host name (``os.uname`` is what `hostname` prints; no socket import at start-up)."""
    return os.uname().nodename


def path(value: str) -> Path:
    if not value.strip():
        raise ValueError("a path is required")
    return Path(value.strip())


def optional_path(value: str) -> Path | None:
    return Path(value.strip()) if value.strip() else None


def url(value: str) -> str:
    text = value.strip()
    if not text.startswith(URL_SCHEMES):
        raise ValueError(f"{value!r} is not an https://, http:// or file:// URL")
    return text


def optional_url(value: str) -> str | None:
    return url(value) if value.strip() else None


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def nonneg_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def nonneg_float(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value!r} must be a finite number >= 0")
    return number


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


def node_name(value: str) -> str:
    text = value.strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{value!r} is not a node name")
    return text
