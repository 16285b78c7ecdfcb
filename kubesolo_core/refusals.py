"""Why an update is held back: one machine reason and one human sentence per refusal.

``check --json``, ``apply --json`` and the metric ``kubesolo_update_refusal{reason}``
all read this table, so an operator's dashboard, a script and a person see
the same reason. A reason is a short stable string (label values of a metric
never change meaning); the sentence says what it means for the box.
"""

from __future__ import annotations

import attrs

from kubesolo_core.errors import OperationFailed

#: reason -> the sentence an operator reads beside it
REASONS: dict[str, str] = {
    # TUF: the metadata
    "expired_metadata": (
        "the repository's signed metadata has expired, so the box cannot tell a current "
        "release from a frozen or replayed one"
    ),
    "bad_signature": (
        "the metadata is not signed by the keys this box trusts (wrong key or tampered file)"
    ),
    "threshold_not_met": ("the metadata carries fewer valid signatures than its role requires"),
    "metadata_rollback": (
        "the repository served metadata older than what this box already trusts, or older "
        "than the snapshot names (rollback or mix-and-match)"
    ),
    "hash_mismatch": ("a file's SHA-256 differs from the one its signed metadata names"),
    "length_mismatch": (
        "a file is longer or shorter than its signed metadata says (endless data or truncation)"
    ),
    "slow_retrieval": ("the server sent data slower than the minimum speed for a whole window"),
    "unsafe_target_path": ("a signed document names a target path outside the repository"),
    "unknown_target": (
        "the channel document or the image it names is not a target of the signed metadata"
    ),
    "invalid_release": (
        "the signed channel document is not a valid release document for this channel"
    ),
    "untrusted_repository": (
        "the repository's metadata could not be verified against the trusted root"
    ),
    # preflight
    "downgrade": (
        "the release is older than the highest version this box ever committed "
        "(or than the one it runs)"
    ),
    "min_from_version": ("the release cannot be installed from the version this box runs"),
    "blocked_node": "the Kubernetes node carries the label that blocks updates",
    "no_space": "the passive slot is missing or too small for the image",
}


def sentence(reason: str) -> str:
    """The human sentence of ``reason`` (the reason itself when unknown)."""
    return REASONS.get(reason, reason)


@attrs.frozen(kw_only=True)
class Refusal:
    """One reason an update is held back, with the sentence and what was seen."""

    reason: str
    message: str
    detail: str = ""

    @classmethod
    def of(cls, reason: str, detail: str = "") -> Refusal:
        """A refusal whose message is the table's sentence for ``reason``."""
        return cls(reason=reason, message=sentence(reason), detail=detail)


class TrustRefused(OperationFailed):
    """TUF (or the agent's own checks of signed data) refused a release.

    Nothing was written to the passive slot that the signed metadata did not
    vouch for, and the slot is not staged.
    """

    def __init__(self, reason: str, detail: str, *, way_out: str = "") -> None:
        self.refusal = Refusal.of(reason, detail)
        super().__init__(
            f"untrusted release refused ({reason}): {detail}",
            way_out=way_out or "fix the repository (kubesolo-release verify shows what is wrong)",
        )
