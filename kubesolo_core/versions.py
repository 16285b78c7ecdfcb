"""Release versions and their order.

A version is ``[v]MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`` with any number of
numeric dot components (``1.3`` == ``1.3.0``). Pre-releases sort before the
release (``1.3.0-rc1 < 1.3.0``), compared component by component, numbers
before words, as in SemVer 2.0. Build metadata is ignored for ordering.
"""

from __future__ import annotations

import functools
import re

import attrs

from kubesolo_core.errors import CorruptInput

_VERSION = re.compile(
    r"^v?(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
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
        match = _VERSION.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise CorruptInput(
                f"version {text!r} is not of the form MAJOR.MINOR.PATCH[-PRE]",
                way_out="publish a release whose version looks like 1.3.0",
            )
        numbers = tuple(int(n) for n in match["nums"].split("."))
        while len(numbers) > 1 and numbers[-1] == 0:
            numbers = numbers[:-1]
        pre: tuple[int | str, ...] = ()
        if match["pre"]:
            pre = tuple(int(p) if p.isdigit() else p for p in match["pre"].split("."))
        return cls(text=text.strip(), numbers=numbers, pre=pre)

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


def as_version(value: Version | str | None) -> Version | None:
    """``value`` as a Version (text is parsed; CorruptInput when it is not a version)."""
    if value is None or isinstance(value, Version):
        return value
    return Version.parse(value)

