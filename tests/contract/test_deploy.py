"""deploy/: manifests load with kubectl's own (offline) parsing, scripts parse and behave.

kubectl cannot ``apply --dry-run=client`` without an API server (it needs
discovery), but ``kubectl annotate --local -f FILE -o json`` decodes a file
with kubectl's client-side machinery and no server; the fields that matter
are then checked on its JSON output. deploy/grub.cfg has its own tests.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubesolo_adapters.autoboot import AUTOBOOT_LIMIT, parse_autoboot
from kubesolo_adapters.bootfacts import BootFacts
from kubesolo_adapters.tryboot import TrybootBootEnv
from kubesolo_core.slots import Slot
from kubesolo_entrypoints.config import PARSERS, parse_conf
from tests.tools import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"


def kubectl_local(path: Path, home: Path) -> dict[str, Any]:
    require_tool("kubectl")
    proc = subprocess.run(
        ["kubectl", "annotate", "--local", "-f", str(path), "-o", "json", "checked=yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    return {p.name: kubectl_local(p, home) for p in sorted(K8S.glob("*.yaml"))}


def test_kubectl_refuses_a_broken_manifest(tmp_path: Path) -> None:
    """The parse check can fail."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: batch/v1\nkind: CronJob\nspec: {schedule: [\n")
    require_tool("kubectl")
    proc = subprocess.run(
        ["kubectl", "annotate", "--local", "-f", str(bad), "-o", "json", "x=y"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )
    assert proc.returncode != 0


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return dict(container)


def test_all_manifests_share_one_namespace_that_is_not_kube_system(
    manifests: dict[str, dict[str, Any]],
) -> None:
    kinds = {doc["kind"] for doc in manifests.values()}
    assert kinds == {"Namespace", "ConfigMap", "CronJob", "Job"}
    spaces = {
        d["metadata"].get("namespace") for d in manifests.values() if d["kind"] != "Namespace"
    }
    assert spaces == {"kubesolo-system"}


def test_configmap_holds_the_server_url_as_an_agent_variable(
    manifests: dict[str, dict[str, Any]],
) -> None:
    data = manifests["configmap.yaml"]["data"]
    for key in data:
        assert key.startswith("KUBESOLO_UPDATE_")
        assert key.removeprefix("KUBESOLO_UPDATE_").lower() in PARSERS
    assert data["KUBESOLO_UPDATE_SERVER"].startswith("https://")


def test_cronjob_runs_apply_every_six_hours(manifests: dict[str, dict[str, Any]]) -> None:
    cron = manifests["cronjob-apply.yaml"]
    assert cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["schedule"] == "0 */6 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = _container(pod)
    assert c["command"][-2:] == ["/usr/bin/kubesolo-update", "apply"]
    assert c["envFrom"] == [{"configMapRef": {"name": "kubesolo-update"}}]


def test_job_runs_healthcheck(manifests: dict[str, dict[str, Any]]) -> None:
    job = manifests["job-healthcheck.yaml"]
    pod = job["spec"]["template"]["spec"]
    c = _container(pod)
    assert "healthcheck" in c["command"]
    assert c["envFrom"] == [{"configMapRef": {"name": "kubesolo-update"}}]
    assert job["spec"]["backoffLimit"] == 0


# --------------------------------------------------------------------------- boot scripts


@pytest.mark.parametrize("script", ["init.d/kubesolo-update", "kubesolo-update-boot"])
def test_scripts_parse_with_sh(script: str) -> None:
    path = DEPLOY / script
    assert os.access(path, os.X_OK)
    for shell in ("sh", "dash", "busybox"):
        from shutil import which

        if which(shell) is None:
            continue
        argv = [shell, "sh", "-n", str(path)] if shell == "busybox" else [shell, "-n", str(path)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, f"{shell}: {proc.stderr}"


def _stub_agent(
    tmp_path: Path, health_rc: int, reboot_required: bool, verdict: str = "consistent"
) -> Path:
    stub = tmp_path / "agent"
    flag = str(reboot_required).lower()
    stub.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        'case "$1" in\n'
        f"  healthcheck) exit {health_rc} ;;\n"
        f'  status) printf \'{{\\n  "reboot_required": {flag},\\n'
        f'  "reconciliation": {{"verdict": "{verdict}"}}\\n}}\\n\' ;;\n'
        "esac\n"
    )
    stub.chmod(0o755)
    return stub


@pytest.mark.parametrize(
    ("case", "rebooted", "rc"),
    [
        # case = (healthcheck exit code, status reboot_required, status verdict)
        ((0, False, "in_trial"), False, 0),  # healthy (and committed by the check)
        ((4, True, "consistent"), True, 4),  # auto-rollback or a trial the bootloader gave up on
        ((4, False, "in_trial"), True, 4),  # unhealthy trial: the reboot counts it down
        ((4, False, "consistent"), False, 4),  # unhealthy, committed: no reboot loop
        ((4, False, "pending_reboot"), False, 4),  # activated, not yet rebooted: operator's call
        ((1, True, "in_trial"), False, 1),  # the check itself failed: leave the box alone
    ],
)
def test_boot_helper_reboots_only_when_it_moves_the_box_on(
    tmp_path: Path, case: tuple[int, bool, str], rebooted: bool, rc: int
) -> None:
    stub = _stub_agent(tmp_path, *case)
    marker = tmp_path / "rebooted"
    proc = subprocess.run(
        ["sh", str(DEPLOY / "kubesolo-update-boot")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "KUBESOLO_UPDATE": str(stub),
            "KUBESOLO_UPDATE_REBOOT": f"touch {marker}",
        },
    )
    assert proc.returncode == rc, proc.stderr
    assert marker.exists() == rebooted
    assert (tmp_path / "calls").read_text().splitlines()[0] == "healthcheck"


def test_boot_helper_keeps_its_own_variables_from_the_agent(tmp_path: Path) -> None:
    """The real agent refuses unknown KUBESOLO_UPDATE_* keys: the helper's own must not reach it.

    Found by the whole-box tier: the helper ran with KUBESOLO_UPDATE_REBOOT set
    and the agent's healthcheck exited 2 ("unknown key 'reboot'") on every boot.
    """
    agent = tmp_path / "agent"
    agent.write_text(
        "#!/bin/sh\n"
        f'env | grep "^KUBESOLO_UPDATE_" >> {tmp_path}/env\n'
        f'exec {sys.executable} -m kubesolo_entrypoints "$@"\n'
    )
    agent.chmod(0o755)
    proc = subprocess.run(
        ["sh", str(DEPLOY / "kubesolo-update-boot")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=DEPLOY.parent,
        env={
            "PATH": "/usr/bin:/bin",
            "KUBESOLO_UPDATE": str(agent),
            "KUBESOLO_UPDATE_REBOOT": f"touch {tmp_path}/rebooted",
            "KUBESOLO_UPDATE_CONFIG": str(tmp_path / "absent.conf"),
            "KUBESOLO_UPDATE_STATE": str(tmp_path / "state.json"),
            "KUBESOLO_UPDATE_GRUBENV": str(tmp_path / "grubenv"),
            "KUBESOLO_UPDATE_BOOTLOADER": "grub",
        },
    )
    seen = (tmp_path / "env").read_text()
    assert "KUBESOLO_UPDATE_REBOOT" not in seen
    assert "KUBESOLO_UPDATE_STATE=" in seen  # the agent's own settings still pass
    assert "unknown key" not in proc.stderr, proc.stderr


def test_reboot_required_is_what_status_json_prints() -> None:
    """The helper greps the exact text the renderer emits."""
    from kubesolo_entrypoints.render import dumps

    assert '"reboot_required": true' in dumps({"reboot_required": True})
    assert '"verdict": "in_trial"' in dumps({"reconciliation": {"verdict": "in_trial"}})
    helper = (DEPLOY / "kubesolo-update-boot").read_text()
    assert '"reboot_required": true' in helper and '"verdict": "in_trial"' in helper


def test_init_script_runs_the_boot_helper() -> None:
    text = (DEPLOY / "init.d/kubesolo-update").read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "kubesolo-update-boot" in text and "start)" in text


def test_systemd_unit_is_ordered_before_boot_complete() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd/kubesolo-update-healthcheck.service")
    assert "boot-complete.target" in parser["Unit"]["Before"].split()
    assert parser["Service"]["Type"] == "oneshot"
    assert parser["Service"]["ExecStart"].endswith("kubesolo-update-boot")
    assert "boot-complete.target" in parser["Install"]["RequiredBy"].split()


# --------------------------------------------------------------------------- files


def test_autoboot_txt_parses_with_the_tryboot_adapter(tmp_path: Path) -> None:
    text = (DEPLOY / "autoboot.txt").read_text()
    assert len(text.encode()) <= AUTOBOOT_LIMIT
    settings = parse_autoboot(text)
    assert (settings.committed, settings.trial, settings.tryboot_a_b) == (2, 3, True)
    copy = tmp_path / "autoboot.txt"
    copy.write_text(text)
    env = TrybootBootEnv(
        copy,
        facts=BootFacts(cmdline=tmp_path / "cmdline", boot_id_path=tmp_path / "boot_id"),
        device_tree=tmp_path / "dt",
    )
    view = env.read()
    assert view.committed_slot is Slot.A and view.trial_slot is None


def test_example_update_conf_parses() -> None:
    values = parse_conf((DEPLOY / "update.conf.example").read_text(), "update.conf.example")
    assert values["server"].startswith("https://")
    assert values["auto_rollback_after"] == 3
