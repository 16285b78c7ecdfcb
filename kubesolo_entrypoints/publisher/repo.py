"""The publisher's repository: static TUF files, built with python-tuf's Metadata API.

:class:`Repository` is what ``kubesolo-release`` does to a workspace
(:mod:`~kubesolo_entrypoints.publisher.workspace` describes its files):
``init`` (keys and v1 of every role), ``add`` (an image and its channel
document as targets, then targets, snapshot and timestamp re-signed),
``timestamp`` (what a cron runs), ``resign``, ``rotate`` (a new root version
signed by the old and the new keys) and ``status``.

Nothing here prints; errors are :class:`PublishError` with one sentence.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

from kubesolo_core.channel import (
    CHUNK_STORE,
    DEFAULT_CHUNK,
    ChannelChunks,
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
from kubesolo_entrypoints.publisher.images import IMAGE_SUFFIX, chunk_index, prepare, raw_sha256
from kubesolo_entrypoints.publisher.workspace import (
    CONFIG,
    DEFAULT_EXPIRES,
    ROLES,
    SERIALIZER,
    PublishError,
    PublishUsage,
    SignerSpec,
    Workspace,
    public_key_from_pem,
)

__all__ = ["ROLES", "PublishError", "Repository", "SignerSpec", "public_key_from_pem"]


@attrs.define
class Repository(Workspace):
    """A publisher workspace and what kubesolo-release does to it."""

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
            raise PublishUsage(
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
            entries = self._add_keys(root, role, role, count, external)
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
        dest = self._stored(path, info)
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
        chunks: bool = True,
        allow_downgrade: bool = False,
    ) -> ChannelDoc:
        """Publish ``image`` as ``version`` on ``channel``: image and channel targets, re-signed.

        With ``chunks`` the image's new chunks join the chunk store
        (``targets/chunks/``) and its chunk index becomes a target the
        channel document names: boxes then fetch only what they lack.

        A version names one raw image forever, whatever its compression; a
        channel does not go back to a lower version unless ``allow_downgrade``.
        Both are checked before anything is stored or signed.
        """
        try:
            channel_name(channel)
        except KubesoloError as exc:
            raise PublishUsage(exc.message, way_out=exc.way_out) from None
        parsed: dict[str, Version] = {}
        for option, text in (("--version", version), ("--min-from", min_from)):
            if text is not None:
                try:
                    parsed[option] = Version.parse(text)
                except KubesoloError as exc:
                    raise PublishUsage(
                        f"{option}: {exc.message}", way_out=f"e.g. {option} 1.3.0"
                    ) from None
        if "--min-from" in parsed and parsed["--version"] < parsed["--min-from"]:
            raise PublishUsage(
                f"--min-from {min_from} is above the release's own version {version}: "
                "no box could take it",
                way_out="--min-from names the oldest version that may update to this one",
            )
        if compress not in IMAGE_SUFFIX:
            raise PublishUsage(
                f"--compress {compress!r} is not one of none, gzip, zstd", way_out="--compress zstd"
            )
        if chunk_size < 4096:
            raise PublishUsage("--chunk-size must be at least 4096 bytes")
        if not image.is_file():
            raise PublishUsage(f"image {image} is not a regular file")
        self.config()
        target_path = f"images/kubesolo-os-{version}{IMAGE_SUFFIX[compress]}"
        targets = self.load("targets")
        self._refuse_channel_downgrade(
            targets.signed, channel, parsed["--version"], allow_downgrade
        )
        with tempfile.TemporaryDirectory(dir=self.root_dir) as tmp:
            served, raw_size, raw_sha, pieces = prepare(image, Path(tmp), compress, chunk_size)
            self._refuse_another_image(targets.signed, version, raw_sha)
            info = self._store_target(served, target_path)
            index = None
            if chunks:
                index = ChannelChunks(index=f"images/kubesolo-os-{version}.chunks")
                index_file = chunk_index(
                    image,
                    Path(tmp),
                    self.targets_dir / CHUNK_STORE,
                    raw_size=raw_size,
                    raw_sha256=raw_sha,
                )
                targets.signed.targets[index.index] = self._store_target(index_file, index.index)
            doc = ChannelDoc(
                channel=channel,
                version=version,
                image=ChannelImage(
                    target=target_path,
                    compression=compress,
                    raw_size=raw_size,
                    raw_sha256=raw_sha,
                    chunk_size=chunk_size,
                    chunk_sha256=tuple(pieces),
                    chunks=index,
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

    def _stored(self, path: str, info: TargetFile) -> Path:
        """Where target ``path`` lives in the repository (consistent snapshot: by its hash)."""
        dirname, _, basename = path.rpartition("/")
        return self.targets_dir / dirname / f"{info.hashes['sha256']}.{basename}"

    def _channel_version(self, targets: Targets, channel: str) -> Version | None:
        info = targets.targets.get(channel_target(channel))
        if info is None:
            return None
        try:
            doc = parse_channel(
                self._stored(channel_target(channel), info).read_bytes(), channel=channel
            )
        except (OSError, KubesoloError) as exc:
            raise PublishError(
                f"channel {channel}: its published document cannot be read ({exc})",
                way_out="run `kubesolo-release verify`",
            ) from None
        return doc.version

    def _refuse_channel_downgrade(
        self, targets: Targets, channel: str, version: Version, allow: bool
    ) -> None:
        current = self._channel_version(targets, channel)
        if current is not None and version < current and not allow:
            raise PublishError(
                f"channel {channel} offers {current}; {version} is lower (boxes that took "
                f"{current} refuse it, boxes still older would take it)",
                way_out="check the version; to move the channel back on purpose, "
                "add --allow-downgrade",
            )

    def _refuse_another_image(self, targets: Targets, version: str, raw_sha: str) -> None:
        """A version names one raw image: refuse ``raw_sha`` if another is published as it."""
        for compression, suffix in IMAGE_SUFFIX.items():
            path = f"images/kubesolo-os-{version}{suffix}"
            info = targets.targets.get(path)
            if info is None:
                continue
            try:
                published = raw_sha256(self._stored(path, info), compression)
            except (OSError, KubesoloError) as exc:
                raise PublishError(
                    f"{version} is published as {path}, which cannot be read ({exc})",
                    way_out="run `kubesolo-release verify`",
                ) from None
            if published != raw_sha:
                raise PublishError(
                    f"{version} is already published with another image ({path})",
                    way_out="publish a new version number: a version names one image forever",
                )

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
            raise PublishUsage(f"unknown role {role!r}", way_out="one of " + ", ".join(ROLES))
        if role == "root":
            self.rotate("root", keep_keys=True)
            return
        self._resign_and_cascade(role)

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
            raise PublishUsage(f"unknown role {role!r}", way_out="one of " + ", ".join(ROLES))
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
            fresh = self._add_keys(root, role, f"{role}-v{root.version + 1}", count, external)
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
        data = root_md.to_bytes(SERIALIZER)
        self._write("root", root_md, data)
        if retired:
            self._retire(retired)
        if role != "root":
            # metadata of the role must now carry the new keys' signatures
            self._resign_and_cascade(role)
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
            try:
                doc = parse_channel(self._stored(path, info).read_bytes(), channel=name)
            except (OSError, KubesoloError) as exc:
                channels[name] = {"error": str(exc)}
                continue
            channels[name] = {
                "version": str(doc.version),
                "image": doc.image.target,
                "compression": doc.image.compression,
                "raw_size": doc.image.raw_size,
                "chunk_index": doc.image.chunks.index if doc.image.chunks else None,
                "min_from_version": None
                if doc.min_from_version is None
                else str(doc.min_from_version),
            }
        return {
            "workspace": str(self.root_dir),
            "serve": str(self.served),
            "consistent_snapshot": bool(root.consistent_snapshot),
            "roles": roles,
            "channels": channels,
        }
