"""The publisher's side: ``kubesolo-release`` makes a signed TUF repository from images."""

from kubesolo_entrypoints.publisher.repo import PublishError, Repository, SignerSpec

__all__ = ["PublishError", "Repository", "SignerSpec"]
