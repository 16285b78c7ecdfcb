"""The per-architecture artifacts: scripts/build_artifacts.py, offline, from the lock.

Built here from the wheelhouse that ``python scripts/build_artifacts.py``
filled (test-all.sh runs it before the tests; it is the only step that talks
to PyPI). The x86_64 artifact runs on a clean interpreter (a fresh venv with
nothing installed, run with ``-I``) from a scratch folder: status, the demo
(signed), a signed check against a TUF repository, and an apply of a zstd
image served on 127.0.0.1. The aarch64 artifact is
checked by its contents: every native module is an aarch64 ELF (``file``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from kubesolo_adapters import sandbox
from kubesolo_adapters.grubenvfile import PythonBackend
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.publisher.sandbox import signed_repository
from tests.tools import require, require_tool

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build_artifacts.py"
LOCKS = ROOT / "requirements"
#: what ``file`` says of an ELF shared object of each architecture
ELF = {"x86_64": "x86-64", "aarch64": "ARM aarch64"}

_spec = importlib.util.spec_from_file_location("build_artifacts", BUILD)
assert _spec is not None and _spec.loader is not None
build_artifacts = importlib.util.module_from_spec(_spec)
sys.modules["build_artifacts"] = build_artifacts  # dataclasses look their module up
_spec.loader.exec_module(build_artifacts)

Runner = Callable[..., subprocess.CompletedProcess[str]]


def wheelhouse() -> Path:
    house = build_artifacts.default_wheelhouse()
    require(
        all(any(house.glob(f"cp311-{arch}/*.whl")) for arch in build_artifacts.ARCHES),
        f"no wheelhouse at {house}: run `python scripts/build_artifacts.py` (fetches the wheels)",
    )
    return house


def build(out: Path, *arches: str, house: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(BUILD), "--offline", "-o", str(out)]
    argv += ["--wheelhouse", str(house or wheelhouse())]
    for arch in arches:
        argv += ["--arch", arch]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("artifacts")
    proc = build(out)
    assert proc.returncode == 0, proc.stderr
    return {arch: out / f"kubesolo-update-{arch}.pex" for arch in build_artifacts.ARCHES}


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with nothing installed: the interpreter of a box."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    for module in ("typer", "zstandard", "kubesolo_entrypoints"):
        probe = subprocess.run(
            [str(python), "-I", "-c", f"import {module}"],
            capture_output=True,
            cwd="/",
            timeout=60,
            check=False,
        )
        assert probe.returncode != 0, f"the clean interpreter imports {module}"
    return python


@pytest.fixture(scope="module")
def runner(
    artifacts: dict[str, Path], clean_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Runner:
    scratch = tmp_path_factory.mktemp("scratch")
    pex_root = tmp_path_factory.mktemp("pex-root")

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # -I: no site-packages, no PYTHON* variables, no user site, and the
        # scratch folder as cwd: only what is inside the artifact imports.
        return subprocess.run(
            [str(clean_python), "-I", str(artifacts["x86_64"]), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=scratch,
            env={
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                "HOME": str(scratch),
                "PEX_ROOT": str(pex_root),
                **(env or {}),
            },
        )

    return run


def test_help_and_version(runner: Runner) -> None:
    proc = runner("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes: 0 ok" in proc.stdout and "healthcheck" in proc.stdout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    proc = runner("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == version, proc.stderr


def test_status_json(runner: Runner, tmp_path: Path) -> None:
    box = sandbox.Sandbox(tmp_path)
    box.slot(Slot.A).write_bytes(b"\0" * 65536)
    box.slot(Slot.B).write_bytes(b"\0" * 65536)
    box.cmdline.write_text("kubesolo.slot=B\n")
    box.boot_id.write_text("z\n")
    proc = runner(
        *box.cli_args(tmp_path / "state.json"),
        "status", "--json",
        env={"KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["booted_slot"] == "B" and doc["state"]["phase"] == "idle"


def test_demo(runner: Runner) -> None:
    require_tool("mkfs.ext2", "debugfs")
    proc = runner("demo")
    assert proc.returncode == 0, proc.stderr
    assert "== first update: 1.1.0" in proc.stdout
    assert "rolled_back 1.1.0 -> 1.2.0" in proc.stdout


def test_apply_of_a_zstd_image(runner: Runner, tmp_path: Path) -> None:
    """zstandard's compiled module loads from the artifact: a zstd image is staged and verified."""
    require_tool("mkfs.ext2", "debugfs")
    box = sandbox.Sandbox(tmp_path)
    for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "0.9.0")):
        with box.slot(slot).open("wb") as f:
            f.truncate(4 << 20)
            f.write(sandbox.make_fs_image(tmp_path, version, size=2 << 20))
    PythonBackend(box.grubenv).set({"active_slot": "A", "boot_counter": "3", "boot_success": "1"})
    box.boot()
    www = tmp_path / "www"
    www.mkdir()
    raw = sandbox.make_fs_image(tmp_path, "1.1.0", size=2 << 20)
    sandbox.publish(www, "1.1.0", raw, compression="zstd")
    flags = box.cli_args(tmp_path / "state.json")
    # a plain release document: unsigned mode, asked for by name
    env = {"KUBESOLO_UPDATE_BOOT_ID": str(box.boot_id), "KUBESOLO_UPDATE_ALLOW_UNSIGNED": "true"}
    with sandbox.release_server(www) as base:
        proc = runner(*flags, "--server", f"{base}/release.json", "apply", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "1.1.0 staged on slot B (verified)" in proc.stdout
    assert box.slot(Slot.B).read_bytes()[: len(raw)] == raw
    proc = runner(*flags, "status", "--json", env=env)
    state = json.loads(proc.stdout)["state"]
    assert state["phase"] == "staged" and state["to_version"] == "1.1.0"


def test_signed_check_from_the_artifact(runner: Runner, tmp_path: Path) -> None:
    """python-tuf, securesystemslib and cryptography load from the artifact and verify."""
    repo = signed_repository(tmp_path / "publisher")
    raw = tmp_path / "os.img"
    raw.write_bytes(b"\x5a" * 200_000)
    repo.add(raw, version="1.4.0", compress="gzip")
    box = sandbox.Sandbox(tmp_path)
    for slot in Slot:
        box.slot(slot).write_bytes(b"\0" * 400_000)

    def check() -> subprocess.CompletedProcess[str]:
        return runner(
            *box.cli_args(tmp_path / "state" / "state.json"),
            "--server", repo.served.as_uri() + "/",
            "--trust-root", str(repo.metadata_dir / "1.root.json"),
            "check", "--json",
        )  # fmt: skip

    proc = check()
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["available_version"] == "1.4.0" and doc["trust"]["mode"] == "tuf"
    tampered = repo.metadata_dir / "timestamp.json"
    tampered.write_text(tampered.read_text().replace('"version": ', '"version": 1', 1))
    proc = check()
    assert proc.returncode == 6, proc.stderr
    assert json.loads(proc.stdout)["refusals"][0]["reason"] == "bad_signature"


def test_cloud_init(runner: Runner, tmp_path: Path) -> None:
    """PyYAML loads from the artifact: real #cloud-config (an anchor, a merge key) converts."""
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#cloud-config\nx: &s\n  server: https://u.example/r.json\nupdates:\n  <<: *s\n"
        "  auto_rollback_after: 2\n"
    )
    proc = runner("config", "from-cloud-init", str(userdata))
    assert proc.returncode == 0, proc.stderr
    assert "server=https://u.example/r.json" in proc.stdout
    assert "auto_rollback_after=2" in proc.stdout


