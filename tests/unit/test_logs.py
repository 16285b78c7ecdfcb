"""The JSON log lines: every field a plain JSON value, domain values by their text."""

from __future__ import annotations

import io
import json

from kubesolo_core.lifecycle import Phase
from kubesolo_core.slots import Slot
from kubesolo_core.versions import Version
from kubesolo_entrypoints.logs import event_sink


def test_domain_values_are_logged_as_their_text() -> None:
    out = io.StringIO()
    sink = event_sink("json", out)
    sink(
        "update.phase",
        phase=Phase.STAGED,
        to_version=Version.parse("2.0.0"),
        slot=Slot.B,
        nested={"versions": (Version.parse("1.0.0"), None), "count": 3},
    )
    line = json.loads(out.getvalue())
    assert line["to_version"] == "2.0.0"
    assert line["slot"] == "B" and line["phase"] == "staged"
    assert line["nested"] == {"versions": ["1.0.0", None], "count": 3}
    assert line["event"] == "update.phase" and line["level"] == "info"
