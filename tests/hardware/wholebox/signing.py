"""Signed releases of the test box: TUF repositories made by ``kubesolo-release``'s own code.

Every box trusts one root: the ``1.root.json`` of a test key set that is
generated once (``Repository.init``, fresh Ed25519 keys, the publisher's
default thresholds and expiry periods) into
``~/.cache/kubesolo-update/wholebox/tuf-test-keys/`` and reused, so that the
slot images, which carry that root at ``/etc/kubesolo/root.json``, stay
cached across runs. **The key material there is test-only**: unencrypted
private keys in a cache folder, which sign nothing but these test boxes'
releases and which no real box trusts. A new key set is made (and with it
every slot image, whose cache key holds the root's hash) when the root is
within :data:`ROOT_MARGIN` of its expiry.

A box's release disk serves the ``repository/`` of a workspace copied from
that key set in which the box's releases were published in order on the
``stable`` channel (``Repository.add``: zstd, channel document with chunk
hashes, targets, snapshot and timestamp re-signed). Such a workspace is
cached per sequence of images and made again when its timestamp (one day)
comes within :data:`FRESH_MARGIN` of expiring. A second release on the same
box is the same workspace with one more ``add``, so the versions of its
metadata rise, as a box's metadata cache demands.

:func:`attack` derives from a published workspace what a compromised mirror
would serve: the image target with a flipped byte, or a timestamp re-signed
by the real key with an expiry in the past.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubesolo_entrypoints.publisher.repo import Repository
from kubesolo_entrypoints.publisher.sandbox import signed_repository
from kubesolo_entrypoints.publisher.workspace import now_utc
from tests.hardware.guest import cache_dir

__all__ = [
    "ATTACKS",
    "CHANNEL",
    "GUEST_TRUST_ROOT",
    "attack",
    "channel_document",
    "key_set",
    "published",
    "root_digest",
    "trust_root",
]

CHANNEL = "stable"
#: where the slot images carry the trust root (update.conf's trust_root=)
GUEST_TRUST_ROOT = "/etc/kubesolo/root.json"
#: a key set whose root expires sooner than this is replaced
ROOT_MARGIN = dt.timedelta(days=30)
#: a cached repository whose metadata expires sooner than this is published again
FRESH_MARGIN = dt.timedelta(hours=12)
#: what a compromised mirror may serve instead of the genuine repository
ATTACKS = ("tampered-image", "expired-timestamp")
#: a byte of the served (compressed) image inside its first chunk: the agent
#: holds each chunk until its hash matches, so not one byte may reach the slot
TAMPER_OFFSET = 1 << 20

#: cached repositories not used for this long are removed
STALE_SECONDS = 3 * 24 * 3600

_LOCK = threading.Lock()


def _folder() -> Path:
    folder = cache_dir() / "wholebox"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_DIGESTS: dict[Path, str] = {}


def _sha256(path: Path) -> str:
    """The SHA-256 of a cached slot image (which never changes once made), once a session."""
    if path not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[path] = digest.hexdigest()
    return _DIGESTS[path]


def _expires_soon(workspace: Path, roles: Sequence[str], margin: dt.timedelta) -> bool:
    repo = Repository(workspace)
    try:
        return any(repo.load(role).signed.expires - now_utc() < margin for role in roles)
    except Exception:  # a half-written or foreign folder: make it again
        return True


def _install(staged: Path, done: Path) -> None:
    """Move the finished ``staged`` folder to ``done``; another process may have won the race."""
    stale = done.with_name(done.name + f".stale-{staged.name}")
    with contextlib.suppress(FileNotFoundError):
        done.rename(stale)
    try:
        staged.rename(done)
    except OSError:  # someone else installed theirs in between: use it
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)


def key_set() -> Path:
    """The workspace of the test key set (keys, publisher.json, v1 metadata): made once."""
    folder = _folder()
    done = folder / "tuf-test-keys"
    with _LOCK:
        if (done / "publisher.json").is_file() and not _expires_soon(done, ("root",), ROOT_MARGIN):
            return done
        staged = Path(tempfile.mkdtemp(prefix="tuf-test-keys-", dir=folder))
        signed_repository(staged / "ws")
        (staged / "ws" / "TEST-KEYS-ONLY").write_text(
            "Test-only TUF keys of the whole-box tests (tests/hardware/wholebox/signing.py).\n"
            "They sign nothing but test releases; no real box trusts them.\n"
        )
        _install(staged / "ws", done)
        shutil.rmtree(staged, ignore_errors=True)
        return done


def trust_root() -> Path:
    """The root every test box ships: the test key set's ``1.root.json``."""
    return Repository(key_set()).metadata_dir / "1.root.json"


