"""python-tuf's side of :mod:`kubesolo_adapters.tuf`: ngclient over our HTTP stack.

Kept apart because importing ngclient costs about half a second (securesystemslib,
cryptography): :class:`~kubesolo_adapters.tuf.TufFetcher` imports this module
when it fetches, so building the fetcher (every command does) stays cheap and
``status`` never pays for it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from kubesolo_adapters.http import FetchStatusError, FetchTooLong, HttpFetcher
from kubesolo_adapters.tuf import CHANNEL_LIMIT, classify_fetch_error
from kubesolo_core.errors import ConfigError, FetchError
from kubesolo_core.refusals import TrustRefused

__all__ = ["NgFetcher", "consistent_snapshot", "new_updater", "refusals"]

_SIGNED_BY = re.compile(r"signed by (\d+)/(\d+) keys")


class NgFetcher(FetcherInterface):
    """ngclient's fetcher interface over our HttpFetcher (metadata and small targets)."""

    def __init__(self, http: HttpFetcher) -> None:
        self.http = http

    def _fetch(self, url: str) -> Iterator[bytes]:
        return iter([self._get(url, CHANNEL_LIMIT)])

    def download_bytes(self, url: str, max_length: int) -> bytes:
        """One metadata file, never more than ``max_length`` bytes read."""
        return self._get(url, max_length)

    def _get(self, url: str, limit: int) -> bytes:
        try:
            return self.http.fetch_release(url, limit=limit)
        except FetchStatusError as exc:
            raise tuf_errors.DownloadHTTPError(str(exc), exc.status) from exc
        except FetchTooLong as exc:
            raise tuf_errors.DownloadLengthMismatchError(str(exc)) from exc
        except FetchError as exc:
            if classify_fetch_error(exc) == "slow_retrieval":
                raise tuf_errors.SlowRetrievalError(str(exc)) from exc
            raise tuf_errors.DownloadError(str(exc)) from exc


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """Turn python-tuf's exceptions into refusals with a machine reason."""
    try:
        yield
    except tuf_errors.ExpiredMetadataError as exc:
        raise TrustRefused("expired_metadata", f"{what}: {exc}") from None
    except tuf_errors.UnsignedMetadataError as exc:
        match = _SIGNED_BY.search(str(exc))
        reason = "threshold_not_met" if match and int(match.group(1)) > 0 else "bad_signature"
        raise TrustRefused(reason, f"{what}: {exc}") from None
    except tuf_errors.BadVersionNumberError as exc:
        raise TrustRefused("metadata_rollback", f"{what}: {exc}") from None
    except tuf_errors.LengthOrHashMismatchError as exc:
        reason = "length_mismatch" if "length" in str(exc) else "hash_mismatch"
        raise TrustRefused(reason, f"{what}: {exc}") from None
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise TrustRefused("length_mismatch", f"{what}: {exc}") from None
    except tuf_errors.SlowRetrievalError as exc:
        raise TrustRefused("slow_retrieval", f"{what}: {exc}") from None
    except tuf_errors.DownloadError as exc:
        cause = exc.__cause__
        if isinstance(cause, FetchError):
            raise cause from None
        raise FetchError(f"{what}: {exc}") from None
    except tuf_errors.RepositoryError as exc:
        raise TrustRefused("untrusted_repository", f"{what}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        # python-tuf raises these for structurally broken (but parseable) metadata
        raise TrustRefused("untrusted_repository", f"{what}: {exc}") from None


def new_updater(
    root: bytes, *, base: str, cache_dir: Path, http: HttpFetcher, source: Path
) -> Updater:
    """An ngclient Updater of the repository at ``base`` that trusts ``root`` (from ``source``)."""
    try:
        return Updater(
            metadata_dir=str(cache_dir),
            metadata_base_url=f"{base}metadata/",
            target_base_url=f"{base}targets/",
            target_dir=str(cache_dir),
            fetcher=NgFetcher(http),
            config=UpdaterConfig(app_user_agent="kubesolo-update"),
            bootstrap=root,
        )
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"trust_root {source} is not a valid, self-signed TUF root.json: {exc}",
            way_out="ship the repository's root.json (kubesolo-release init wrote 1.root.json)",
        ) from None


def consistent_snapshot(cache_dir: Path) -> bool:
    """Whether the root ngclient trusts now (the cache's root.json) hash-prefixes target paths."""
    root = Metadata[Root].from_file(str(cache_dir / "root.json")).signed
    return bool(root.consistent_snapshot)
