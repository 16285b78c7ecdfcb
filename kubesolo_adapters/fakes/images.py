"""The synthetic slot image the fakes understand: a header (version, bootable, healthy) + body.

A real slot holds a filesystem with a ``version`` file; a fake slot holds
these bytes, whose header says what the simulated box does when it boots
them. Torn, empty or foreign content has no header and never boots.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["IMAGE_MAGIC", "image_meta", "make_image"]

IMAGE_MAGIC = b"KSOLO-IMAGE\n"


def make_image(
    version: str, *, size: int = 4096, bootable: bool = True, healthy: bool = True
) -> bytes:
    """A small synthetic slot image that the memory adapters understand."""
    header = (
        IMAGE_MAGIC
        + json.dumps(
            {"version": version, "bootable": bootable, "healthy": healthy}, sort_keys=True
        ).encode()
        + b"\n"
    )
    if len(header) > size:
        raise ValueError(f"image size {size} is smaller than its header")
    body = hashlib.sha256(version.encode()).digest() * (size // 32 + 1)
    return header + body[: size - len(header)]


def image_meta(content: bytes | None) -> dict[str, Any] | None:
    """The header of a synthetic image, or None for a torn, empty or foreign slot."""
    if not content or not content.startswith(IMAGE_MAGIC):
        return None
    line = content[len(IMAGE_MAGIC) :].split(b"\n", 1)[0]
    try:
        meta = json.loads(line)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None
