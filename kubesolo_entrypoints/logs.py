"""Logging for the entrypoints: structlog, configured here and nowhere else.

Logs go to stderr: ``ConsoleRenderer`` when stderr is a terminal, one JSON
object per line otherwise (``log_format=`` forces either). structlog is
imported on the first event only, so a command that has nothing to log
(``status --json`` on a consistent box) never pays for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubesolo_core.ports import EventSink


def _import_structlog() -> Any:
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    # structlog.dev imports rich only to pretty-print exceptions, which this
    # agent never logs; hiding rich during the import keeps rich's ~40 ms off
    # every command (typer imports it itself only to render help and errors).
    hide = "rich" not in sys.modules
    if hide:
        sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        if hide and sys.modules.get("rich", ...) is None:
            del sys.modules["rich"]
    return structlog


_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """A value as a log line should carry it: domain values (a Version, a Slot) by their text."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    text = getattr(value, "value", None)  # an enum member: its value, not Slot.B
    return text if isinstance(text, str) else str(value)


def _plain_fields(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    # A fleet's log search asks for to_version="2.0.0", not for a Python repr.
    return {key: _plain(value) for key, value in event.items()}


def configure(log_format: str = "auto", stream: Any = None) -> Any:
    """Configure structlog for this process and return a logger."""
    structlog = _import_structlog()
    out = stream if stream is not None else sys.stderr
    console = log_format == "console" or (log_format == "auto" and out.isatty())
    renderer = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=True)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _plain_fields,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("kubesolo-update")


def event_sink(log_format: str = "auto", stream: Any = None) -> EventSink:
    """An event sink that configures logging on its first event."""
    logger: Any = None

    def sink(event: str, **fields: object) -> None:
        nonlocal logger
        if logger is None:
            logger = configure(log_format, stream)
        logger.info(event, **fields)

    return sink
