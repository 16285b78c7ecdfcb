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


def test_progress_off_a_terminal_is_a_log_event_every_interval_and_at_the_end() -> None:
    from kubesolo_entrypoints.progress import LogProgress

    now = [0.0]
    seen: list[dict[str, object]] = []
    progress = LogProgress(lambda event, **f: seen.append({"event": event, **f}),
                           every=10.0, clock=lambda: now[0])  # fmt: skip
    total = 100 << 20
    for step in range(1, 101):  # 100 MiB in 1 MiB steps, one second each
        now[0] = float(step)
        progress(step << 20, total)
    progress(total, total)  # a second report of the end says nothing new
    assert {e["event"] for e in seen} == {"update.progress"}
    # the first report one interval in, then one per 10 s, and the end once
    assert [e["percent"] for e in seen] == [11.0, 21.0, 31.0, 41.0, 51.0, 61.0, 71.0, 81.0, 91.0,
                                            100.0]  # fmt: skip
    assert seen[-1]["done_bytes"] == seen[-1]["total_bytes"] == total
