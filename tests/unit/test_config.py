"""Configuration: precedence, the flag <-> key rule, and one clear line for every mistake."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from kubesolo_core.errors import ConfigError
from kubesolo_entrypoints import cli
from kubesolo_entrypoints.config import (
    NOT_IN_FILE,
    PARSERS,
    Settings,
    conf_text,
    load_settings,
    parse_conf,
)

DESIGN_GLOBALS = [
    "--config",
    "--state",
    "--server",
    "--bootloader",
    "--grubenv",
    "--autoboot",
    "--slot-a",
    "--slot-b",
    "--trust-root",
    "--cmdline",
    "--kubeconfig",
    "--node-name",
    "--containerd-socket",
    "--data-dir",
]


def _global_flags() -> list[str]:
    params = inspect.signature(cli.main_options).parameters.values()
    flags = []
    for p in params:
        decls = getattr(p.default, "param_decls", None) or ()
        flags.extend(d for d in decls if d.startswith("--") and d != "--version")
    return flags


def test_every_design_global_option_exists_exactly() -> None:
    assert _global_flags() == DESIGN_GLOBALS


def test_every_global_flag_is_a_config_key() -> None:
    for flag in _global_flags():
        assert flag[2:].replace("-", "_") in PARSERS


def test_healthcheck_keys_exist() -> None:
    for key in ("healthcheck_url", "auto_rollback_after", "kube_system_settle"):
        assert key in PARSERS


def test_defaults_without_any_source() -> None:
    s = load_settings({"config": "/dev/null"}, {})
    assert s.state == Path("/var/lib/kubesolo/update/state.json")
    assert s.grubenv == Path("/boot/grub/grubenv")
    assert (s.slot_a, s.slot_b) == ("PARTLABEL=KSOLOA", "PARTLABEL=KSOLOB")
    assert s.bootloader == "auto" and s.server is None and s.kube_system_settle == 30.0


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text(
        "# fleet settings\n"
        "server = 'https://file.example/r.json'\n"
        "auto_rollback_after=2\n"
        'kube_system_settle="15"\n'
        "node_name=from-file\n"
    )
    env = {
        "KUBESOLO_UPDATE_CONFIG": str(conf),
        "KUBESOLO_UPDATE_AUTO_ROLLBACK_AFTER": "4",
        "KUBESOLO_UPDATE_NODE_NAME": "from-env",
    }
    s = load_settings({"node_name": "from-flag"}, env)
    assert s.server == "https://file.example/r.json"  # file over default
    assert s.kube_system_settle == 15.0
    assert s.auto_rollback_after == 4  # env over file
    assert s.node_name == "from-flag"  # flag over env
    assert s.config == conf


def test_empty_value_unsets_an_optional_key(tmp_path: Path) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text("kubeconfig=/etc/k.conf\nkubeconfig=\n")
    assert load_settings({"config": str(conf)}, {}).kubeconfig is None


def test_missing_default_file_is_fine_but_explicit_is_not(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"config": str(missing)}, {})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sever=https://x/r.json", "did you mean 'server'"),
        ("slot-a=/dev/sda2", "use slot_a="),
        ("just words", "expected key=value"),
        ("config=/etc/other.conf", "cannot be set in a config file"),
        ("bootloader=lilo", "grub, tryboot, auto"),
        ("auto_rollback_after=-1", "negative"),
        ("kube_system_settle=soon", "number of seconds"),
        ("kube_system_settle=nan", "finite"),
        ("slot_a=UUID=abcd", "LABEL=NAME"),
        ("slot_b=LABEL=", "LABEL= needs a name"),
        ("server=updates.example.com/r.json", "https://"),
        ("node_name=two words", "not a node name"),
    ],
)
def test_bad_lines_name_file_line_and_fix(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_conf("# first line\n" + text + "\n", "/etc/kubesolo/update.conf")
    message = str(info.value)
    assert "/etc/kubesolo/update.conf:2" in message
    assert needle in message
    assert "\n" not in message


def test_same_spec_for_both_slots_is_refused() -> None:
    with pytest.raises(ConfigError, match="slot_a and slot_b"):
        load_settings({"config": "/dev/null", "slot_a": "/dev/sda2", "slot_b": "/dev/sda2"}, {})


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "update.conf"
    bad.write_bytes(b"server=\xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"config": str(bad)}, {})


def test_config_mapping_layer_for_library_users() -> None:
    s = load_settings(
        {"config": "/dev/null"},
        {"KUBESOLO_UPDATE_SERVER": "https://env.example/r.json"},
        config={"server": "https://map.example/r.json", "auto_rollback_after": 3},
    )
    assert s.server == "https://env.example/r.json"  # env over the mapping
    assert s.auto_rollback_after == 3
    with pytest.raises(ConfigError, match="unknown key 'severs'"):
        load_settings({"config": "/dev/null"}, {}, config={"severs": "x"})


def test_conf_text_round_trips() -> None:
    s = load_settings(
        {"config": "/dev/null", "server": "https://x.example/r.json", "auto_rollback_after": "3"},
        {},
    )
    again = parse_conf(conf_text(s), "roundtrip")
    assert set(again) == set(PARSERS) - NOT_IN_FILE
    rebuilt = Settings(**again, config=s.config)
    assert rebuilt == s
