"""Publish a release's chunk index and chunk store (adaptive updates), for now as its own command.

    python -m kubesolo_entrypoints.chunkstore IMAGE OUTDIR [--release release.json]
                                              [--store DIR] [--level N] [--json]

Writes ``OUTDIR/<IMAGE name>.chunks`` (the index, format in
:mod:`kubesolo_core.chunks`) and every chunk not yet stored as
``STORE/<hex[:4]>/<hex>.zst`` (default ``OUTDIR/chunks``; keep one store for
all releases so they share chunks). With ``--release`` the release document
gets its ``image.chunks`` field (URLs relative to the document), after a
check that the document's ``raw_size``/``raw_sha256`` are this image's.
Prints the ``image.chunks`` object (``--json``: everything that was done).

This is for unsigned release documents. For a signed repository the same
step is part of ``kubesolo-release add`` (``--chunks``, the default), which
also makes the index a TUF target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from kubesolo_entrypoints.exitcodes import ExitCode

app = typer.Typer(add_completion=False)


def _die(message: str, code: ExitCode) -> typer.Exit:
    typer.echo(f"kubesolo-chunkstore: error: {message}", err=True)
    return typer.Exit(int(code))


@app.command()
def main(  # noqa: PLR0917  (typer maps parameters to options)
    image_arg: str = typer.Argument(..., metavar="IMAGE", help="The raw slot image."),
    outdir_arg: str = typer.Argument(
        ..., metavar="OUTDIR", help="Where the index goes (the release's folder)."
    ),
    release_opt: str | None = typer.Option(
        None, "--release", help="A release document to add image.chunks to."
    ),
    store_opt: str | None = typer.Option(
        None, "--store", help="The chunk store shared by releases (default OUTDIR/chunks)."
    ),
    level: int = typer.Option(10, "--level", min=1, max=22, help="zstd level of new chunks."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Chunk IMAGE into a content-addressed store and write its chunk index into OUTDIR."""
    from kubesolo_adapters.atomic import atomic_write
    from kubesolo_adapters.chunkstore import publish_chunks
    from kubesolo_adapters.http import RELEASE_LIMIT
    from kubesolo_adapters.inputs import read_input
    from kubesolo_core.errors import KubesoloError
    from kubesolo_core.release import parse_release

    image, outdir = Path(image_arg), Path(outdir_arg)
    release = Path(release_opt) if release_opt else None
    store = Path(store_opt) if store_opt else None
    if not image.is_file():
        raise _die(
            f"IMAGE {image}: no such file (pass the raw image, not a directory)", ExitCode.USAGE
        )
    doc = None
    if release is not None:
        try:
            doc = json.loads(read_input(release, limit=RELEASE_LIMIT).decode("utf-8"))
            spec = parse_release(doc).image
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise _die(f"--release {release}: {reason}", ExitCode.USAGE) from None
        except KubesoloError as exc:
            raise _die(f"--release {release}: {exc}", ExitCode.CORRUPT) from None
    if release is not None and image.stat().st_size != spec.raw_size:
        raise _die(
            f"--release {release}: image.raw_size is {spec.raw_size}, IMAGE has "
            f"{image.stat().st_size} bytes (another image); nothing was written",
            ExitCode.CORRUPT,
        )
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        done = publish_chunks(image, outdir, store=store, level=level)
    except KubesoloError as exc:
        raise _die(str(exc), ExitCode.FAILED) from None
    except OSError as exc:
        raise _die(f"{exc.filename or outdir}: {exc.strerror or exc}", ExitCode.FAILED) from None
    if doc is not None and release is not None:
        if (spec.raw_size, spec.raw_sha256) != (done.image_size, done.raw_sha256):
            raise _die(
                f"--release {release}: image.raw_size/raw_sha256 are "
                f"{spec.raw_size}/{spec.raw_sha256[:12]}..., IMAGE is "
                f"{done.image_size}/{done.raw_sha256[:12]}... (another image); not changed",
                ExitCode.CORRUPT,
            )
        doc["image"]["chunks"] = done.spec(release.resolve().parent)
        atomic_write(release, (json.dumps(doc, indent=2) + "\n").encode())
    chunks = done.spec(release.resolve().parent if release else outdir.resolve())
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "chunks": chunks,
                    "image_size": done.image_size,
                    "raw_sha256": done.raw_sha256,
                    "chunk_count": done.chunks,
                    "distinct_chunks": done.distinct,
                    "new_chunks": done.new_chunks,
                    "new_bytes": done.new_bytes,
                    "stored_bytes": done.stored_bytes,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        typer.echo(json.dumps(chunks))
        typer.echo(
            f"{done.chunks} chunks ({done.distinct} distinct), {done.new_chunks} new in the store "
            f"({done.new_bytes / 1048576:.1f} MiB); the image's chunks take "
            f"{done.stored_bytes / 1048576:.1f} MiB stored",
            err=True,
        )


if __name__ == "__main__":
    sys.exit(app())
