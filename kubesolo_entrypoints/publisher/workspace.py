"""A publisher workspace: its files, its signers, and signed metadata in and out.

A workspace (``kubesolo-release --dir DIR``) holds::

    DIR/publisher.json        roles: threshold, signer URIs and key ids; expiry periods
    DIR/keys/                 private keys of the file signers (0600), keys/retired/ after rotation
    DIR/repository/           what a web server, CDN or object store serves:
        metadata/1.root.json ... N.root.json, root.json, timestamp.json,
                 N.snapshot.json, snapshot.json, N.targets.json, targets.json
        targets/channels/<sha256>.<channel>.json, targets/images/<sha256>.<image>

The repository uses consistent snapshots (files named by version or hash),
so a CDN may cache everything but ``timestamp.json`` forever, and a client
never sees half an update. Signing goes through securesystemslib signers
named by URI: ``file2:keys/...`` by default (relative to DIR), or any signer
securesystemslib knows (``hsm:``, ``gcpkms:``, ``awskms:``, ``azurekms:``...)
so keys can stay off the build machine. Every metadata file is verified
against its delegator before it is written (never publish what a client
would refuse). The operations on a workspace are
:class:`kubesolo_entrypoints.publisher.repo.Repository`'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Root
from tuf.api.serialization.json import JSONSerializer

from kubesolo_adapters.atomic import atomic_write
from kubesolo_core.errors import KubesoloError

__all__ = [
    "CONFIG",
    "DEFAULT_EXPIRES",
    "ROLES",
    "SERIALIZER",
    "PublishError",
    "SignerSpec",
    "Workspace",
    "now_utc",
    "public_key_from_pem",
]

ROLES = ("root", "targets", "snapshot", "timestamp")
#: default expiry periods in days: root long (its keys live offline), timestamp short (cron)
DEFAULT_EXPIRES = {"root": 365.0, "targets": 90.0, "snapshot": 7.0, "timestamp": 1.0}
CONFIG = "publisher.json"
SERIALIZER = JSONSerializer(compact=False)


class PublishError(KubesoloError):
    """The publisher could not do what was asked (bad input, missing key, unverifiable result)."""


class PublishUsage(PublishError):
    """What was asked is wrong in itself (a bad version, name, option or file): exit 2."""


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@attrs.frozen(kw_only=True)
class SignerSpec:
    """A signer by URI with its public key (for --signer ROLE=URI)."""

    uri: str
    public_key: Key


def public_key_from_pem(path: Path) -> Key:
    """The TUF key of a PEM public key file (Ed25519, ECDSA or RSA)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return SSlibKey.from_crypto(load_pem_public_key(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise PublishError(
            f"public key {path}: {exc}", way_out="give a PEM public key (openssl pkey -pubout)"
        ) from None


@attrs.define
class Workspace:
    """A publisher workspace on disk; ``now`` is injectable so tests can make expired metadata."""

    root_dir: Path
    now: Callable[[], dt.datetime] = now_utc

    # ----------------------------------------------------------------- paths

    @property
    def config_path(self) -> Path:
        return self.root_dir / CONFIG

    @property
    def served(self) -> Path:
        """The directory to serve (nginx root, S3 bucket, CDN origin)."""
        return self.root_dir / "repository"

    @property
    def metadata_dir(self) -> Path:
        return self.served / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.served / "targets"

    @property
    def keys_dir(self) -> Path:
        return self.root_dir / "keys"

    # ----------------------------------------------------------------- config

    def config(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise PublishUsage(
                f"{self.root_dir} is not a kubesolo-release workspace (no {CONFIG})",
                way_out="run `kubesolo-release --dir DIR init` first, or point --dir at one",
            ) from None
        except (OSError, ValueError) as exc:
            raise PublishError(f"{self.config_path}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict):
            raise PublishError(f"{self.config_path}: not a publisher configuration")
        return doc

    def _save_config(self, doc: Mapping[str, Any]) -> None:
        atomic_write(self.config_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    def _expires(self, role: str, days: float | None = None) -> dt.datetime:
        if days is None:
            days = float(self.config().get("expires", {}).get(role, DEFAULT_EXPIRES[role]))
        return self.now() + dt.timedelta(days=days)

    # ----------------------------------------------------------------- keys

    def _new_file_key(self, role: str, index: int) -> tuple[str, Key]:
        signer = CryptoSigner.generate_ed25519()
        key = signer.public_key
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{role}-{index}-{key.keyid[:8]}.pem"
        atomic_write(self.keys_dir / name, signer.private_bytes, mode=0o600)
        return f"file2:keys/{name}", key

    def _add_keys(
        self, root: Root, role: str, name: str, count: int, external: list[SignerSpec]
    ) -> list[dict[str, str]]:
        """Add ``count`` new file keys (named after ``name``) and ``external``'s to ``role``.

        Returns their entries for publisher.json.
        """
        entries = []
        for index in range(1, count + 1):
            uri, key = self._new_file_key(name, index)
            root.add_key(key, role)
            entries.append({"keyid": key.keyid, "uri": uri})
        for spec in external:
            root.add_key(spec.public_key, role)
            entries.append({"keyid": spec.public_key.keyid, "uri": spec.uri})
        return entries

    def _resolve_uri(self, uri: str) -> str:
        scheme, _, rest = uri.partition(":")
        if scheme == "file2" and not rest.startswith("/"):
            return f"file2:{self.root_dir / rest}"
        return uri

    def _signers(self, role: str, root: Root) -> list[Signer]:
        """The signers of ``role`` named in publisher.json, with keys from ``root``."""
        entries = self.config()["roles"][role]["keys"]
        signers = []
        for entry in entries:
            keyid = entry["keyid"]
            try:
                key = root.get_key(keyid)
            except ValueError:
                continue  # a key the current root no longer lists
            try:
                signers.append(Signer.from_priv_key_uri(self._resolve_uri(entry["uri"]), key))
            except Exception as exc:  # signers raise what their backend raises
                raise PublishError(
                    f"the {role} signer {entry['uri']} (key {keyid[:8]}) is not available: {exc}",
                    way_out="check the key file or the KMS/HSM the URI names",
                ) from None
        return signers

    # ----------------------------------------------------------------- metadata I/O

    def _path(self, role: str, version: int | None = None) -> Path:
        return self.metadata_dir / (f"{version}.{role}.json" if version else f"{role}.json")

    def load(self, role: str) -> Metadata[Any]:
        """The current metadata of ``role``."""
        try:
            return Metadata.from_file(str(self._path(role)))
        except FileNotFoundError:
            raise PublishError(
                f"{self._path(role)} is missing", way_out="run `kubesolo-release init`"
            ) from None

    def _sign(
        self, role: str, md: Metadata[Any], signers: list[Signer], root: Root | None = None
    ) -> bytes:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)
        data = md.to_bytes(SERIALIZER)
        trusted = root or self.load("root").signed
        if role == "root":
            result: Any = md.signed.get_root_verification_result(
                root if root is not None and root.version < md.signed.version else None,
                md.signed_bytes,
                md.signatures,
            )
        else:
            result = trusted.get_verification_result(role, md.signed_bytes, md.signatures)
        if not result:
            raise PublishError(
                f"{role} v{md.signed.version} would not verify: not enough valid signatures "
                "for its threshold",
                way_out=f"make more {role} signers available (publisher.json)",
            )
        return data

    def _write(self, role: str, md: Metadata[Any], data: bytes) -> None:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        if role != "timestamp":
            # consistent snapshot: clients fetch N.role.json (root: always versioned)
            atomic_write(self._path(role, md.signed.version), data)
        atomic_write(self._path(role), data)

    def _meta(self, md: Metadata[Any], data: bytes) -> MetaFile:
        return MetaFile(
            version=md.signed.version,
            length=len(data),
            hashes={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def _resign(self, role: str, md: Metadata[Any], *, bump: bool = True) -> bytes:
        root = self.load("root").signed
        if bump:
            md.signed.version += 1
        md.signed.expires = self._expires(role)
        data = self._sign(role, md, self._signers(role, root), root)
        self._write(role, md, data)
        return data

    def _resign_and_cascade(self, role: str) -> None:
        """Re-sign ``role`` (not root) with a fresh expiry, then what names it."""
        md = self.load(role)
        data = self._resign(role, md)
        if role == "targets":
            self._cascade(data)
        elif role == "snapshot":
            timestamp = self.load("timestamp")
            timestamp.signed.snapshot_meta = self._meta(md, data)
            self._resign("timestamp", timestamp)

    def _cascade(self, targets_data: bytes | None = None) -> None:
        """Re-sign snapshot (naming the current targets) and timestamp (naming the snapshot)."""
        targets = self.load("targets")
        if targets_data is None:
            targets_data = self._path("targets").read_bytes()
        snapshot = self.load("snapshot")
        snapshot.signed.meta["targets.json"] = self._meta(targets, targets_data)
        snapshot_data = self._resign("snapshot", snapshot)
        timestamp = self.load("timestamp")
        timestamp.signed.snapshot_meta = self._meta(snapshot, snapshot_data)
        self._resign("timestamp", timestamp)
