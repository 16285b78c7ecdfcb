"""typer's option handling without pydantic: every option of this CLI is text or a flag.

typer >= 0.2x validates every non-bool option through a pydantic TypeAdapter,
importing pydantic (0.1-0.3 s) on every run, and pydantic's compiled core
cannot load from a zipapp. Every option of this CLI is text (config.py parses
and checks the values, naming the option in its errors) or a bool flag, so
text passes through unchanged. Only where typer would build its runtime
coercion lazily is it replaced: if a future typer changes these internals,
the normal path stays.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["plain_command"]


class _TextParam:
    """typer's coercion for a text option, without pydantic: text passes unchanged."""

    def coerce(self, value: Any, param: Any = None, ctx: Any = None) -> Any:
        if value is None:
            return None
        return value if isinstance(value, str) else str(value)


class _FlagParam:
    """The same for bool flags (click already hands them over as bools)."""

    def coerce(self, value: Any, param: Any = None, ctx: Any = None) -> Any:
        if value is None or isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")


def _plain_text_options(cmd: Any) -> None:
    params = list(getattr(cmd, "params", ()))
    if getattr(cmd, "_help_option", "absent") is None and getattr(cmd, "add_help_option", False):
        # click makes --help on first use; make it now (cached as click would)
        # so that it gets the light coercion too.
        try:
            from typer._click.decorators import help_option

            help_option(["--help"])(cmd)
            cmd._help_option = cmd.params.pop()
            params.append(cmd._help_option)
        except (ImportError, AttributeError, TypeError):
            pass
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        # Only where typer would build its runtime coercion lazily: if a
        # future typer changes these internals, the normal path stays.
        kind = getattr(descriptor, "annotation", None)
        if kind in (str, bool) and getattr(param, "_runtime_param", "absent") is None:
            param._runtime_param = _TextParam() if kind is str else _FlagParam()
    for sub in getattr(cmd, "commands", {}).values():
        _plain_text_options(sub)


def plain_command(app: typer.Typer) -> Any:
    """The click command of ``app``, with text options that skip pydantic."""
    from typer.main import get_command

    cmd = get_command(app)
    _plain_text_options(cmd)
    return cmd
