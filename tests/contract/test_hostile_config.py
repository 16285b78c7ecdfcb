"""The hostile-input catalogue, part 1: flags, environment variables, update.conf, cloud-init.

Each case is one careless or hostile input, run through the real CLI in a
sandboxed box (tests/hostile.py) with the exact outcome asserted: the exit
code, the culprit (option, variable, file:line, key) named in the one error
line, no traceback, state.json valid and not claiming work in progress, the
running slot and the GRUB env byte-identical.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubesolo_core.lifecycle import Phase
from tests.hostile import Case, HostileBox, case, fifo, run_case

USAGE, FAILED, CORRUPT = 2, 1, 5


def _flag(key: str, value: str | None):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> None:
        box.flags[key] = value.format(port=box.server.port, root=box.root) if value else value

    return prepare


def _trust_root_fifo(box: HostileBox) -> list[Path]:
    box.flags["trust_root"] = str(fifo(box.root / "root-pipe.json"))
    return [box.root / "root-pipe.json"]


def _trust_root_huge(box: HostileBox) -> None:
    huge = box.root / "huge-root.json"
    with huge.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of nothing
    box.flags["trust_root"] = str(huge)


def _env(name: str, value: str, *, drop_flag: str | None = None):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> None:
        box.env[name] = value.format(port=box.server.port, root=box.root)
        if drop_flag:
            box.flags[drop_flag] = None

    return prepare


def _boot_id_fifo(box: HostileBox) -> list[Path]:
    box.env["KUBESOLO_UPDATE_BOOT_ID"] = str(fifo(box.root / "boot-id-pipe"))
    return [box.root / "boot-id-pipe"]


# --------------------------------------------------------------------------- flags and env

FLAGS = "flags+env"
FLAG_CASES: list[Case] = [
    case(FLAGS, "server-ipv6-unclosed-bracket", "check", USAGE, ("--server", "]"),
         prepare=_flag("server", "http://[::1/release.json")),
    case(FLAGS, "server-control-character", "apply", USAGE, ("--server", "U+0001"),
         prepare=_flag("server", "http://127.0.0.1:{port}/rel\x01ease.json"), state_intact=True),
    case(FLAGS, "server-port-out-of-range", "check", USAGE, ("--server", "99999"),
         prepare=_flag("server", "http://127.0.0.1:99999/release.json"), max_seconds=10),
    case(FLAGS, "server-port-zero", "check", USAGE, ("--server", "port"),
         prepare=_flag("server", "http://127.0.0.1:0/release.json"), max_seconds=10),
    case(FLAGS, "server-port-not-a-number", "check", USAGE, ("--server", "port"),
         prepare=_flag("server", "http://127.0.0.1:80a/release.json")),
    case(FLAGS, "server-unsupported-scheme", "check", USAGE, ("--server", "ftp"),
         prepare=_flag("server", "ftp://127.0.0.1/release.json")),
    case(FLAGS, "server-no-host", "check", USAGE, ("--server", "host"),
         prepare=_flag("server", "http:///release.json")),
    case(FLAGS, "server-blank-inside", "check", USAGE, "--server",
         prepare=_flag("server", "http://127.0.0.1:{port}/a b.json")),
    case(FLAGS, "server-non-ascii-host", "check", USAGE, ("--server", "ASCII"),
         prepare=_flag("server", "http://exämple.com/release.json")),
    case(FLAGS, "server-20k-characters", "check", USAGE, ("--server", "long"),
         prepare=_flag("server", "http://127.0.0.1:{port}/" + "a" * 20000)),
    case(FLAGS, "trust-root-endless-device", "check", USAGE,
         ("trust_root /dev/zero", "character device"), prepare=_flag("trust_root", "/dev/zero"),
         timeout=20),
    case(FLAGS, "trust-root-fifo", "apply", USAGE, ("root-pipe.json", "FIFO"),
         prepare=_trust_root_fifo, state_intact=True, timeout=20),
    case(FLAGS, "trust-root-a-directory", "check", USAGE, ("trust_root {root}", "directory"),
         prepare=_flag("trust_root", "{root}")),
    case(FLAGS, "trust-root-64-mib", "check", USAGE, ("huge-root.json", "512000 bytes"),
         prepare=_trust_root_huge, timeout=20),
    case(FLAGS, "server-empty-check", "check", USAGE, ("no release server", "--server"),
         prepare=_flag("server", "")),
    case(FLAGS, "server-empty-apply", "apply", USAGE, ("no release server", "--server"),
         prepare=_flag("server", ""), state_intact=True),
    case(FLAGS, "server-env-ipv6-unclosed", "check", USAGE, "KUBESOLO_UPDATE_SERVER",
         prepare=_env("KUBESOLO_UPDATE_SERVER", "http://[fe80::1/r.json", drop_flag="server")),
    case(FLAGS, "server-env-smuggled-line", "apply", USAGE, ("KUBESOLO_UPDATE_SERVER", "U+000A"),
         prepare=_env("KUBESOLO_UPDATE_SERVER", "http://127.0.0.1:{port}/release.json\nslot_b=/",
                      drop_flag="server")),
    case(FLAGS, "healthcheck-url-control-character", ("healthcheck", "--healthcheck-url",
         "http://127.0.0.1:1/\x7f"), USAGE, ("--healthcheck-url", "U+007F")),
    case(FLAGS, "healthcheck-url-file-scheme", ("healthcheck", "--healthcheck-url",
         "file:///etc/passwd"), USAGE, ("--healthcheck-url", "file")),
    case(FLAGS, "healthcheck-url-env-port-out-of-range", "status", USAGE,
         ("KUBESOLO_UPDATE_HEALTHCHECK_URL", "70000"),
         prepare=_env("KUBESOLO_UPDATE_HEALTHCHECK_URL", "http://127.0.0.1:70000/healthz")),
    case(FLAGS, "env-unknown-key", "status", USAGE, "KUBESOLO_UPDATE_SEVER",
         prepare=_env("KUBESOLO_UPDATE_SEVER", "https://x.example/r.json")),
    case(FLAGS, "auto-rollback-after-4000-digits", ("healthcheck", "--auto-rollback-after",
         "9" * 4000), USAGE, ("--auto-rollback-after", "digits")),
    case(FLAGS, "kube-system-settle-nan", ("healthcheck", "--kube-system-settle", "nan"),
         USAGE, "--kube-system-settle"),
    case(FLAGS, "node-name-path-traversal", "status", USAGE, "--node-name",
         prepare=_flag("node_name", "../../namespaces/kube-system/secrets")),
    case(FLAGS, "node-name-env-escape-sequence", "status", USAGE, "KUBESOLO_UPDATE_NODE_NAME",
         prepare=_env("KUBESOLO_UPDATE_NODE_NAME", "edge\x1b[2J")),
    case(FLAGS, "bootloader-unknown", "status", USAGE, "--bootloader",
         prepare=_flag("bootloader", "uboot")),
    case(FLAGS, "state-flag-empty", "status", USAGE, "--state", prepare=_flag("state", " ")),
    case(FLAGS, "state-flag-newline", "status", USAGE, ("--state", "U+000A"),
         prepare=_flag("state", "{root}/var\n/state.json")),
    case(FLAGS, "config-flag-missing-file", "status", USAGE, "/nonexistent/update.conf",
         prepare=_flag("config", "/nonexistent/update.conf")),
    case(FLAGS, "boot-id-env-is-a-fifo", "status", FAILED, ("{root}/boot-id-pipe", "FIFO"),
         prepare=_boot_id_fifo, timeout=20),
]  # fmt: skip


@pytest.mark.parametrize("spec", FLAG_CASES, ids=lambda c: c.id)
def test_flags_and_environment(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


# --------------------------------------------------------------------------- update.conf

CONF = "update.conf"


def _conf(data: bytes):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        conf = box.root / "update.conf"
        conf.write_bytes(data.replace(b"{port}", str(box.server.port).encode()))
        box.flags["server"] = None  # the file's value is the one in effect
        return [conf]

    return prepare


def _conf_special(kind: str):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        conf = box.root / "update.conf"
        conf.unlink()
        if kind == "fifo":
            fifo(conf)
        elif kind == "socket":
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(conf))
        elif kind == "directory":
            conf.mkdir()
        elif kind == "link-to-fifo":
            conf.symlink_to(fifo(box.root / "a-pipe"))
        return [conf]

    return prepare


CONF_CASES: list[Case] = [
    case(CONF, "server-ipv6-unclosed", "check", USAGE, ("update.conf:2", "server"),
         prepare=_conf(b"# ipv6\nserver=http://[fe80::1/release.json\n")),
    case(CONF, "lone-cr-smuggles-a-key", "status", USAGE, ("update.conf:1", "U+000D"),
         prepare=_conf(b"server=http://127.0.0.1:{port}/release.json\rslot_b=/dev/sda1\n")),
    case(CONF, "line-separator-smuggles-a-key", "status", USAGE, ("update.conf:1", "U+2028"),
         prepare=_conf("server=http://127.0.0.1:{port}/release.json\u2028slot_b=/\n".encode())),
    case(CONF, "vertical-tab-smuggles-a-key", "status", USAGE, ("update.conf:1", "U+000B"),
         prepare=_conf(b"node_name=edge\x0bslot_b=/dev/sda1\n")),
    case(CONF, "nul-byte", "status", USAGE, ("update.conf:1", "U+0000"),
         prepare=_conf(b"server=http://127.0.0.1:{port}/\x00release.json\n")),
    case(CONF, "unbalanced-quote", "check", USAGE, ("update.conf:1", "server"),
         prepare=_conf(b'server="http://127.0.0.1:{port}/release.json\n')),
    case(CONF, "healthcheck-url-file-scheme", "status", USAGE, ("update.conf:1", "healthcheck_url"),
         prepare=_conf(b"healthcheck_url=file:///etc/shadow\n")),
    case(CONF, "count-with-5000-digits", "status", USAGE, ("update.conf:1", "auto_rollback_after"),
         prepare=_conf(b"auto_rollback_after=" + b"7" * 5000 + b"\n")),
    case(CONF, "unknown-key", "status", USAGE, ("update.conf:1", "did you mean 'server'"),
         prepare=_conf(b"sever=https://x.example/r.json\n")),
    case(CONF, "not-utf8", "status", USAGE, ("update.conf", "UTF-8"),
         prepare=_conf(b"server=http://\xff\xfe/\n")),
    case(CONF, "two-mib-of-comments", "status", USAGE, ("update.conf", "larger than"),
         prepare=_conf(b"#" * (2 << 20) + b"\n")),
    case(CONF, "fifo", "status", USAGE, ("update.conf", "FIFO"),
         prepare=_conf_special("fifo"), timeout=20),
    case(CONF, "symlink-to-fifo", "status", USAGE, ("update.conf", "FIFO"),
         prepare=_conf_special("link-to-fifo"), timeout=20),
    case(CONF, "unix-socket", "status", USAGE, ("update.conf", "socket"),
         prepare=_conf_special("socket"), timeout=20),
    case(CONF, "directory", "status", USAGE, ("update.conf", "directory"),
         prepare=_conf_special("directory")),
    case(CONF, "dev-zero", "status", USAGE, ("/dev/zero", "character device"),
         prepare=_flag("config", "/dev/zero"), timeout=20),
    case(CONF, "dev-null-is-an-empty-config", "status", 0, "slot A",
         prepare=_flag("config", "/dev/null"), state_intact=True),
]  # fmt: skip


@pytest.mark.parametrize("spec", CONF_CASES, ids=lambda c: c.id)
def test_update_conf(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)


# --------------------------------------------------------------------------- cloud-init

CLOUD = "cloud-init"
REAL_CLOUD_CONFIG = """\
#cloud-config
hostname: edge-7
users:
  - name: ops
    groups: [wheel, adm]
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@example
x-defaults: &updates
  server: https://updates.example.com/stable/release.json
  kube_system_settle: 45
