"""``kubesolo-release`` through typer's CliRunner: real keys, real files, python-tuf metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata
from typer.testing import CliRunner

from kubesolo_entrypoints.publisher.cli import app

runner = CliRunner()


def release(*args: str) -> object:
    return runner.invoke(app, list(args))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "kubesolo-os.img"
    path.write_bytes(os.urandom(300_000) + b"\0" * 700_000)
    return path


def test_init_add_verify_status(tmp_path: Path, image: Path) -> None:
    ws = str(tmp_path / "ws")
    r = release("--dir", ws, "init", "--threshold", "targets=2", "--keys", "targets=3")
    assert r.exit_code == 0, r.output
    root_path = Path(r.stdout.strip())
    assert root_path.name == "1.root.json" and root_path.exists()
    for key in (tmp_path / "ws" / "keys").iterdir():
        assert key.stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    r = release("--dir", ws, "add", str(image), "--version", "1.3.0", "--compress", "zstd",
                "--min-from", "1.0.0", "--chunk-size", "65536")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "stable: 1.3.0" in r.stdout
    r = release("--dir", ws, "verify", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["stable"]["ok"] is True and doc["stable"]["version"] == "1.3.0"
    status = json.loads(release("--dir", ws, "status", "--json").stdout)
    assert status["roles"]["targets"]["threshold"] == 2
    assert len(status["roles"]["targets"]["keys"]) == 3
    assert status["channels"]["stable"]["min_from_version"] == "1.0.0"
    assert status["consistent_snapshot"] is True
    targets = Metadata.from_file(str(tmp_path / "ws" / "repository" / "metadata" / "targets.json"))
    assert len(targets.signatures) == 3  # every available key signs


def test_verify_fails_on_a_tampered_repository(tmp_path: Path, image: Path) -> None:
    ws = tmp_path / "ws"
    assert release("--dir", str(ws), "init").exit_code == 0
    assert release("--dir", str(ws), "add", str(image), "--version", "1.0.0").exit_code == 0
    (stored,) = (ws / "repository" / "targets" / "images").glob("*.kubesolo-os-1.0.0.img")
    data = bytearray(stored.read_bytes())
    data[100] ^= 1
    stored.write_bytes(bytes(data))
    r = release("--dir", str(ws), "verify")
    assert r.exit_code == 1
    assert "FAIL  stable: hash_mismatch" in r.stdout


def test_timestamp_rotate_and_resign_keep_the_chain_verifiable(tmp_path: Path, image: Path) -> None:
    ws = tmp_path / "ws"
    assert release("--dir", str(ws), "init").exit_code == 0
    shipped = tmp_path / "shipped-root.json"
    shipped.write_bytes((ws / "repository" / "metadata" / "1.root.json").read_bytes())
    assert release("--dir", str(ws), "add", str(image), "--version", "1.0.0").exit_code == 0
    r = release("--dir", str(ws), "rotate", "root")
    assert r.exit_code == 0 and "root v2" in r.stdout, r.output
    r = release("--dir", str(ws), "rotate", "targets", "--keys", "2", "--threshold", "2")
    assert r.exit_code == 0 and "root v3" in r.stdout, r.output
    assert release("--dir", str(ws), "timestamp").exit_code == 0
    assert release("--dir", str(ws), "resign", "snapshot").exit_code == 0
    assert any((ws / "keys" / "retired").iterdir())
    r = release("--dir", str(ws), "verify", "--trust-root", str(shipped))
    assert r.exit_code == 0, r.output
    timestamp = Metadata.from_file(str(ws / "repository" / "metadata" / "timestamp.json"))
    assert timestamp.signed.version >= 5


def test_a_signer_by_uri_keeps_the_key_out_of_the_workspace(tmp_path: Path, image: Path) -> None:
    # file2: is one of securesystemslib's URI schemes, like hsm:, gcpkms: or awskms:
    secure = tmp_path / "secure"
    secure.mkdir(mode=0o700)
    signer = CryptoSigner.generate_ed25519()
    (secure / "targets.pem").write_bytes(signer.private_bytes)
    public = signer._private_key.public_key().public_bytes(  # type: ignore[attr-defined]
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    (secure / "targets.pub").write_bytes(public)
    ws = tmp_path / "ws"
    r = release("--dir", str(ws), "init", "--signer", f"targets=file2:{secure / 'targets.pem'}",
                "--public-key", f"targets={secure / 'targets.pub'}")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not any("targets" in k.name for k in (ws / "keys").iterdir())
    assert release("--dir", str(ws), "add", str(image), "--version", "2.0.0").exit_code == 0
    assert release("--dir", str(ws), "verify").exit_code == 0
    # without the secure key, publishing fails in one line
    (secure / "targets.pem").unlink()
    r = release("--dir", str(ws), "add", str(image), "--version", "2.0.1")
    assert r.exit_code == 1 and "targets signer" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status"], "not a kubesolo-release workspace"),
        (["init", "--threshold", "nobody=2"], "--threshold"),
        (["init", "--threshold", "root=x"], "--threshold"),
        (["init", "--signer", "targets=file2:/x"], "--public-key"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    r = release("--dir", str(tmp_path / "none"), *args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_add_refuses_bad_versions_and_a_second_image_for_one_version(
    tmp_path: Path, image: Path
) -> None:
    ws = str(tmp_path / "ws")
    assert release("--dir", ws, "init").exit_code == 0
    r = release("--dir", ws, "add", str(image), "--version", "one")
    assert r.exit_code == 2 and "--version" in r.stderr
    assert release("--dir", ws, "add", str(image), "--version", "1.0.0").exit_code == 0
    other = tmp_path / "other.img"
    other.write_bytes(b"x" * 5000)
    r = release("--dir", ws, "add", str(other), "--version", "1.0.0")
    assert r.exit_code == 1 and "already published" in r.stderr


def test_the_console_script_runs() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kubesolo_entrypoints.publisher.cli import main; main()",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and "init" in r.stdout and "rotate" in r.stdout


def _stored_images(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "repository" / "targets" / "images").iterdir())


@pytest.mark.parametrize(
    ("first", "second"), [("none", "zstd"), ("zstd", "gzip"), ("gzip", "none")]
)
def test_a_version_names_one_image_whatever_its_compression(
    tmp_path: Path, image: Path, first: str, second: str
) -> None:
    ws = tmp_path / "ws"
    assert release("--dir", str(ws), "init").exit_code == 0
    r = release("--dir", str(ws), "add", str(image), "--version", "1.0.0", "--compress", first)
    assert r.exit_code == 0, r.output
    before = _stored_images(ws)
    other = tmp_path / "other.img"
    other.write_bytes(image.read_bytes()[::-1])
    r = release("--dir", str(ws), "add", str(other), "--version", "1.0.0", "--compress", second)
    assert r.exit_code == 1, r.output
    assert "already published with another image" in r.stderr
    assert _stored_images(ws) == before, "a refused image was stored in the repository"
    # the same raw image in another compression is the same release
    r = release("--dir", str(ws), "add", str(image), "--version", "1.0.0", "--compress", second)
    assert r.exit_code == 0, r.output
    assert release("--dir", str(ws), "verify").exit_code == 0


def test_a_channel_goes_back_only_on_purpose(tmp_path: Path, image: Path) -> None:
    ws = str(tmp_path / "ws")
    assert release("--dir", ws, "init").exit_code == 0
    assert release("--dir", ws, "add", str(image), "--version", "1.10.0").exit_code == 0
    # 1.9.0 after 1.10.0: a typo (1.1O / 1.9) or a deliberate move back
    r = release("--dir", ws, "add", str(image), "--version", "1.9.0")
    assert r.exit_code == 1, r.output
    assert "stable offers 1.10.0" in r.stderr and "--allow-downgrade" in r.stderr
    status = json.loads(release("--dir", ws, "status", "--json").stdout)
    assert status["channels"]["stable"]["version"] == "1.10.0"
    # another channel has its own history
    r = release("--dir", ws, "add", str(image), "--version", "1.9.0", "--channel", "beta")
    assert r.exit_code == 0, r.output
    r = release("--dir", ws, "add", str(image), "--version", "1.9.0", "--allow-downgrade", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # the signed channel document
    assert (doc["channel"], doc["version"]) == ("stable", "1.9.0")
    assert doc["image"]["raw_size"] == image.stat().st_size
    status = json.loads(release("--dir", ws, "status", "--json").stdout)
    assert status["channels"]["stable"]["version"] == "1.9.0"


def test_min_from_above_the_version_is_a_usage_error(tmp_path: Path, image: Path) -> None:
    ws = str(tmp_path / "ws")
    assert release("--dir", ws, "init").exit_code == 0
    r = release("--dir", ws, "add", str(image), "--version", "1.0.0", "--min-from", "2.0.0")
    assert r.exit_code == 2, r.output
    assert "--min-from 2.0.0" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = release("--dir", ws, "add", str(tmp_path / "missing.img"), "--version", "1.0.0")
    assert r.exit_code == 2 and "missing.img" in r.stderr, r.output
