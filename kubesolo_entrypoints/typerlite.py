"""typer's option handling without pydantic: every option of this CLI is text or a flag.

typer >= 0.2x validates every non-bool option through a pydantic TypeAdapter,
importing pydantic (0.1-0.3 s) on every run, and pydantic's compiled core
cannot load from a single-file artifact. Every option of this CLI is text (config.py parses
and checks the values, naming the option in its errors) or a bool flag, so
text passes through unchanged. Only where typer would build its runtime
coercion lazily is it replaced: if a future typer changes these internals,
the normal path stays.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

__all__ = ["key_options", "plain_command"]

F = TypeVar("F", bound=Callable[..., Any])


def key_options(command: str) -> Callable[[F], F]:
    """Give the command the options of its configuration keys (the table in config.py).

    Each key whose ``option`` is ``command`` becomes ``--name-with-dashes``
    (text; config.py parses it and names the option in its errors), right
    after the context parameter; the decorated function receives them as one
    mapping ``options`` (None: not given), so a key is declared once.
    """
    from kubesolo_entrypoints.config import options_of

    keys = options_of(command)

    def decorate(fn: F) -> F:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())
        own = [p for p in own if p.name != "options"]
        added = [
            inspect.Parameter(
                k.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=typer.Option(
                    None,
                    "--" + k.name.replace("_", "-"),
                    metavar=k.metadata["metavar"] or None,
                    help=k.metadata["help"],
                ),
                annotation=typing.Optional[str],  # noqa: UP045  (typer reads it at run time)
            )
            for k in keys
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = {k.name: kwargs.pop(k.name, None) for k in keys}
            return fn(*args, options=options, **kwargs)

        params = [*own[:1], *added, *own[1:]]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see this signature, not fn's
        return wrapper  # type: ignore[return-value]

    return decorate


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
