"""The ``kubesolo-update`` command line: a thin typer layer over the Agent.

Conventions:

* the result of a command (a report, a JSON document) goes to stdout;
  ``--json`` prints exactly one document; logs, progress and error lines go
  to stderr;
* every error the agent raises on purpose ends in one line
  ``kubesolo-update: error: ...`` and the exit code of
  :mod:`kubesolo_entrypoints.exitcodes` (never a traceback for bad input);
* heavy modules (httpx, prometheus_client, rich, structlog) are imported by
  the commands that need them, so ``status --json`` starts fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from kubesolo_entrypoints.exitcodes import HELP_EPILOG, ExitCode, exit_code_for

if TYPE_CHECKING:
    from kubesolo_core.services import Agent
    from kubesolo_entrypoints.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="kubesolo-update",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich would cost ~40 ms at every start.
    rich_markup_mode=None,
    help=(
        "A/B update agent of KubeSolo OS: stage a new image on the passive slot, "
        "trial it through the bootloader, prove the node healthy, commit or roll back.\n\n"
        "Every global option --some-thing is also the update.conf key some_thing= and the "
        "environment variable KUBESOLO_UPDATE_SOME_THING; precedence: defaults < update.conf "
        "< environment < options."
    ),
    epilog=HELP_EPILOG,
)
config_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Show the effective configuration; convert cloud-init user-data.",
)
app.add_typer(config_app, name="config")


# --------------------------------------------------------------------------- plumbing


def _say(text: str) -> None:
    """A line for humans (stderr)."""
    typer.echo(text, err=True)


def _out(text: str) -> None:
    """The command's data (stdout)."""
    typer.echo(text)


def _fail(error: BaseException) -> typer.Exit:
    code = exit_code_for(error)
    _say(f"kubesolo-update: error: {error}")
    return typer.Exit(int(code))


def handled(fn: F) -> F:
    """Map the agent's errors (and OS errors) to one line and a documented exit code."""
    from kubesolo_core.errors import KubesoloError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KubesoloError as exc:
            raise _fail(exc) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _say(f"kubesolo-update: error: {exc.strerror or exc}{where}")
            raise typer.Exit(int(ExitCode.FAILED)) from None

    return wrapper  # type: ignore[return-value]