write_files:
  - path: /etc/motd
    content: |
      KubeSolo OS
      managed by cloud-init
runcmd:
  - [sh, -c, 'echo "updates: {server: nope}" > /dev/null']
updates:
  <<: *updates
  auto_rollback_after: 3
  healthcheck_url: >-
    http://127.0.0.1:8080/healthz
"""


def _userdata(text: str | bytes, *, name: str = "user-data"):  # type: ignore[no-untyped-def]
    def prepare(box: HostileBox) -> list[Path]:
        path = box.root / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return [path, box.root / "update.conf"]

    return prepare


def _userdata_fifo(box: HostileBox) -> list[Path]:
    return [fifo(box.root / "user-data")]


def _cloud(
    name: str, text: str | bytes, code: int, culprit: tuple[str, ...], **rest: object
) -> Case:
    return case(CLOUD, name, ("config", "from-cloud-init", "user-data"), code,
                ("user-data", *culprit), prepare=_userdata(text), **rest)  # fmt: skip


CLOUD_CASES: list[Case] = [
    _cloud("cr-smuggles-slot-b", 'updates:\n  server: "http://x.example/r.json\\rslot_b=/dev/sda2"\n',
           USAGE, ("server", "U+000D")),
    _cloud("lf-smuggles-slot-b", 'updates:\n  server: "http://x.example/r.json\\nslot_b=/dev/sda2"\n',
           USAGE, ("server", "U+000A")),
    _cloud("line-separator-in-value", 'updates:\n  node_name: "edge\\u2028slot_b=/dev/sda2"\n',
           USAGE, ("node_name", "U+2028")),
    _cloud("block-scalar-two-lines", "updates:\n  server: |\n    http://x.example/r.json\n"
           "    slot_b=/dev/sda2\n", USAGE, ("server",)),
    _cloud("list-value", "updates:\n  server: [http://a.example/r.json]\n", USAGE,
           ("server", "scalar")),
    _cloud("mapping-value", "updates:\n  server: {url: http://a.example/r.json}\n", USAGE,
           ("server", "scalar")),
    _cloud("unknown-key", "updates:\n  sever: https://x.example/r.json\n", USAGE,
           ("did you mean 'server'",)),
    _cloud("config-key", "updates:\n  config: /tmp/other.conf\n", USAGE, ("config",)),
    _cloud("not-a-mapping", "- updates\n- server\n", USAGE, ("mapping",)),
    _cloud("no-updates-section", "#cloud-config\nhostname: edge\n", USAGE, ("updates",)),
    _cloud("python-object-tag", "updates: !!python/object/apply:os.system ['touch pwned']\n",
           USAGE, ("YAML",)),
    _cloud("unclosed-flow-sequence", "updates: [\n", USAGE, ("YAML",)),
    _cloud("not-utf8", b"updates:\n  server: http://\xff/r.json\n", USAGE, ("UTF-8",)),
    _cloud("json-bell-character", '{"updates": {"server": "http://x.example/\\u0007"}}',
           USAGE, ("server", "U+0007")),
    _cloud("server-is-a-number", "updates:\n  server: 42\n", USAGE, ("server",)),
    _cloud("server-port-out-of-range", "updates:\n  server: http://127.0.0.1:99999/r.json\n",
           USAGE, ("server", "99999")),
    _cloud("billion-laughs", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n"
           "c: &c [*b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c]\n"
           "e: &e [*d, *d, *d, *d, *d, *d]\nupdates: *e\n", USAGE, ("updates", "mapping"),
           max_seconds=20),
    _cloud("five-mib-of-user-data", "#" * (5 << 20) + "\n", USAGE, ("larger than",)),
    case(CLOUD, "fifo", ("config", "from-cloud-init", "user-data"), USAGE, ("user-data", "FIFO"),
         prepare=_userdata_fifo, timeout=20),
]  # fmt: skip


@pytest.mark.parametrize("spec", CLOUD_CASES, ids=lambda c: c.id)
def test_cloud_init(hostile: HostileBox, spec: Case) -> None:
    run_case(hostile, spec)
    assert not (hostile.root / "pwned").exists()


def test_cloud_init_real_cloud_config_round_trips(hostile: HostileBox) -> None:
    """A real #cloud-config (anchors, merge keys, block scalars, lists) gives exactly its keys."""
    spec = _cloud("real-cloud-config", REAL_CLOUD_CONFIG, 0, ("server=",))
    result = run_case(hostile, spec)
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert sorted(lines) == [
        "auto_rollback_after=3",
        "healthcheck_url=http://127.0.0.1:8080/healthz",
        "kube_system_settle=45",
        "server=https://updates.example.com/stable/release.json",
    ]
    # and what it wrote is what the agent then reads
    conf = hostile.root / "from-cloud.conf"
    conf.write_text(result.stdout)
    hostile.flags["config"] = str(conf)
    hostile.flags["server"] = None
    shown = run_case(hostile, case(CLOUD, "real-cloud-config-read-back", ("config", "show"), 0))
    assert "server=https://updates.example.com/stable/release.json" in shown.stdout
    assert "auto_rollback_after=3" in shown.stdout
    assert hostile.load_state() is None or hostile.load_state().phase is Phase.IDLE  # type: ignore[union-attr]
