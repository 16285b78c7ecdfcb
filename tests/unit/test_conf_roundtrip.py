"""update.conf's writer and reader agree (issue 8, bug 4): what is written reads back the same.

cloud-init's ``updates:`` values go through the writer
(:func:`kubesolo_entrypoints.cloudinit.conf_from_mapping`); a value the
reader would split or strip differently (a carriage return, a Unicode line
separator, surrounding quotes or blanks) either round-trips exactly or is
refused with ConfigError naming its key. Never a second key out of one value.
"""

from __future__ import annotations

import string

from hypothesis import example, given
from hypothesis import strategies as st

from kubesolo_core.errors import ConfigError
from kubesolo_entrypoints.cloudinit import conf_from_mapping
from kubesolo_entrypoints.config import (
    NOT_IN_FILE,
    PARSERS,
    conf_line,
    conf_pairs,
    parse_conf,
    parse_value,
)

KEYS = sorted(set(PARSERS) - NOT_IN_FILE)
#: text that often breaks naive line-based formats
_TRICKY = st.sampled_from(
    ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", '"', "'", " ", "#",
     "=", "\t", "\x00", "\x1b", "slot_b=/dev/sda1", "http://h.example/r.json"]
)  # fmt: skip
VALUES = st.lists(
    st.one_of(_TRICKY, st.text(string.printable, max_size=12), st.text(max_size=6)), max_size=6
).map("".join)


@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
@example({"server": "http://x.example/r.json\rslot_b=/dev/sda1"})
@example({"node_name": "edge\u2028slot_b=/dev/sda1"})
@example({"node_name": '"edge"'})
def test_written_conf_reads_back_the_same_or_is_refused(mapping: dict[str, str]) -> None:
    try:
        text = conf_from_mapping(mapping, "user-data: updates")
    except ConfigError:
        return  # refused, with the key named: fine
    expected = {key: parse_value(key, value, key) for key, value in mapping.items()}
    assert parse_conf(text, "written") == expected


@given(st.sampled_from(KEYS), VALUES)
@example("node_name", " edge ")
@example("server", "'quoted'")
@example("slot_b", '"/dev/sda3')
def test_one_line_reads_back_byte_for_byte(key: str, value: str) -> None:
    """The raw text level: conf_line's value is exactly what conf_pairs reads back."""
    try:
        line = conf_line(key, value)
    except ConfigError:
        assert any(not (c.isprintable() or c == " ") for c in value)  # refused only for these
        return
    assert "\n" not in line
    assert conf_pairs(line + "\n", "x") == [(key, value, "x:1")]