class Run:
    """What the global options left for the command: flags, then settings and agent on demand.

    Tests and embedders may pass ``obj=Run(flags, ports=..., environ=...)`` to
    the app: the global options are merged into it, ``ports`` replaces
    adapters by name (see :func:`kubesolo_entrypoints.bootstrap.build_agent`).
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
        from kubesolo_entrypoints.bootstrap import build_agent
        from kubesolo_entrypoints.logs import event_sink

        settings = self.settings(**extra)
        return build_agent(settings, events=event_sink(settings.log_format), **self.ports)


def _run(ctx: typer.Context) -> Run:
    run = ctx.find_object(Run)
    if run is None:  # a command invoked without the callback (library use of the app)
        run = Run({})
        ctx.obj = run
    return run


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _out(version("kubesolo-update"))
        except PackageNotFoundError:
            _out("unknown (not installed)")
        raise typer.Exit


# --------------------------------------------------------------------------- global options


@app.callback()
def main_options(  # noqa: PLR0917  (typer maps parameters to options)
    ctx: typer.Context,
    config: str | None = typer.Option(
        None, "--config", metavar="PATH", help="update.conf [default: /etc/kubesolo/update.conf]"
    ),
    state: str | None = typer.Option(
        None,
        "--state",
        metavar="PATH",
        help="state file [default: /var/lib/kubesolo/update/state.json]",
    ),
    server: str | None = typer.Option(
        None, "--server", metavar="URL", help="the release document (https, http, file)"
    ),
    bootloader: str | None = typer.Option(
        None, "--bootloader", metavar="grub|tryboot|auto", help="[default: auto]"
    ),
    grubenv: str | None = typer.Option(
        None, "--grubenv", metavar="PATH", help="GRUB env block [default: /boot/grub/grubenv]"
    ),
    autoboot: str | None = typer.Option(
        None,
        "--autoboot",
        metavar="PATH",
        help="autoboot.txt of the tryboot selector partition "
        "[default: /boot/firmware/autoboot.txt]",
    ),
    slot_a: str | None = typer.Option(
        None,
        "--slot-a",
        metavar="SPEC",
        help=(
            "PARTLABEL=NAME (GPT partition name), LABEL=NAME (filesystem label), "
            "a block device or an image file [default: PARTLABEL=KSOLOA]"
        ),
    ),
    slot_b: str | None = typer.Option(
        None, "--slot-b", metavar="SPEC", help="as --slot-a [default: PARTLABEL=KSOLOB]"
    ),
    cmdline: str | None = typer.Option(
        None,
        "--cmdline",
        metavar="PATH",
        help="kernel command line; kubesolo.slot=A|B names the booted slot "
        "[default: /proc/cmdline]",
    ),
    kubeconfig: str | None = typer.Option(
        None,
        "--kubeconfig",
        metavar="PATH",
        help="none reachable = the Kubernetes checks are 'unavailable'",
    ),
    node_name: str | None = typer.Option(
        None, "--node-name", metavar="NAME", help="[default: the host name]"
    ),
    containerd_socket: str | None = typer.Option(
        None,
        "--containerd-socket",
        metavar="PATH",
        help="[default: /run/containerd/containerd.sock]",
    ),
    data_dir: str | None = typer.Option(
        None,
        "--data-dir",
        metavar="PATH",
        help="the disk-writable probe lives here [default: /var/lib/kubesolo]",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """A/B update agent of KubeSolo OS.

    Every global option --some-thing is also the update.conf key some_thing=
    and the environment variable KUBESOLO_UPDATE_SOME_THING; precedence is
    defaults < update.conf < environment < options.
    """
    given = {
        "config": config,
        "state": state,
        "server": server,
        "bootloader": bootloader,
        "grubenv": grubenv,
        "autoboot": autoboot,
        "slot_a": slot_a,
        "slot_b": slot_b,
        "cmdline": cmdline,
        "kubeconfig": kubeconfig,
        "node_name": node_name,
        "containerd_socket": containerd_socket,
        "data_dir": data_dir,
    }
    if isinstance(ctx.obj, Run):
        ctx.obj.flags.update({k: v for k, v in given.items() if v is not None})
    else:
        ctx.obj = Run(given)


# --------------------------------------------------------------------------- commands


@app.command()
@handled
def check(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Passive: is a newer release available? Never changes the update state."""
    from kubesolo_entrypoints import records, render

    run = _run(ctx)
    agent = run.agent()
    path = records.record_path(run.settings().state, records.CHECK_FILE)
    try:
        result = agent.check()
    except Exception as exc:
        records.write_record(path, {"ok": False, "error": str(exc)}, agent.clock.now())
        raise
    records.write_record(
        path,
        {
            "ok": True,
            "current_version": result.current_version,
            "available_version": result.available_version,
            "update_available": result.update_available,
        },
        agent.clock.now(),
    )
    _out(render.dumps(render.check_doc(result)) if json_out else result.reason)


