"""One invocation of ``kubesolo-update``: its flags, its settings and agent, how it ends.

Data goes to stdout (:func:`tell`), humans and errors to stderr (:func:`say`);
every error the agent raises on purpose, and every OS error, ends in one line
``kubesolo-update: error: ...`` and the documented exit code (:func:`handled`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from kubesolo_entrypoints.exitcodes import ExitCode, exit_code_for

if TYPE_CHECKING:
    from kubesolo_core.services import Agent
    from kubesolo_entrypoints.config import Settings

__all__ = ["Run", "handled", "json_reported", "locked", "run_of", "say", "tell"]

F = TypeVar("F", bound=Callable[..., Any])


def say(text: str) -> None:
    """A line for humans (stderr)."""
    typer.echo(text, err=True)


def tell(text: str) -> None:
    """The command's data (stdout)."""
    typer.echo(text)


def json_reported(error: BaseException) -> BaseException:
    """Mark ``error`` as told on stdout already (a command's own richer ``--json`` document)."""
    error.json_reported = True  # type: ignore[attr-defined]
    return error


def _json_error(json_out: bool, error: BaseException, message: str, code: ExitCode) -> None:
    # Under --json a failure is one document on stdout too (a script reads one
    # place), unless the command printed its own already (check, apply, demo).
    if json_out and not getattr(error, "json_reported", False):
        from kubesolo_entrypoints import render

        tell(render.dumps({"ok": False, "error": message, "exit_code": int(code)}))


def handled(fn: F) -> F:
    """Map the agent's errors (and OS errors) to one line and a documented exit code.

    Anything else is a bug, but still one line and exit 1, never a traceback
    on an operator's screen (issue 8); the catalogue of hostile inputs checks
    that no input ever reaches this "internal error" line.
    """
    from kubesolo_core.errors import KubesoloError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command's own exit code, or a usage error typer reports itself
        except KubesoloError as exc:
            error: Exception = exc
            message, code = str(exc), exit_code_for(exc)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            error, message, code = exc, f"{exc.strerror or exc}{where}", ExitCode.FAILED
        except Exception as exc:
            error, code = exc, ExitCode.FAILED
            message = (
                f"internal error: {type(exc).__name__}: "
                f"{str(exc)[:300]} (a bug in kubesolo-update: please report it)"
            )
        _json_error(bool(kwargs.get("json_out")), error, message, code)
        say(f"kubesolo-update: error: {message}")
        raise typer.Exit(int(code))

    return wrapper  # type: ignore[return-value]


def locked(command: str) -> Callable[[F], F]:
    """Run the command under the run lock next to state.json (one kubesolo-update at a time).

    For every command that may change the state, the boot env or a slot; the
    wait is ``lock_wait`` seconds, then :class:`~kubesolo_core.errors.Busy`
    (exit 1, nothing done). Put it under :func:`handled`.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from kubesolo_adapters.runlock import LOCK_NAME, RunLock
            from kubesolo_adapters.statefile import JsonStateStore, foreign_state

            settings = run_of(kwargs["ctx"]).settings()
            if foreign_state(settings.state):
                # Refused here, as loading it would (left in place), before the
                # command does anything: no lock file, no record, no TUF cache
                # in some other program's folder. ``check`` too, which reads no
                # state but keeps its records and cache next to it.
                JsonStateStore(settings.state).load()  # raises (a file that loads is ours)
            path = settings.state.parent / LOCK_NAME
            with RunLock.acquire(path, command=command, wait=settings.lock_wait):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class Run:
    """What the global options left for the command: flags, then settings and agent on demand.

    Tests and embedders may pass ``obj=Run(flags, ports=..., environ=...)`` to
    the app: the global options are merged into it, ``ports`` replaces
    adapters by name (the keywords of :func:`kubesolo_entrypoints.bootstrap.bootstrap`).
    """

    def __init__(
        self,
        flags: dict[str, Any] | None = None,
        *,
        ports: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.flags: dict[str, Any] = dict(flags or {})
        self.ports = dict(ports or {})
        self.environ = environ
        self._settings: Settings | None = None

    def settings(self, **extra: Any) -> Settings:
        """The resolved settings (defaults < file < environment < flags)."""
        from kubesolo_entrypoints.config import load_settings

        if self._settings is None or extra:
            self._settings = load_settings({**self.flags, **extra}, self.environ)
        return self._settings

    def agent(self, **extra: Any) -> Agent:
        """The agent over the real adapters (or ``ports``), logging events to stderr."""
        from kubesolo_entrypoints.bootstrap import bootstrap
        from kubesolo_entrypoints.logs import event_sink

        settings = self.settings(**extra)
        return bootstrap(settings, events=event_sink(settings.log_format), **self.ports)


def run_of(ctx: typer.Context) -> Run:
    """The Run of this invocation (made on the spot for a command used without the callback)."""
    run = ctx.find_object(Run)
    if run is None:  # a command invoked without the callback (library use of the app)
        run = Run({})
        ctx.obj = run
    return run
