"""The signed side of :mod:`kubesolo_adapters.sandbox`: a repository with fresh keys.

One place for the demo, the bench and the test worlds to make a TUF
repository the way an operator does (``kubesolo-release init``) and to
publish an image's bytes on a channel (``kubesolo-release add``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kubesolo_entrypoints.publisher.repo import Repository

__all__ = ["publish_signed", "signed_repository"]


def signed_repository(workspace: Path) -> Repository:
    """A kubesolo-release workspace with fresh Ed25519 keys.

    Serve ``repo.served``; ``repo.metadata_dir / "1.root.json"`` is the trust root.
    """
    repo = Repository(workspace)
    repo.init()
    return repo


def publish_signed(
    repo: Repository,
    version: str,
    raw: bytes,
    *,
    channel: str = "stable",
    compress: str = "gzip",
    chunks: bool = True,
) -> None:
    """Publish ``raw`` as ``version`` on ``channel`` of the signed repository ``repo``.

    ``chunks`` as ``kubesolo-release add --chunks`` (the default): a chunk index
    and the shared chunk store, for adaptive updates.
    """
    with tempfile.TemporaryDirectory(dir=repo.root_dir) as tmp:
        image = Path(tmp) / f"kubesolo-os-{version}.img"
        image.write_bytes(raw)
        repo.add(image, version=version, channel=channel, compress=compress, chunks=chunks)
