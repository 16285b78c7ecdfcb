"""Release versions and their order.

A version is ``[v]MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`` with any number of
numeric dot components (``1.3`` == ``1.3.0``). Pre-releases sort before the
release (``1.3.0-rc1 < 1.3.0``), compared component by component, numbers
before words, as in SemVer 2.0. Build metadata is ignored for ordering.

Bounds (a version comes from a server and from files, so it is input like
any other): at most :data:`MAX_LENGTH` characters, ASCII only, no blanks,
and at most :data:`MAX_DIGITS` digits in any numeric component (so no
version ever reaches Python's int-string limit, and the order stays a
comparison of machine-sized numbers).
"""

from __future__ import annotations

import functools
import re

import attrs

from kubesolo_core.errors import CorruptInput

#: the longest version text accepted (SemVer sets no limit; tags and file names do)
MAX_LENGTH = 64
#: the most digits in one numeric component (fits 32 bits; 999999999.0.0 is plenty)
MAX_DIGITS = 9

_VERSION = re.compile(
    r"v?(?P<nums>[0-9]+(?:\.[0-9]+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?",
    re.ASCII,
)


def _bad(text: object, why: str) -> CorruptInput:
    shown = (
        repr(text)
        if not isinstance(text, str) or len(text) <= 40
        else (f"{text[:40]!r}... ({len(text)} characters)")
    )
    return CorruptInput(
        f"version {shown} {why}", way_out="publish a release whose version looks like 1.3.0"
    )


@functools.total_ordering
@attrs.frozen(kw_only=True)
class Version:
    """A parsed version; compare with ``<``, ``==``."""

    text: str = attrs.field(eq=False, order=False)
    numbers: tuple[int, ...]
    pre: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text`` or raise :class:`CorruptInput` naming it."""
        if not isinstance(text, str):
            raise _bad(text, "is not text")
        if len(text) > MAX_LENGTH:
            raise _bad(text, f"is longer than {MAX_LENGTH} characters")
        match = _VERSION.fullmatch(text)
        if match is None:
            raise _bad(text, "is not of the form MAJOR.MINOR.PATCH[-PRE]")
        parts = match["nums"].split(".")
        pre_parts = match["pre"].split(".") if match["pre"] else []
        for part in (*parts, *(p for p in pre_parts if p.isdigit())):
            if len(part) > MAX_DIGITS:
                raise _bad(text, f"has a component of {len(part)} digits (at most {MAX_DIGITS})")
        numbers = tuple(int(n) for n in parts)
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers = numbers[:-1]
        pre = tuple(int(p) if p.isdigit() else p for p in pre_parts)
        return cls(text=text, numbers=numbers, pre=pre)

    def _key(self) -> tuple[object, ...]:
        # A release (no pre) sorts after all of its pre-releases.
        pre_key = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.pre)
        return (self.numbers, 1 if not self.pre else 0, pre_key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        return self.text


def to_version(value: Version | str) -> Version:
    """``value`` as a Version (text is parsed; CorruptInput when it is not a version)."""
    return value if isinstance(value, Version) else Version.parse(value)


def as_version(value: Version | str | None) -> Version | None:
    """As :func:`to_version`, None staying None (an attrs converter for optional versions)."""
    return None if value is None else to_version(value)