class _ProgressBar:
    """A one-line progress display on stderr (only used when stderr is a TTY)."""

    def __init__(self) -> None:
        self.seen: dict[int | None, int] = {}
        self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        import time

        self.seen[total] = done
        now = time.monotonic()
        if now - self.last < 0.1 and (total is None or done < total):
            return
        self.last = now
        # Download and write report on the same callback; show the slower one.
        fractions = [d / t for t, d in self.seen.items() if t]
        fraction = min(fractions) if fractions else 0.0
        width = 30
        bar = "#" * int(fraction * width)
        sys.stderr.write(f"\r  [{bar:<{width}}] {fraction:6.1%}  {done / 1048576:8.1f} MiB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.seen:
            sys.stderr.write("\n")


@app.command()
@handled
def apply(
    ctx: typer.Context,
    force: bool = typer.Option(
        False, "--force", help="Skip the headroom and node-label checks of preflight."
    ),
    allow_downgrade: bool = typer.Option(
        False, "--allow-downgrade", help="Allow a release older than the running one."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Preflight, download, write and verify the new image into the passive slot -> staged."""
    from kubesolo_entrypoints import records, render

    run = _run(ctx)
    agent = run.agent()
    bar = _ProgressBar() if sys.stderr.isatty() else None
    try:
        result = agent.apply(force=force, allow_downgrade=allow_downgrade, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    records.write_record(
        records.record_path(run.settings().state, records.CHECK_FILE),
        {
            "ok": True,
            "current_version": result.state.from_version,
            "available_version": result.state.to_version,
            "update_available": result.changed,
        },
        agent.clock.now(),
    )
    if result.stats is not None:
        records.write_record(
            records.record_path(run.settings().state, records.APPLY_FILE),
            {"version": result.state.to_version, **render.stats_doc(result.stats)},
            agent.clock.now(),
        )
    if json_out:
        _out(render.dumps(render.apply_doc(result)))
        return
    _out(result.message)
    if result.stats is not None:
        _out("  " + render.stats_text(result.stats))


@app.command()
@handled
def activate(
    ctx: typer.Context,
    reboot: bool = typer.Option(
        False,
        "--reboot",
        help="Reboot into the trial now (the tryboot way: 'reboot \"0 tryboot\"').",
    ),
) -> None:
    """staged -> activated: the bootloader will trial the new slot at the next boot."""
    agent = _run(ctx).agent()
    state = agent.activate()
    slot = state.target_slot.value if state.target_slot else "?"
    if agent.boot_env.kind == "tryboot" and not reboot:
        # A plain reboot (or a power cut) returns to the committed partition: the
        # Pi firmware runs a trial only for a reboot that carries the tryboot flag.
        _out(
            f"slot {slot} ({state.to_version}) activated: start its trial with "
            "`reboot '0 tryboot'` (or `kubesolo-update activate --reboot`); a plain "
            "reboot boots the committed slot"
        )
    else:
        _out(f"slot {slot} ({state.to_version}) activated: reboot to start its trial")
    if reboot:
        agent.boot_env.request_reboot()


@app.command()
@handled
def rollback(ctx: typer.Context) -> None:
    """Switch back to the previous slot now (manual); reboot to run it."""
    state = _run(ctx).agent().rollback()
    slot = state.from_slot.value if state.from_slot else "?"
    _out(f"rolled back: slot {slot} ({state.from_version}) is committed; reboot to run it")


@app.command()
@handled
def healthcheck(
    ctx: typer.Context,
    healthcheck_url: str | None = typer.Option(
        None, "--healthcheck-url", metavar="URL", help="Operator probe that must answer 200."
    ),
    auto_rollback_after: str | None = typer.Option(
        None,
        "--auto-rollback-after",
        metavar="N",
        help="Roll back after N failed checks of a trial (0 = off) [default: 0]",
    ),
    kube_system_settle: str | None = typer.Option(
        None,
        "--kube-system-settle",
        metavar="SECONDS",
        help="kube-system pods must hold Running this long [default: 30]",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Reconcile with the bootloader, check the node, then commit, count a failure or roll back."""
    from kubesolo_core.errors import HealthCheckFailed
    from kubesolo_core.services import HealthOutcome
    from kubesolo_entrypoints import records, render

    run = _run(ctx)
    agent = run.agent(
        healthcheck_url=healthcheck_url,
        auto_rollback_after=auto_rollback_after,
        kube_system_settle=kube_system_settle,
    )
    failed: HealthCheckFailed | None = None
    try:
        outcome = agent.healthcheck()
    except HealthCheckFailed as exc:
        if not isinstance(exc.report, HealthOutcome):
            raise
        failed, outcome = exc, exc.report
    records.write_record(
        records.record_path(run.settings().state, records.HEALTH_FILE),
        {"healthy": outcome.healthy, "checks": {c.name: c.ok for c in outcome.report.checks}},
        agent.clock.now(),
    )
    _out(render.dumps(render.health_doc(outcome)) if json_out else render.health_text(outcome))
    if failed is not None:
        raise _fail(failed)


@app.command()
@handled
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Both slots (device, version, active, booted), the boot env, the full update state."""
    from kubesolo_entrypoints import render

    run = _run(ctx)
    report = run.agent().status()
    if json_out:
        _out(render.dumps(render.status_doc(report)))
        return
    settings = run.settings()
    where = settings.grubenv if report.boot.kind == "grub" else settings.autoboot
    _out(render.status_text(report, where=str(where)))


@app.command()
@handled
def metrics(
    ctx: typer.Context,
    listen: str = typer.Option(
        "127.0.0.1:9469",
        "--listen",
        metavar="HOST:PORT",
        help="Address to serve Prometheus text on (/metrics).",
    ),
) -> None:
    """Serve Prometheus metrics derived from state.json and the boot env at scrape time."""
    from kubesolo_entrypoints.metrics import parse_listen, serve

    settings = _run(ctx).settings()
    host, port = parse_listen(listen)
    server = serve(settings, host, port)
    _say(f"serving metrics on http://{server.address}/metrics (Ctrl-C to stop)")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@app.command()
@handled
def demo(
    keep: bool = typer.Option(False, "--keep", help="Keep the sandbox directory afterwards."),
) -> None:
    """The whole lifecycle in a throw-away sandbox: no root, no network, seconds."""
    from kubesolo_entrypoints.demo import run_demo

    run_demo(keep=keep)


@app.command()
@handled
def simulate(
    runs: str = typer.Option("200", "--runs", metavar="N", help="Random sequences to run."),
    seed: str = typer.Option("0", "--seed", metavar="S", help="Seed (same seed, same runs)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Random update/boot/crash sequences through the models; invariants checked."""
    from kubesolo_entrypoints import render
    from kubesolo_entrypoints.simulate import run_simulation

    report = run_simulation(runs=_count("--runs", runs, 1), seed=_count("--seed", seed, 0))
    _out(render.dumps(report.to_json()) if json_out else report.text())
    if report.violations:
        raise typer.Exit(int(ExitCode.FAILED))


def _count(option: str, text: str, least: int) -> int:
    from kubesolo_core.errors import ConfigError

    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise ConfigError(
            f"option {option}: {text!r} is not a whole number >= {least}",
            way_out=f"e.g. {option} 200",
        )
    return value


@config_app.command("show")
@handled
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration as update.conf text."""
    from kubesolo_entrypoints.config import conf_text

    _out(conf_text(_run(ctx).settings()).rstrip("\n"))


@config_app.command("from-cloud-init")
@handled
def config_from_cloud_init(
    userdata: str = typer.Argument(..., metavar="USERDATA", help="cloud-init user-data file"),
    output: str | None = typer.Option(
        None, "--output", "-o", metavar="PATH", help="Write update.conf here (default: stdout)."
    ),
) -> None:
    """Convert the `updates:` mapping of cloud-init user-data into update.conf (1:1)."""
    from pathlib import Path

    from kubesolo_entrypoints.cloudinit import conf_from_userdata

    text = conf_from_userdata(Path(userdata))
    if output is None:
        _out(text.rstrip("\n"))
        return
    from kubesolo_adapters.atomic import atomic_write

    atomic_write(Path(output), text.encode())
    _say(f"wrote {output}")


class _TextParam:
    """typer's coercion for a text option, without pydantic.

    typer >= 0.2x validates every non-bool option through a pydantic
    TypeAdapter, importing pydantic (0.1-0.3 s) on every run, and pydantic's
    compiled core cannot load from a zipapp. Every option of this CLI is text
    (config.py parses and checks the values, naming the option in its
    errors) or a bool flag, so text passes through unchanged.
    """

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


def command() -> Any:
    """The click command of the app, with text options that skip pydantic."""
    from typer.main import get_command

    cmd = get_command(app)
    _plain_text_options(cmd)
    return cmd


def main() -> None:
    """The console script."""
    command()(prog_name="kubesolo-update")
