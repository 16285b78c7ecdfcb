"""``kubesolo-release``: make and keep a signed (TUF) release repository of KubeSolo OS images.

What a fleet operator runs (the workspace holds keys; only DIR/repository is served)::

    kubesolo-release --dir /srv/ksolo init                 # keys + root/targets/snapshot/timestamp
    cp /srv/ksolo/repository/metadata/1.root.json  <OS image>/etc/kubesolo/root.json
    kubesolo-release --dir /srv/ksolo add kubesolo-os.img --version 1.3.0 --channel stable \\
        --compress zstd --min-from 1.0.0        # + chunk index and store (--no-chunks: not)
    kubesolo-release --dir /srv/ksolo verify               # as a box would
    rsync -a /srv/ksolo/repository/ web:/var/www/updates/  # any static server, S3, CDN
    kubesolo-release --dir /srv/ksolo timestamp            # cron, at least daily

Exit codes: 0 ok; 1 failed (a signer unavailable, verification failed, the
repository refuses: another image for a published version, a channel going
back without --allow-downgrade); 2 usage (bad option, version, name or image
file; not a workspace).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="kubesolo-release",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help=(
        "Publish KubeSolo OS releases as a signed TUF repository: a directory of static "
        "files for any web server, object store or CDN. Keys are files by default "
        "(DIR/keys), or any securesystemslib signer URI (HSM, cloud KMS)."
    ),
    epilog="Exit codes: 0 ok; 1 failed; 2 usage or configuration error.",
)


def _say(text: str) -> None:
    typer.echo(text, err=True)


def handled(fn: F) -> F:
    """One line and exit code 2 (usage) or 1 (failed) for every error of ours."""
    from kubesolo_core.errors import KubesoloError
    from kubesolo_entrypoints.publisher.workspace import PublishError, PublishUsage

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PublishError as exc:
            _say(f"kubesolo-release: error: {exc}")
            raise typer.Exit(2 if isinstance(exc, PublishUsage) else 1) from None
        except KubesoloError as exc:
            _say(f"kubesolo-release: error: {exc}")
            raise typer.Exit(1) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _say(f"kubesolo-release: error: {exc.strerror or exc}{where}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _repo(ctx: typer.Context) -> Any:
    from kubesolo_entrypoints.publisher.repo import Repository

    return Repository(Path(ctx.obj["dir"]).absolute())


def _pairs(option: str, values: list[str], kind: Callable[[str], Any]) -> dict[str, Any]:
    from kubesolo_entrypoints.publisher.repo import ROLES
    from kubesolo_entrypoints.publisher.workspace import PublishUsage

    out: dict[str, Any] = {}
    for text in values:
        role, sep, raw = text.partition("=")
        if not sep or role not in ROLES:
            raise PublishUsage(
                f"{option} {text!r}: expected ROLE=VALUE with ROLE one of {', '.join(ROLES)}",
                way_out=f"e.g. {option} root=2",
            )
        try:
            value = kind(raw)
        except ValueError:
            raise PublishUsage(f"{option} {text!r}: {raw!r} is not a valid value") from None
        if isinstance(value, int | float) and value <= 0:
            raise PublishUsage(f"{option} {text!r}: must be > 0")
        out[role] = value
    return out


def _signer_specs(signers: list[str], public_keys: list[str]) -> dict[str, list[Any]]:
    from kubesolo_entrypoints.publisher.repo import SignerSpec, public_key_from_pem
    from kubesolo_entrypoints.publisher.workspace import PublishUsage

    uris: dict[str, list[str]] = {}
    for text in signers:
        role, sep, uri = text.partition("=")
        if not sep or ":" not in uri:
            raise PublishUsage(
                f"--signer {text!r}: expected ROLE=URI", way_out="e.g. --signer targets=hsm:"
            )
        uris.setdefault(role, []).append(uri)
    pems: dict[str, list[str]] = {}
    for text in public_keys:
        role, sep, path = text.partition("=")
        if not sep:
            raise PublishUsage(f"--public-key {text!r}: expected ROLE=PEM-FILE")
        pems.setdefault(role, []).append(path)
    out: dict[str, list[Any]] = {}
    for role, role_uris in uris.items():
        role_pems = pems.get(role, [])
        if len(role_pems) != len(role_uris):
            raise PublishUsage(
                f"--signer {role}=...: {len(role_uris)} signer(s) but {len(role_pems)} "
                "--public-key for that role",
                way_out=f"give one --public-key {role}=PEM per --signer {role}=URI, in order",
            )
        out[role] = [
            SignerSpec(uri=uri, public_key=public_key_from_pem(Path(pem)))
            for uri, pem in zip(role_uris, role_pems, strict=True)
        ]
    return out


@app.callback()
def main_options(
    ctx: typer.Context,
    directory: str = typer.Option(
        ".",
        "--dir",
        envvar="KUBESOLO_RELEASE_DIR",
        metavar="DIR",
        help="The workspace: publisher.json, keys/, repository/ (serve only repository/).",
    ),
) -> None:
    """Publish KubeSolo OS releases as a signed TUF repository."""
    ctx.obj = {"dir": directory}


@app.command()
@handled
def init(  # noqa: PLR0917  (typer maps parameters to options)
    ctx: typer.Context,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold", metavar="ROLE=N", help="Signatures a role needs (default 1 each)."
        ),
    ] = None,
    keys: Annotated[
        list[str] | None,
        typer.Option(
            "--keys", metavar="ROLE=N", help="File keys to make for a role (default: threshold)."
        ),
    ] = None,
    expires: Annotated[
        list[str] | None,
        typer.Option(
            "--expires",
            metavar="ROLE=DAYS",
            help="Expiry periods (default root=365 targets=90 snapshot=7 timestamp=1).",
        ),
    ] = None,
    signer: Annotated[
        list[str] | None,
        typer.Option(
            "--signer", metavar="ROLE=URI", help="An external signer (hsm:, gcpkms:, file2:...)."
        ),
    ] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key", metavar="ROLE=PEM", help="The public key of each --signer, in order."
        ),
    ] = None,
) -> None:
    """Create keys and a repository with root, targets, snapshot and timestamp."""
    repo = _repo(ctx)
    repo.init(
        thresholds=_pairs("--threshold", threshold or [], int),
        key_counts=_pairs("--keys", keys or [], int),
        expires=_pairs("--expires", expires or [], float),
        signers=_signer_specs(signer or [], public_key or []),
    )
    root = repo.metadata_dir / "1.root.json"
    _say(f"initialised {repo.root_dir}; serve {repo.served}")
    _say(f"ship {root} in the OS image as the agent's trust_root (/etc/kubesolo/root.json)")
    typer.echo(str(root))


@app.command()
@handled
def add(  # noqa: PLR0917
    ctx: typer.Context,
    image: str = typer.Argument(..., metavar="IMAGE", help="The raw slot image (a filesystem)."),
    version: str = typer.Option(..., "--version", metavar="V", help="Its release version."),
    channel: str = typer.Option("stable", "--channel", metavar="NAME"),
    compress: str = typer.Option("none", "--compress", metavar="none|gzip|zstd"),
    min_from: str | None = typer.Option(
        None, "--min-from", metavar="V", help="Oldest version that may update to this one."
    ),
    chunk_size: int = typer.Option(
        4 << 20, "--chunk-size", metavar="BYTES", help="Verified piece size for the agent."
    ),
    chunks: bool = typer.Option(
        True,
        "--chunks/--no-chunks",
        help="Also publish a chunk index and add new chunks to the shared chunk store "
        "(adaptive updates: boxes fetch only what they lack).",
    ),
    allow_downgrade: bool = typer.Option(
        False,
        "--allow-downgrade",
        help="Let the channel go back to a lower version than it offers now (on purpose only: "
        "boxes still older than the current one would take it).",
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the signed channel document (one JSON document)."
    ),
) -> None:
    """Publish IMAGE as VERSION on CHANNEL: sizes, hashes, compression, targets, re-signed."""
    doc = _repo(ctx).add(
        Path(image),
        version=version,
        channel=channel,
        compress=compress,
        min_from=min_from,
        chunk_size=chunk_size,
        chunks=chunks,
        allow_downgrade=allow_downgrade,
    )
    if json_out:
        from kubesolo_core.channel import channel_document

        typer.echo(json.dumps(channel_document(doc), indent=2, sort_keys=True))
        return
    index = f", chunk index {doc.image.chunks.index}" if doc.image.chunks else ""
    typer.echo(
        f"{doc.channel}: {doc.version} ({doc.image.target}, {doc.image.raw_size} bytes{index})"
    )


@app.command()
@handled
def timestamp(
    ctx: typer.Context,
    days: float | None = typer.Option(None, "--expires", metavar="DAYS"),
) -> None:
    """Refresh timestamp (and snapshot when due): what a cron runs, at least daily."""
    warnings = _repo(ctx).timestamp(days=days)
    for warning in warnings:
        _say(f"warning: {warning}")
    typer.echo("timestamp re-signed")


@app.command()
@handled
def resign(ctx: typer.Context, role: str = typer.Argument(..., metavar="ROLE")) -> None:
    """Re-sign ROLE with a fresh expiry (targets, snapshot; root via rotate)."""
    _repo(ctx).resign(role)
    typer.echo(f"{role} re-signed")


@app.command()
@handled
def rotate(  # noqa: PLR0917
    ctx: typer.Context,
    role: str = typer.Argument(..., metavar="ROLE"),
    keys: int | None = typer.Option(None, "--keys", metavar="N", help="New file keys to make."),
    threshold: int | None = typer.Option(None, "--threshold", metavar="N"),
    signer: Annotated[list[str] | None, typer.Option("--signer", metavar="URI")] = None,
    public_key: Annotated[list[str] | None, typer.Option("--public-key", metavar="PEM")] = None,
) -> None:
    """Replace ROLE's keys; a new root version (signed by old and new root keys) names them."""
    specs = _signer_specs(
        [f"{role}={s}" for s in signer or []], [f"{role}={p}" for p in public_key or []]
    )
    version = _repo(ctx).rotate(
        role, key_count=keys, threshold=threshold, signers=specs.get(role, [])
    )
    typer.echo(f"{role} keys rotated: root v{version}")


