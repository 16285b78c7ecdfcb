"""The CLI through typer's CliRunner: every command, every documented exit code.

The box is real files (ext2 image files as slots, a grubenv file, a cmdline
file, state.json, a release document behind a file:// URL); only the node is
in memory (MemoryKube/MemoryProbes), passed in as ports, as the composition
root allows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner

from kubesolo_adapters import sandbox
from kubesolo_adapters.fakes import MemoryKube, MemoryProbes
from kubesolo_core.policies import PodInfo
from kubesolo_core.slots import Slot
from kubesolo_entrypoints import demo
from kubesolo_entrypoints.cli import app
from kubesolo_entrypoints.exitcodes import ExitCode
from kubesolo_entrypoints.invocation import Run
from tests.tools import require_tool

runner = CliRunner()


@attrs.define
class World:
    root: Path
    box: sandbox.Sandbox
    www: Path
    kube: MemoryKube
    probes: MemoryProbes
    images: dict[str, bytes]

    @property
    def state(self) -> Path:
        return self.root / "state" / "state.json"

    def flags(self, **extra: Any) -> dict[str, Any]:
        return {
            "config": "/dev/null",
            "state": str(self.state),
            "server": (self.www / "release.json").as_uri(),
            # the DESIGN.md 5 release document as served: unsigned mode, asked for by name
            "allow_unsigned": "true",
            "bootloader": "grub",
            "grubenv": str(self.box.grubenv),
            "slot_a": str(self.box.slot(Slot.A)),
            "slot_b": str(self.box.slot(Slot.B)),
            "cmdline": str(self.box.cmdline),
            "boot_id": str(self.box.boot_id),
            "kube_system_settle": "0",
            "settle_timeout": "0",
            **extra,
        }

    def invoke(self, *args: str, ports: bool = True, **flags: Any) -> Any:
        run = Run(
            self.flags(**flags),
            ports={"kube": self.kube, "probes": self.probes} if ports else None,
            environ={},
        )
        return runner.invoke(app, list(args), obj=run)

    def publish(self, version: str) -> None:
        if version not in self.images:
            self.images[version] = sandbox.make_fs_image(self.root, version, size=1 << 20)
        sandbox.publish(self.www, version, self.images[version])

    def reboot(self) -> Slot:
        slot, _ = self.box.boot()
        return slot


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tool("mkfs.ext2", "debugfs")
    work = tmp_path_factory.mktemp("images")
    return {v: sandbox.make_fs_image(work, v, size=1 << 20) for v in ("0.9.0", "1.0.0", "1.1.0")}


@pytest.fixture
def world(tmp_path: Path, images: dict[str, bytes]) -> World:
    box = sandbox.Sandbox(tmp_path)
    for slot, version in ((Slot.A, "1.0.0"), (Slot.B, "0.9.0")):
        with box.slot(slot).open("wb") as f:
            f.truncate(2 << 20)
            f.write(images[version])
    www = tmp_path / "www"
    www.mkdir()
    kube = MemoryKube(
        pods=[
            PodInfo(
                name="coredns",
                phase="Running",
                running_since=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            )
        ]
    )
    w = World(
        root=tmp_path, box=box, www=www, kube=kube, probes=MemoryProbes(), images=dict(images)
    )
    from kubesolo_adapters.grubenvfile import PythonBackend

    PythonBackend(box.grubenv).set({"active_slot": "A", "boot_counter": "3", "boot_success": "1"})
    w.reboot()
    w.publish("1.1.0")
    return w


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    errors = [line for line in lines if "error" in line.lower()]
    assert errors, result.stderr
    return errors[-1]


# --------------------------------------------------------------------------- happy path


def test_full_update_through_the_cli(world: World) -> None:
    r = world.invoke("status", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["booted_slot"] == "A"
    assert [s["version"] for s in doc["slots"]] == ["1.0.0", "0.9.0"]
    assert doc["state"]["phase"] == "idle"

    r = world.invoke("check", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["update_available"] is True

    r = world.invoke("apply")
    assert r.exit_code == 0, r.stderr
    assert "1.1.0 staged on slot B" in r.stdout

    r = world.invoke("activate")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(world.invoke("status", "--json").stdout)
    assert doc["state"]["phase"] == "activated"
    assert doc["next_boot"] == "B" and doc["reboot_required"] is True

    assert world.reboot() is Slot.B
    r = world.invoke("healthcheck", "--json")
    assert r.exit_code == 0, r.stderr
    health = json.loads(r.stdout)
    assert health["healthy"] is True and all(health["checks"].values())
    assert health["state"]["phase"] == "success"

    r = world.invoke("status")
    assert r.exit_code == 0
    assert "Booted:      slot B" in r.stdout
    assert "success" in r.stdout

    r = world.invoke("rollback")
    assert r.exit_code == 0, r.stderr
    assert "slot A" in r.stdout
    assert world.reboot() is Slot.A


def test_check_is_passive_and_records_the_last_check(world: World) -> None:
    before = world.state.exists()
    r = world.invoke("check")
    assert r.exit_code == 0
    assert "1.1.0 available (running 1.0.0)" in r.stdout
    assert world.state.exists() == before  # no state written
    record = json.loads((world.state.parent / "last-check.json").read_text())
    assert record["update_available"] is True and record["ok"] is True


def test_status_human_is_short_and_names_the_slots(world: World) -> None:
    r = world.invoke("status")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) < 15
    assert any(line.startswith("  * A  1.0.0") for line in lines)


def test_healthcheck_flags_override_settings(world: World) -> None:
    world.probes.url_status["http://probe.invalid/"] = 503
    r = world.invoke("healthcheck", "--healthcheck-url", "http://probe.invalid/", "--json")
    assert r.exit_code == ExitCode.UNHEALTHY
    doc = json.loads(r.stdout)
    assert doc["checks"]["probe_url"] is False
    assert "503" in doc["reasons"]["probe_url"]


def test_auto_rollback_after_flag(world: World) -> None:
    assert world.invoke("apply").exit_code == 0
    assert world.invoke("activate").exit_code == 0
    world.reboot()
    world.kube.ready = False
    r = world.invoke("healthcheck", "--auto-rollback-after", "1")
    assert r.exit_code == ExitCode.UNHEALTHY
    assert "rolled back to slot A" in r.stdout
    doc = json.loads(world.invoke("status", "--json").stdout)
    assert doc["state"]["phase"] == "rolled_back"
    assert doc["reboot_required"] is True  # the init script reboots on this


def test_simulate_and_json(world: World) -> None:
    r = world.invoke("simulate", "--runs", "20", "--seed", "3", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["runs"] == 20 and doc["ok"] is True and doc["invariant_checks"] > 20
    again = json.loads(world.invoke("simulate", "--runs", "20", "--seed", "3", "--json").stdout)
    assert again["tally"] == doc["tally"]  # reproducible
    r = world.invoke("simulate", "--runs", "5")
    assert "sequences/s" in r.stdout


def test_config_show_reflects_precedence(world: World, tmp_path: Path) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text("server=https://file.example/r.json\nauto_rollback_after=2\n")
    run = Run(
        {"config": str(conf), "auto_rollback_after": None},
        environ={"KUBESOLO_UPDATE_AUTO_ROLLBACK_AFTER": "5"},
    )
    r = runner.invoke(app, ["--server", "https://flag.example/r.json", "config", "show"], obj=run)
    assert r.exit_code == 0, r.stderr
    assert "server=https://flag.example/r.json" in r.stdout
    assert "auto_rollback_after=5" in r.stdout


def test_config_show_json_has_typed_values_and_the_text_form_keys(tmp_path: Path) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text("server=https://file.example/r.json\nauto_rollback_after=2\nadaptive=false\n")
    run = Run({"config": str(conf)}, environ={})
    r = runner.invoke(app, ["config", "show", "--json"], obj=run)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["server"] == "https://file.example/r.json"
    assert doc["auto_rollback_after"] == 2 and doc["adaptive"] is False
    text = runner.invoke(app, ["config", "show"], obj=Run({"config": str(conf)}, environ={}))
    assert sorted(doc) == sorted(line.split("=", 1)[0] for line in text.stdout.splitlines())


def test_activate_and_rollback_json(world: World) -> None:
    # failing: one document on stdout too, then the error line and the exit code
    r = world.invoke("activate", "--json")
    assert r.exit_code == ExitCode.FAILED
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["exit_code"]) == (False, 1) and "nothing staged" in doc["error"]
    assert "nothing staged" in _one_error_line(r)
    assert world.invoke("apply").exit_code == 0
    r = world.invoke("activate", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["rebooting"] is False
    assert (doc["state"]["phase"], doc["state"]["target_slot"]) == ("activated", "B")
    r = world.invoke("rollback", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and "rolled back" in doc["message"]
    assert doc["state"]["phase"] == "rolled_back"


def test_from_cloud_init(world: World, tmp_path: Path) -> None:
    userdata = tmp_path / "user-data"
    userdata.write_text(
        "#cloud-config\nhostname: edge\nupdates:\n"
        "  server: https://updates.example.com/stable/release.json\n"
        "  auto_rollback_after: 3\n  kube_system_settle: 45  # seconds\n"
    )
    out = tmp_path / "update.conf"
    r = runner.invoke(app, ["config", "from-cloud-init", str(userdata), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    text = out.read_text()
    assert "server=https://updates.example.com/stable/release.json" in text
    assert "auto_rollback_after=3" in text and "kube_system_settle=45" in text
    userdata.write_text("updates:\n  sever: https://x.example/r.json\n")
    r = runner.invoke(app, ["config", "from-cloud-init", str(userdata)])
    assert r.exit_code == ExitCode.USAGE
    assert "did you mean 'server'" in _one_error_line(r)


def test_help_documents_exit_codes_and_every_command() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for word in ("check", "apply", "activate", "rollback", "healthcheck", "status", "metrics"):
        assert word in r.stdout
    assert "Exit codes: 0 ok" in r.stdout
    assert "3 refused by preflight" in r.stdout


def test_demo_runs_the_lifecycle(tmp_path: Path) -> None:
    require_tool("mkfs.ext2", "debugfs")
    result = demo.run_demo(workdir=tmp_path)
    assert (result.first_phase, result.first_booted) == ("success", "B")
    assert (result.second_phase, result.second_booted) == ("rolled_back", "B")
    assert result.boots == 4  # three trial boots, then GRUB's rollback
    assert not result.sandbox.exists()


def test_demo_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("mkfs.ext2", "debugfs")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    r = runner.invoke(app, ["demo"])
    assert r.exit_code == 0, r.output
    assert "GRUB rolls back" in r.stdout
    assert "Last error:  bootloader rolled back to slot B" in r.stdout
    # signed: the agent's TUF client against the demo repository's root, never unsigned
    assert "Trust:       TUF, channel stable" in r.stdout and "UNSIGNED" not in r.stdout


def test_demo_json_is_one_document_and_the_story_goes_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("mkfs.ext2", "debugfs")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    r = runner.invoke(app, ["demo", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is True
    assert (doc["first_update"]["phase"], doc["first_update"]["booted"]) == ("success", "B")
    assert doc["second_update"]["phase"] == "rolled_back"
    assert doc["second_update"]["trial_boots"] == 4
    assert "GRUB rolls back" in r.stderr and "GRUB rolls back" not in r.stdout


@pytest.mark.parametrize("json_out", [False, True])
def test_demo_that_ends_otherwise_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_out: bool
) -> None:
    """The demo checks its own outcome: a rollback that did not happen is exit 1."""
    wrong = demo.DemoResult(
        sandbox=tmp_path, first_phase="success", first_booted="B",
        second_phase="activated", second_booted="A", boots=8,
    )  # fmt: skip
    monkeypatch.setattr(demo, "run_demo", lambda **_: wrong)
    r = runner.invoke(app, ["demo", *(["--json"] if json_out else [])])
    assert r.exit_code == ExitCode.FAILED, r.output
    assert "want rolled_back on B" in r.stderr
    if json_out:
        assert json.loads(r.stdout)["ok"] is False


# --------------------------------------------------------------------------- exit codes


def test_exit_1_operation_failed(world: World) -> None:
    r = world.invoke("activate")
    assert r.exit_code == ExitCode.FAILED
    assert "nothing staged to activate" in _one_error_line(r)
    r = world.invoke("rollback")
    assert r.exit_code == ExitCode.FAILED
    (world.www / "release.json").unlink()
    r = world.invoke("check")
    assert r.exit_code == ExitCode.FAILED
    assert "release.json" in _one_error_line(r)


@pytest.mark.parametrize(
    ("args", "flags", "needle"),
    [
        (["--bogus", "status"], {}, "No such option"),
        (["status", "--bogus"], {}, "No such option"),
        (["--slot-a", "UUID=1234", "status"], {}, "--slot-a"),
        (["--bootloader", "lilo", "status"], {}, "--bootloader"),
        (["--server", "ftp://x/r.json", "check"], {}, "--server"),
        (["healthcheck", "--auto-rollback-after", "many"], {}, "--auto-rollback-after"),
        (["healthcheck", "--kube-system-settle", "-3"], {}, "--kube-system-settle"),
        (["metrics", "--listen", "nowhere"], {}, "--listen"),
        (["status"], {"config": "/nonexistent/update.conf"}, "/nonexistent/update.conf"),
    ],
)
def test_exit_2_usage(world: World, args: list[str], flags: dict[str, Any], needle: str) -> None:
    r = world.invoke(*args, **flags)
    assert r.exit_code == ExitCode.USAGE, r.output
    assert needle in r.stderr
    assert "Traceback" not in r.output


def test_exit_2_bad_config_file_names_file_and_line(world: World, tmp_path: Path) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text("# comment\nserver=https://x.example/r.json\nsever=oops\n")
    r = world.invoke("status", config=str(conf))
    assert r.exit_code == ExitCode.USAGE
    line = _one_error_line(r)
    assert f"{conf}:3" in line and "did you mean 'server'" in line
    conf.write_text("auto_rollback_after=three\n")
    line = _one_error_line(world.invoke("status", config=str(conf)))
    assert "auto_rollback_after" in line and f"{conf}:1" in line
    r = world.invoke("status", config=str(tmp_path))  # a directory: unreadable
    assert r.exit_code == ExitCode.USAGE
    assert str(tmp_path) in _one_error_line(r)


def test_exit_2_unknown_environment_variable(world: World) -> None:
    run = Run(world.flags(), environ={"KUBESOLO_UPDATE_SEVER": "x"})
    r = runner.invoke(app, ["status"], obj=run)
    assert r.exit_code == ExitCode.USAGE
    assert "KUBESOLO_UPDATE_SEVER" in _one_error_line(r)


def test_exit_3_refused_by_preflight(world: World) -> None:
    world.kube.block()
    r = world.invoke("apply")
    assert r.exit_code == ExitCode.REFUSED
    line = _one_error_line(r)
    assert "updates.kubesolo.io/block=true" in line and "--force" in line
    assert not world.state.exists()  # a refusal does not churn the state
    world.kube.block(False)
    world.publish("0.9.0")
    r = world.invoke("apply")
    assert r.exit_code == ExitCode.REFUSED
    assert "--allow-downgrade" in _one_error_line(r)


def test_exit_4_health_check_failed(world: World) -> None:
    world.kube.ready = False
    r = world.invoke("healthcheck")
    assert r.exit_code == ExitCode.UNHEALTHY
    assert "FAIL node_ready" in r.stdout
    assert "health check failed" in _one_error_line(r)


def test_exit_5_corrupt_input(world: World) -> None:
    world.state.parent.mkdir(parents=True, exist_ok=True)
    world.state.write_text('{"schema_version": 2, "phase": "exploded"')
    r = world.invoke("status", "--json")
    assert r.exit_code == ExitCode.CORRUPT
    assert str(world.state) in _one_error_line(r)
    # --json: the failure is one document on stdout too, the same words and code
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["exit_code"]) == (False, ExitCode.CORRUPT)
    assert str(world.state) in doc["error"]
    # The store set the file aside: the next run starts from idle.
    assert world.invoke("status", "--json").exit_code == 0
    (world.www / "release.json").write_text('{"schema": 1, "version": "1.2.0"}')
    r = world.invoke("check")
    assert r.exit_code == ExitCode.CORRUPT
    assert "image" in _one_error_line(r)


def test_missing_slot_is_a_clear_refusal(world: World) -> None:
    r = world.invoke("apply", slot_b=str(world.root / "missing.img"))
    assert r.exit_code == ExitCode.REFUSED
    assert "passive slot not found" in _one_error_line(r)


def test_activate_on_tryboot_says_how_to_start_the_trial(world: World) -> None:
    # A Pi: autoboot.txt + a device tree folder; the reboot call is never made here.
    autoboot = world.root / "autoboot.txt"
    autoboot.write_text("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
    tryboot = {
        "bootloader": "tryboot",
        "autoboot": str(autoboot),
        "device_tree": str(world.root / "dt"),
    }
    world.publish("1.1.0")
    assert world.invoke("apply", **tryboot).exit_code == 0
    r = world.invoke("activate", **tryboot)
    assert r.exit_code == 0, r.output
    assert "reboot '0 tryboot'" in r.stdout
    assert "boot_partition=3" in autoboot.read_text()


def test_an_unexpected_exception_is_one_line_not_a_traceback(world: World) -> None:
    """A bug (here a fetcher raising RuntimeError) still ends in one line and exit 1."""

    class Broken:
        def fetch_release(self, url: str) -> bytes:
            raise RuntimeError("the unexpected")

        def open_image(self, *args: Any) -> Any:
            raise AssertionError("not reached")

    run = Run(world.flags(), ports={"kube": world.kube, "fetcher": Broken()}, environ={})
    r = runner.invoke(app, ["check"], obj=run)
    assert r.exit_code == ExitCode.FAILED
    assert "internal error: RuntimeError: the unexpected" in _one_error_line(r)
    assert r.exception is None or isinstance(r.exception, SystemExit)
