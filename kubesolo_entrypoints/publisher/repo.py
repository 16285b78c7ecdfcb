"""The publisher's repository: static TUF files, built with python-tuf's Metadata API.

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
would refuse).

Nothing here prints; errors are :class:`PublishError` with one sentence.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from kubesolo_adapters.atomic import atomic_write
from kubesolo_core.channel import (
    DEFAULT_CHUNK,
    ChannelDoc,
    ChannelImage,
    channel_document,
    channel_name,
    channel_target,
    parse_channel,
    safe_target_path,
)
from kubesolo_core.errors import KubesoloError
from kubesolo_core.versions import Version

ROLES = ("root", "targets", "snapshot", "timestamp")
#: default expiry periods in days: root long (its keys live offline), timestamp short (cron)
DEFAULT_EXPIRES = {"root": 365.0, "targets": 90.0, "snapshot": 7.0, "timestamp": 1.0}
CONFIG = "publisher.json"
_SERIALIZER = JSONSerializer(compact=False)
_IMAGE_SUFFIX = {"none": ".img", "gzip": ".img.gz", "zstd": ".img.zst"}


class PublishError(KubesoloError):
    """The publisher could not do what was asked (bad input, missing key, unverifiable result)."""


def _now() -> dt.datetime:
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@attrs.define
class Repository:
    """A publisher workspace; ``now`` is injectable so tests can make expired metadata."""

    root_dir: Path
    now: Callable[[], dt.datetime] = _now

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
            raise PublishError(
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
        data = md.to_bytes(_SERIALIZER)
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

    # ----------------------------------------------------------------- init

    def init(
        self,
        *,
        thresholds: Mapping[str, int] | None = None,
        key_counts: Mapping[str, int] | None = None,
        expires: Mapping[str, float] | None = None,
        signers: Mapping[str, list[SignerSpec]] | None = None,
    ) -> None:
        """Create keys and a repository with root, targets, snapshot and timestamp (v1)."""
        if self.config_path.exists():
            raise PublishError(
                f"{self.root_dir} is already a workspace ({CONFIG} exists)",
                way_out="use another --dir, or `rotate` to change keys",
            )
        thresholds = dict(thresholds or {})
        key_counts = dict(key_counts or {})
        signers = dict(signers or {})
        roles_cfg: dict[str, Any] = {}
        root = Root(expires=self._expires("root", (expires or {}).get("root", 365.0)))
        for role in ROLES:
            threshold = thresholds.get(role, 1)
            external = signers.get(role, [])
            count = key_counts.get(role, 0 if external else max(threshold, 1))
            if threshold < 1 or count + len(external) < threshold:
                raise PublishError(
                    f"{role}: threshold {threshold} needs at least {threshold} keys, "
                    f"got {count + len(external)}",
                    way_out=f"--keys {role}={threshold} or fewer --threshold",
                )
            entries = []
            for index in range(1, count + 1):
                uri, key = self._new_file_key(role, index)
                root.add_key(key, role)
                entries.append({"keyid": key.keyid, "uri": uri})
            for spec in external:
                root.add_key(spec.public_key, role)
                entries.append({"keyid": spec.public_key.keyid, "uri": spec.uri})
            root.roles[role].threshold = threshold
            roles_cfg[role] = {"keys": entries}
        periods = {**DEFAULT_EXPIRES, **(expires or {})}
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self._save_config({"roles": roles_cfg, "expires": periods, "schema": 1})
        root_md = Metadata(root)
        data = self._sign("root", root_md, self._signers("root", root), root)
        self._write("root", root_md, data)
        targets = Metadata(Targets(expires=self._expires("targets")))
        targets_data = self._sign("targets", targets, self._signers("targets", root), root)
        self._write("targets", targets, targets_data)
        snapshot = Metadata(
            Snapshot(
                expires=self._expires("snapshot"),
                meta={"targets.json": self._meta(targets, targets_data)},
            )
        )
        snapshot_data = self._sign("snapshot", snapshot, self._signers("snapshot", root), root)
        self._write("snapshot", snapshot, snapshot_data)
        timestamp = Metadata(
            Timestamp(
                expires=self._expires("timestamp"),
                snapshot_meta=self._meta(snapshot, snapshot_data),
            )
        )
        ts_data = self._sign("timestamp", timestamp, self._signers("timestamp", root), root)
        self._write("timestamp", timestamp, ts_data)
        self.targets_dir.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- add

    def _store_target(self, source: Path, path: str) -> TargetFile:
        """Copy (or move) ``source`` in as target ``path``, named by its hash."""
        safe_target_path(path)
        info = TargetFile.from_file(path, str(source), ["sha256"])
        dirname, _, basename = path.rpartition("/")
        dest = self.targets_dir / dirname / f"{info.hashes['sha256']}.{basename}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(dest)
        return info

    def add(
        self,
        image: Path,
        *,
        version: str,
        channel: str = "stable",
        compress: str = "none",
        min_from: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> ChannelDoc:
        """Publish ``image`` as ``version`` on ``channel``: image and channel targets, re-signed."""
        channel_name(channel)
        for text in (version, min_from):
            if text is not None:
                try:
                    Version.parse(text)
                except KubesoloError as exc:
                    raise PublishError(exc.message, way_out="e.g. --version 1.3.0") from None
        if compress not in _IMAGE_SUFFIX:
            raise PublishError(
                f"--compress {compress!r} is not one of none, gzip, zstd", way_out="--compress zstd"
            )
        if chunk_size < 4096:
            raise PublishError("--chunk-size must be at least 4096 bytes")
        if not image.is_file():
            raise PublishError(f"image {image} is not a file")
        self.config()
        target_path = f"images/kubesolo-os-{version}{_IMAGE_SUFFIX[compress]}"
        targets = self.load("targets")
        existing = targets.signed.targets.get(target_path)
        with tempfile.TemporaryDirectory(dir=self.root_dir) as tmp:
            served, raw_size, raw_sha, chunks = _prepare(image, Path(tmp), compress, chunk_size)
            info = self._store_target(served, target_path)
            if existing is not None and existing.hashes != info.hashes:
                raise PublishError(
                    f"{version} is already published with another image ({target_path})",
                    way_out="publish a new version number: a version names one image forever",
                )
            doc = ChannelDoc(
                channel=channel,
                version=version,
                image=ChannelImage(
                    target=target_path,
                    compression=compress,
                    raw_size=raw_size,
                    raw_sha256=raw_sha,
                    chunk_size=chunk_size,
                    chunk_sha256=tuple(chunks),
                ),
                min_from_version=min_from,
            )
            doc_file = Path(tmp) / f"{channel}.json"
            doc_file.write_text(json.dumps(channel_document(doc), indent=2) + "\n")
            doc_info = self._store_target(doc_file, channel_target(channel))
        targets.signed.targets[target_path] = info
        targets.signed.targets[doc_info.path] = doc_info
        data = self._resign("targets", targets)
        self._cascade(data)
        return doc

    # ----------------------------------------------------------------- timestamp

    def timestamp(self, *, days: float | None = None) -> list[str]:
        """Re-sign timestamp (and snapshot when it would expire first); what a cron runs.

        Returns warnings about roles that expire soon and need their (offline) keys.
        """
        snapshot = self.load("snapshot")
        new_expiry = self._expires("timestamp", days)
        if snapshot.signed.expires <= new_expiry + dt.timedelta(days=1):
            self._cascade()
        else:
            timestamp = self.load("timestamp")
            timestamp.signed.version += 1
            timestamp.signed.expires = new_expiry
            root = self.load("root").signed
            data = self._sign("timestamp", timestamp, self._signers("timestamp", root), root)
            self._write("timestamp", timestamp, data)
        warnings = []
        for role in ("root", "targets"):
            left = self.load(role).signed.expires - self.now()
            if left < dt.timedelta(days=30):
                warnings.append(
                    f"{role} expires in {max(left.days, 0)} days: run "
                    f"`kubesolo-release {'rotate root' if role == 'root' else 'resign targets'}`"
                )
        return warnings

    def resign(self, role: str) -> None:
        """Re-sign ``role`` with a fresh expiry (and what depends on it)."""
        if role not in ROLES:
            raise PublishError(f"unknown role {role!r}", way_out="one of " + ", ".join(ROLES))
        if role == "root":
            self.rotate("root", keep_keys=True)
            return
        md = self.load(role)
        data = self._resign(role, md)
        if role == "targets":
            self._cascade(data)
        elif role == "snapshot":
            timestamp = self.load("timestamp")
            timestamp.signed.snapshot_meta = self._meta(md, data)
            self._resign("timestamp", timestamp)

    # ----------------------------------------------------------------- rotate

    def rotate(
        self,
        role: str,
        *,
        key_count: int | None = None,
        threshold: int | None = None,
        signers: list[SignerSpec] | None = None,
        keep_keys: bool = False,
    ) -> int:
        """Replace ``role``'s keys (or only re-sign root); a new root version names them.

        The new root is signed by the old root's keys (its threshold) and by
        the new ones, so clients follow the chain. Returns the new root version.
        """
        if role not in ROLES:
            raise PublishError(f"unknown role {role!r}", way_out="one of " + ", ".join(ROLES))
        cfg = self.config()
        old_root_md = self.load("root")
        old_root = old_root_md.signed
        old_signers = self._signers("root", old_root)
        root_md = self.load("root")
        root = root_md.signed
        retired: list[dict[str, str]] = []
        if not keep_keys:
            entries = cfg["roles"][role]["keys"]
            new_threshold = threshold or root.roles[role].threshold
            external = signers or []
            count = key_count if key_count is not None else (0 if external else new_threshold)
            if count + len(external) < new_threshold:
                raise PublishError(
                    f"{role}: threshold {new_threshold} needs {new_threshold} keys, "
                    f"got {count + len(external)}"
                )
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            fresh = []
            for index in range(1, count + 1):
                uri, key = self._new_file_key(f"{role}-v{root.version + 1}", index)
                root.add_key(key, role)
                fresh.append({"keyid": key.keyid, "uri": uri})
            for spec in external:
                root.add_key(spec.public_key, role)
                fresh.append({"keyid": spec.public_key.keyid, "uri": spec.uri})
            root.roles[role].threshold = new_threshold
            retired = entries
            cfg["roles"][role]["keys"] = fresh
        root.version += 1
        root.expires = self._expires("root")
        # publisher.json first: the new root must be signed by the new keys too
        self._save_config(cfg)
        new_signers = self._signers("root", root)
        seen = {s.public_key.keyid for s in new_signers}
        both = new_signers + [s for s in old_signers if s.public_key.keyid not in seen]
        root_md.signatures.clear()
        for signer in both:
            root_md.sign(signer, append=True)
        result = root.get_root_verification_result(
            old_root, root_md.signed_bytes, root_md.signatures
        )
        if not result:
            raise PublishError(
                f"root v{root.version} is not signed by enough old and new root keys",
                way_out="make the current root keys available (publisher.json)",
            )
        data = root_md.to_bytes(_SERIALIZER)
        self._write("root", root_md, data)
        if retired:
            self._retire(retired)
        if role != "root":
            # metadata of the role must now carry the new keys' signatures
            md = self.load(role)
            data2 = self._resign(role, md)
            if role == "targets":
                self._cascade(data2)
            elif role == "snapshot":
                timestamp = self.load("timestamp")
                timestamp.signed.snapshot_meta = self._meta(md, data2)
                self._resign("timestamp", timestamp)
        return int(root.version)

    def _retire(self, entries: list[dict[str, str]]) -> None:
        retired_dir = self.keys_dir / "retired"
        for entry in entries:
            uri = entry["uri"]
            if uri.startswith("file2:keys/"):
                src = self.root_dir / uri[len("file2:") :]
                if src.exists():
                    retired_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    src.replace(retired_dir / src.name)

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """Roles (version, expiry, threshold, keys) and channels (version, image)."""
        cfg = self.config()
        root = self.load("root").signed
        now = self.now()
        roles = {}
        for role in ROLES:
            md = self.load(role).signed
            roles[role] = {
                "version": md.version,
                "expires": md.expires.isoformat(),
                "expired": md.expires <= now,
                "threshold": root.roles[role].threshold,
                "keys": [
                    {"keyid": e["keyid"], "uri": e["uri"]} for e in cfg["roles"][role]["keys"]
                ],
            }
        channels = {}
        targets = self.load("targets").signed
        for path, info in sorted(targets.targets.items()):
            if not path.startswith("channels/"):
                continue
            name = path[len("channels/") : -len(".json")]
            stored = self.targets_dir / "channels" / f"{info.hashes['sha256']}.{name}.json"
            try:
                doc = parse_channel(stored.read_bytes(), channel=name)
            except (OSError, KubesoloError) as exc:
                channels[name] = {"error": str(exc)}
                continue
            channels[name] = {
                "version": doc.version,
                "image": doc.image.target,
                "compression": doc.image.compression,
                "raw_size": doc.image.raw_size,
                "min_from_version": doc.min_from_version,
            }
        return {
            "workspace": str(self.root_dir),
            "serve": str(self.served),
            "consistent_snapshot": bool(root.consistent_snapshot),
            "roles": roles,
            "channels": channels,
        }


# --------------------------------------------------------------------------- images


def _reader(image: Path) -> BinaryIO:
    return image.open("rb")


def _blocks(fh: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    return iter(lambda: fh.read(size), b"")


def _prepare(
    image: Path, tmp: Path, compress: str, chunk_size: int
) -> tuple[Path, int, str, list[str]]:
    """Compress ``image`` as asked; return (served file, raw size, raw sha256, chunk hashes)."""
    raw_digest = hashlib.sha256()
    raw_size = 0
    if compress == "none":
        served = image
        with _reader(image) as fh:
            for block in _blocks(fh):
                raw_digest.update(block)
                raw_size += len(block)
    else:
        served = tmp / "image.out"
        with _reader(image) as fh, served.open("wb") as out:
            if compress == "gzip":
                sink: Any = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
            else:
                import zstandard

                sink = zstandard.ZstdCompressor(level=10, threads=-1).stream_writer(out)
            with sink:
                for block in _blocks(fh):
                    raw_digest.update(block)
                    raw_size += len(block)
                    sink.write(block)
    if raw_size == 0:
        raise PublishError(f"image {image} is empty")
    chunks = []
    with _reader(served) as fh:
        for block in _blocks(fh, chunk_size):
            chunks.append(hashlib.sha256(block).hexdigest())
    return served, raw_size, raw_digest.hexdigest(), chunks