def root_digest() -> str:
    """The SHA-256 of :func:`trust_root` (part of each slot image's cache key)."""
    return hashlib.sha256(trust_root().read_bytes()).hexdigest()


def published(images: Sequence[tuple[str, Path]]) -> Repository:
    """The test key set's workspace with ``images`` ((version, raw image) in order) published.

    Cached per sequence; made again when its metadata is about to expire.
    Serve ``.served`` (its ``repository/`` folder); never write into it.
    """
    keys = key_set()
    key_doc = {"root": root_digest(), "images": [(v, _sha256(p)) for v, p in images]}
    key = hashlib.sha256(json.dumps(key_doc).encode()).hexdigest()[:16]
    folder = _folder() / "repos"
    folder.mkdir(exist_ok=True)
    done = folder / key
    with _LOCK:
        cutoff = time.time() - STALE_SECONDS
        for old in folder.iterdir():
            with contextlib.suppress(OSError):
                if old.name != key and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old)
        fresh = (done / "published.json").is_file() and not _expires_soon(
            done, ("timestamp", "snapshot", "targets"), FRESH_MARGIN
        )
        if not fresh:
            staged = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=folder))
            work = staged / "ws"
            shutil.copytree(keys, work, symlinks=True)
            repo = Repository(work)
            for version, image in images:
                repo.add(image, version=version, channel=CHANNEL, compress="zstd")
            (work / "published.json").write_text(json.dumps(key_doc, indent=1) + "\n")
            _install(work, done)
            shutil.rmtree(staged, ignore_errors=True)
        done.touch()  # in use: not stale (slots are pruned by rootfs._prune)
    return Repository(done)


def _served(repo: Repository, target: str) -> Path:
    """The served file of ``target`` (consistent snapshot: named by its SHA-256)."""
    info = repo.load("targets").signed.targets[target]
    folder, _, name = target.rpartition("/")
    digest = str(info.hashes["sha256"])
    return repo.targets_dir / folder / f"{digest}.{name}"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0xFF
    path.write_bytes(bytes(data))


def attack(repo: Repository, how: str, into: Path) -> Path:
    """What a compromised mirror of ``repo`` serves (``how`` one of :data:`ATTACKS`).

    Returns the folder to serve (``into``, made fresh): the genuine
    repository with either its image target's byte at :data:`TAMPER_OFFSET`
    flipped (and a byte of its chunk index: see below), or a timestamp
    re-signed by the real timestamp key with an expiry already past.
    """
    if how not in ATTACKS:
        raise ValueError(f"attack {how!r}: choose from {ATTACKS}")
    shutil.rmtree(into, ignore_errors=True)
    work = into.with_name(into.name + ".ws")
    shutil.rmtree(work, ignore_errors=True)
    # A copy, not hard links: the cached repository must not see the tampering.
    shutil.copytree(repo.root_dir, work, symlinks=True)
    mirror = Repository(work)
    if how == "tampered-image":
        image = channel_document(mirror)["image"]
        _flip(_served(mirror, str(image["target"])), TAMPER_OFFSET)
        # With a chunk index the agent would build the slot from genuine chunks and
        # never read the image: the mirror tampers the index too, so the agent falls
        # back to the full image (its reason logged) and must refuse that.
        chunks = image.get("chunks")
        if chunks is not None:
            _flip(_served(mirror, str(chunks["index"])), 100)
    else:
        # Two days ago, the timestamp role's key signed a timestamp valid for one day.
        past = now_utc() - dt.timedelta(days=2)
        Repository(work, now=lambda: past).timestamp()
    mirror.served.rename(into)
    shutil.rmtree(work)
    return into


def channel_document(repo: Repository) -> dict[str, Any]:
    """The signed channel document ``repo`` serves now (what the agent reads first)."""
    info = repo.load("targets").signed.targets[f"channels/{CHANNEL}.json"]
    stored = repo.targets_dir / "channels" / f"{info.hashes['sha256']}.{CHANNEL}.json"
    return dict(json.loads(stored.read_bytes()))
