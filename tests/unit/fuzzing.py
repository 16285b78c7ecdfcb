"""Shared pieces of the parser fuzzing (tests/unit/test_fuzz.py).

* :data:`FUZZ_EXAMPLES`: 10,000 examples per parser in the ``ci``
  hypothesis profile (``CI`` or ``KUBESOLO_HYPOTHESIS_PROFILE=ci``), a few
  hundred on a laptop.
* :func:`only_domain_errors`: runs a parser; anything it raises must be one
  of ours (:class:`kubesolo_core.errors.KubesoloError`), everything else
  (ValueError, RecursionError, UnicodeError, a library's own exception)
  fails the example, which hypothesis then shrinks to a minimal input.
* :data:`TALLY` and :data:`SECONDS`: examples run and wall time per parser,
  printed at the end of the run (tests/unit/conftest.py), so CI's log shows
  that each parser really saw its 10,000 inputs.
* :func:`mutated`: a valid document with random edits (cuts, insertions of
  hostile bytes, repeats): most fuzz inputs should get past the first
  line of a parser, not die at ``json.loads``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kubesolo_core.errors import KubesoloError

T = TypeVar("T")

PROFILE = os.environ.get("KUBESOLO_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
FUZZ_EXAMPLES = 10_000 if PROFILE == "ci" else 300

#: settings for every fuzz test: many examples, no deadline, no shrinking time limit worries
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: parser -> examples run, and -> wall seconds of its test (filled as the tests run)
TALLY: dict[str, int] = {}
SECONDS: dict[str, float] = {}


def only_domain_errors(name: str, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` for parser ``name``: our errors are fine (None), anything else fails."""
    TALLY[name] = TALLY.get(name, 0) + 1
    try:
        return fn()
    except KubesoloError:
        return None


#: bytes that break naive parsers: line breaks of every kind, NUL, quotes, escapes, UTF-8 junk
HOSTILE_PIECES: list[bytes] = [
    b"\n", b"\r", b"\r\n", b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x85", b"\xc2\x85",
    "\u2028".encode(), b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\\", b'"', b"'", b"=", b"#",
    b"[", b"]", b"{", b"}", b":", b"%", b"@", b"-", b".", b" ", b"\t", b"\x1b[2J",
    b"9" * 5000, b"[" * 2000, b"{" * 2000, b"&a", b"*a", b"!!python/object", b"<<",
    b"NaN", b"Infinity", b"-1", b"1e400", b"0x10", b"\xed\xa0\x80",
]  # fmt: skip


@st.composite
def mutated(draw: Any, valid: bytes, max_edits: int = 4) -> bytes:
    """``valid`` with up to ``max_edits`` random edits (cut, insert, replace, duplicate)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, max_edits))):
        kind = draw(st.sampled_from(["cut", "insert", "replace", "duplicate", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[pos:]
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        else:
            piece = draw(st.one_of(st.sampled_from(HOSTILE_PIECES), st.binary(max_size=8)))
            if kind == "replace":
                del data[pos : pos + len(piece)]
            data[pos:pos] = piece
    return bytes(data)


def text_of(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
    """Bytes as text the way a file reader would see them (UTF-8 with surrogateescape)."""
    return strategy.map(lambda b: b.decode("utf-8", "surrogateescape"))


#: JSON values of any shape (for fields of documents)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
