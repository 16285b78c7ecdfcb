"""The ``kubesolo-update`` command line: a thin typer layer over the Agent.

Conventions:

* the result of a command (a report, a JSON document) goes to stdout;
  ``--json`` prints exactly one document; logs, progress and error lines go
  to stderr;
* every error the agent raises on purpose ends in one line
  ``kubesolo-update: error: ...`` and the exit code of
  :mod:`kubesolo_entrypoints.exitcodes` (never a traceback for bad input);
* heavy modules (httpx, prometheus_client, rich, structlog) are imported by
  the commands that need them, so ``status --json`` starts fast; for the same
  reason the annotations here are not postponed (no ``from __future__ import
  annotations``): typer would evaluate every one of them as text at each start.
"""

import gc
import sys
from typing import Any

import typer

from kubesolo_entrypoints.config import GLOBAL
from kubesolo_entrypoints.exitcodes import HELP_EPILOG, ExitCode
from kubesolo_entrypoints.invocation import (
    Run,
    handled,
    json_reported,
    locked,
    run_of,
    say,
    tell,
)
from kubesolo_entrypoints.typerlite import key_options

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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            tell(version("kubesolo-update"))
        except PackageNotFoundError:
            tell("unknown (not installed)")
        raise typer.Exit


# --------------------------------------------------------------------------- global options