def test_a_usage_error_is_one_line(runner: Runner) -> None:
    """From inside the archive a bad option is exit 2 and one line, not an ImportError."""
    proc = runner("--slot-a", "UUID=x", "status")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "--slot-a" in proc.stderr


def _pins(lock: Path, arch: str) -> dict[str, str]:
    env = build_artifacts.Target(arch).environment()
    return {p.name: p.version for p in build_artifacts.read_lock(lock) if p.applies(env)}


@pytest.mark.parametrize("arch", build_artifacts.ARCHES)
def test_contents_are_the_lock_built_for_the_arch(
    arch: str, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """Every pin of runtime.lock is inside, and every native module is an ELF of ``arch``.

    Judged by ``file``, not by file names: an abi3 module (cryptography's
    ``_rust.abi3.so``) names no architecture.
    """
    require_tool("file")
    with zipfile.ZipFile(artifacts[arch]) as zf:
        info = json.loads(zf.read("PEX-INFO"))
        natives = [n for n in zf.namelist() if re.search(r"\.so(\.[0-9.]+)?$", n)]
        zf.extractall(tmp_path, members=natives)
    inside = {}
    for wheel in info["distributions"]:
        name, version, *_ = parse_wheel_filename(wheel)
        inside[str(name)] = str(version)
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert inside == {**_pins(LOCKS / "runtime.lock", arch), "kubesolo-update": ours}

    by_dist: dict[str, list[str]] = {}
    for name in natives:
        by_dist.setdefault(name.split("/")[1].split("-")[0], []).append(name)
        described = subprocess.run(
            ["file", "-b", str(tmp_path / name)], capture_output=True, text=True, check=True
        ).stdout
        assert described.startswith("ELF 64-bit LSB shared object"), (name, described)
        assert ELF[arch] in described, (name, described)
        other = ELF["aarch64" if arch == "x86_64" else "x86_64"]
        assert other not in described, (name, described)
    # the compiled dependencies of the lock (cryptography and cffi: signed releases)
    assert {"zstandard", "pydantic_core", "cryptography", "cffi"} <= set(by_dist), sorted(by_dist)


def test_the_build_is_reproducible(artifacts: dict[str, Path], tmp_path: Path) -> None:
    proc = build(tmp_path, "x86_64")
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "kubesolo-update-x86_64.pex"
    first = artifacts["x86_64"]
    assert hashlib.sha256(again.read_bytes()).hexdigest() == (
        hashlib.sha256(first.read_bytes()).hexdigest()
    )


def test_a_wheel_missing_from_the_wheelhouse_is_named(tmp_path: Path) -> None:
    """The build reads its list from the lock: without zstandard's wheel it refuses, by name."""
    house = tmp_path / "wheels"
    source = wheelhouse()
    for arch in build_artifacts.ARCHES:
        (house / f"cp311-{arch}").mkdir(parents=True)
        for wheel in (source / f"cp311-{arch}").glob("*.whl"):
            if not wheel.name.startswith("zstandard-"):
                os.link(wheel, house / f"cp311-{arch}" / wheel.name)
    proc = build(tmp_path / "out", "aarch64", house=house)
    assert proc.returncode == 1
    zstd = _pins(LOCKS / "runtime.lock", "aarch64")["zstandard"]
    assert f"no aarch64 wheel of zstandard=={zstd} with a locked hash" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_tampered_wheel_is_refused(tmp_path: Path) -> None:
    """A wheel whose bytes differ from the lock's hashes is not used."""
    house = tmp_path / "wheels"
    source = wheelhouse()
    for arch in build_artifacts.ARCHES:
        shutil.copytree(source / f"cp311-{arch}", house / f"cp311-{arch}")
    (attrs_wheel,) = (house / "cp311-x86_64").glob("attrs-*.whl")
    with attrs_wheel.open("ab") as f:
        f.write(b"\0")
    proc = build(tmp_path / "out", "x86_64", house=house)
    assert proc.returncode == 1 and "no x86_64 wheel of attrs==" in proc.stderr


def _requirements(names: list[str]) -> list[Requirement]:
    return [Requirement(r) for r in names]


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("runtime.lock", ["dependencies"]), ("test.lock", ["dependencies", "test"])],
)
def test_the_locks_satisfy_pyproject(lock: str, groups: list[str]) -> None:
    """Every range of pyproject.toml is pinned, inside its range (else: bash scripts/lock.sh)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for group in groups[1:]:
        wanted += project["optional-dependencies"][group]
    pins = {p.name: p for p in build_artifacts.read_lock(LOCKS / lock)}
    for req in _requirements(wanted):
        name = str(canonicalize_name(req.name))
        assert name in pins, f"{name} is not in requirements/{lock}: run bash scripts/lock.sh"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"{name}=={pins[name].version} is outside {req.specifier}: run bash scripts/lock.sh"
        )


def test_ci_tests_what_ships() -> None:
    """test.lock pins every runtime dependency at the version runtime.lock ships."""
    runtime = {p.name: p for p in build_artifacts.read_lock(LOCKS / "runtime.lock")}
    test = {p.name: p for p in build_artifacts.read_lock(LOCKS / "test.lock")}
    for name, pin in runtime.items():
        assert name in test and test[name].version == pin.version, name
        assert test[name].hashes == pin.hashes, name