@app.command()
@handled
def verify(
    ctx: typer.Context,
    trust_root: str | None = typer.Option(
        None, "--trust-root", metavar="PATH", help="The root.json boxes ship [1.root.json]."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Check the repository as a box would (the agent's own TUF client, over file://)."""
    from kubesolo_entrypoints.publisher.verify import verify_repository

    repo = _repo(ctx)
    channels = sorted(repo.status()["channels"])
    root = Path(trust_root) if trust_root else repo.metadata_dir / "1.root.json"
    results = verify_repository(repo.served, root, channels)
    if json_out:
        typer.echo(json.dumps(results, indent=2, sort_keys=True))
    else:
        for name, result in results.items():
            if result["ok"]:
                typer.echo(f"ok    {name}: {result['version']} ({result['bytes']} bytes verified)")
            else:
                typer.echo(f"FAIL  {name}: {result['reason']}: {result['error']}")
        if not results:
            typer.echo("no channels published yet")
    if not all(r["ok"] for r in results.values()):
        raise typer.Exit(1)


@app.command()
@handled
def status(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Roles (version, expiry, threshold, keys) and channels (version, image)."""
    doc = _repo(ctx).status()
    if json_out:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    typer.echo(f"Workspace: {doc['workspace']}  (serve {doc['serve']})")
    for role, info in doc["roles"].items():
        flag = "  EXPIRED" if info["expired"] else ""
        typer.echo(
            f"  {role:<9} v{info['version']:<4} expires {info['expires']}  "
            f"{info['threshold']} of {len(info['keys'])} keys{flag}"
        )
    for name, info in doc["channels"].items():
        if "error" in info:
            typer.echo(f"  channel {name}: {info['error']}")
        else:
            typer.echo(f"  channel {name}: {info['version']} ({info['image']})")


def main() -> None:
    """The console script."""
    app(prog_name="kubesolo-release")