@app.callback()
@key_options(GLOBAL)
def main_options(
    ctx: typer.Context,
    options: dict[str, str | None],
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
    if isinstance(ctx.obj, Run):
        ctx.obj.flags.update({k: v for k, v in options.items() if v is not None})
    else:
        ctx.obj = Run(options)


# --------------------------------------------------------------------------- commands


@app.command()
@handled
@locked("check")
def check(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Passive: is a newer release available, and would apply take it? Never changes the state."""
    from kubesolo_entrypoints import records, render, trust

    run = run_of(ctx)
    agent = run.agent()
    view = trust.announce(run.settings())
    state = run.settings().state
    try:
        result = agent.check()
    except Exception as exc:
        trust.refused(state, agent.clock.now(), exc, view, json_out=json_out)
        raise
    records.note_check(
        state,
        agent.clock.now(),
        current=result.current_version,
        available=result.available_version,
        update_available=result.update_available,
        refusals=[r.reason for r in result.held_back],
        unsigned=view["unsigned"],
    )
    if json_out:
        doc = render.check_doc(result)
        doc["trust"] = view
        doc["held_back"] = trust.refusal_docs(list(result.held_back))
        tell(render.dumps(doc))
    else:
        tell(result.reason)


@app.command()
@handled
@locked("apply")
def apply(
    ctx: typer.Context,
    force: bool = typer.Option(
        False, "--force", help="Skip the headroom and node-label checks of preflight."
    ),
    allow_downgrade: bool = typer.Option(
        False,
        "--allow-downgrade",
        help="Allow a release older than the running one or than the highest ever committed.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Preflight, download, write and verify the new image into the passive slot -> staged."""
    from kubesolo_entrypoints import records, render, trust
    from kubesolo_entrypoints.progress import LogProgress, ProgressBar

    run = run_of(ctx)
    agent = run.agent()
    # Preflight reads the node's labels after the release is fetched: an adapter
    # that can (kubectl) starts that query now, so the two round trips overlap.
    prefetch = getattr(agent.kube, "prefetch_node", None)
    if callable(prefetch):
        prefetch()
    view = trust.announce(run.settings())
    state = run.settings().state
    bar = ProgressBar() if sys.stderr.isatty() else None
    progress = bar if bar is not None else LogProgress(agent.events)
    try:
        result = agent.apply(force=force, allow_downgrade=allow_downgrade, progress=progress)
    except Exception as exc:
        trust.refused(state, agent.clock.now(), exc, view, json_out=json_out)
        raise
    finally:
        if bar is not None:
            bar.close()
    records.note_check(
        state,
        agent.clock.now(),
        current=result.state.from_version,
        available=result.state.to_version,
        update_available=result.changed,
        unsigned=view["unsigned"],
    )
    if result.stats is not None:
        records.note_apply(state, agent.clock.now(), result)
    if json_out:
        tell(render.dumps({"ok": True, "refusals": [], "trust": view, **render.apply_doc(result)}))
        return
    tell(result.message)
    if result.stats is not None:
        tell("  " + render.stats_text(result.stats))


@app.command()
@handled
@locked("activate")
def activate(
    ctx: typer.Context,
    reboot: bool = typer.Option(
        False,
        "--reboot",
        help="Reboot into the trial now (the tryboot way: 'reboot \"0 tryboot\"').",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """staged -> activated: the bootloader will trial the new slot at the next boot."""
    agent = run_of(ctx).agent()
    result = agent.activate()
    message = result.message(rebooting=reboot)
    tell(_state_json(message, result.state, rebooting=reboot) if json_out else message)
    if reboot:
        agent.boot_env.request_reboot()


@app.command()
@handled
@locked("rollback")
def rollback(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Switch back to the previous slot now (manual); reboot to run it."""
    state = run_of(ctx).agent().rollback()
    slot = state.from_slot.value if state.from_slot else "?"
    message = f"rolled back: slot {slot} ({state.from_version}) is committed; reboot to run it"
    tell(_state_json(message, state) if json_out else message)


def _state_json(message: str, state: Any, **extra: Any) -> str:
    from kubesolo_core.codec import to_jsonable, unstructure_state
    from kubesolo_entrypoints import render

    doc = {"ok": True, "message": message, "state": to_jsonable(unstructure_state(state))}
    return render.dumps({**doc, **extra})


@app.command()
@handled
@locked("healthcheck")
@key_options("healthcheck")
def healthcheck(
    ctx: typer.Context,
    options: dict[str, str | None],
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Reconcile with the bootloader, check the node, then commit, count a failure or roll back."""
    from kubesolo_entrypoints import records, render
    from kubesolo_entrypoints.progress import SettleDisplay

    run = run_of(ctx)
    agent = run.agent(**options)
    # The settle wait can last settle_timeout (300 s): say what it waits for,
    # live on a terminal; off a terminal each round is a log line (health.waiting).
    display = SettleDisplay(agent.events) if sys.stderr.isatty() else None
    if display is not None:
        agent.events = display
    try:
        outcome = agent.healthcheck()
    finally:
        if display is not None:
            display.close()
    records.note_health(run.settings().state, agent.clock.now(), outcome)
    tell(render.dumps(render.health_doc(outcome)) if json_out else render.health_text(outcome))
    if not outcome.healthy:
        # An outcome, not an error: the exit code tells init to act on it.
        say(f"kubesolo-update: error: health check failed: {outcome.report.summary()}")
        raise typer.Exit(int(ExitCode.UNHEALTHY))


@app.command()
@handled
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Both slots (device, version, active, booted), the boot env, the full update state."""
    from kubesolo_entrypoints import render, trust

    run = run_of(ctx)
    report = run.agent().status()
    settings = run.settings()
    view = trust.trust_view(settings)
    if json_out:
        tell(render.dumps({**render.status_doc(report), "trust": view}))
        return
    where = settings.grubenv if report.boot.kind == "grub" else settings.autoboot
    tell(render.status_text(report, where=str(where)))
    tell(f"Trust:       {view['note']}")


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

    settings = run_of(ctx).settings()
    host, port = parse_listen(listen)
    server = serve(settings, host, port)
    say(f"serving metrics on http://{server.address}/metrics (Ctrl-C to stop)")
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
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON document of the outcome (the story goes to stderr)."
    ),
) -> None:
    """The whole lifecycle in a throw-away sandbox: no root, no network, seconds.

    A good release (1.1.0) is applied, trialled and committed; a bad one (1.2.0)
    is trialled until GRUB rolls back. Exit 1 if either ends otherwise.
    """
    from kubesolo_core.errors import OperationFailed
    from kubesolo_entrypoints import render
    from kubesolo_entrypoints.demo import run_demo

    result = run_demo(keep=keep, aside=json_out)
    if json_out:
        tell(render.dumps(result.to_json()))
    if not result.as_expected:
        raise json_reported(
            OperationFailed(
                f"the demo ended otherwise than it should: first update {result.first_phase} "
                f"on {result.first_booted} (want success on B), second {result.second_phase} "
                f"on {result.second_booted} (want rolled_back on B)",
                way_out="report it: the demo runs the same code as a box",
            )
        )


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
    tell(render.dumps(report.to_json()) if json_out else report.text())
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
def config_show(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object of key: value."),
) -> None:
    """Print the effective configuration as update.conf text."""
    from kubesolo_entrypoints.config import conf_text, conf_values

    settings = run_of(ctx).settings()
    if json_out:
        from kubesolo_entrypoints import render

        tell(render.dumps(conf_values(settings)))
        return
    tell(conf_text(settings).rstrip("\n"))


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
        tell(text.rstrip("\n"))
        return
    from kubesolo_adapters.atomic import atomic_write

    atomic_write(Path(output), text.encode())
    say(f"wrote {output}")


def command() -> Any:
    """The click command of the app, with text options that skip pydantic."""
    from kubesolo_entrypoints.typerlite import plain_command

    return plain_command(app)


def main() -> None:
    """The console script."""
    # A run is one short process: what the imports built (typer, click, attrs,
    # this module's tables) lives until exit anyway. Frozen, it is no longer
    # walked by every full collection nor by the last one at exit, which cost
    # `status --json` a tenth of its start (bench/cli_startup.py). What the
    # command allocates is collected as usual.
    gc.freeze()
    command()(prog_name="kubesolo-update")
