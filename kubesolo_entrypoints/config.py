"""Configuration: defaults < update.conf < ``KUBESOLO_UPDATE_<KEY>`` < command-line flags.

Every global flag ``--some-thing`` is also the update.conf key ``some_thing=``
and the environment variable ``KUBESOLO_UPDATE_SOME_THING`` (``--config`` only
as a flag or the variable: a config file cannot name another). A few keys
have no flag because they only matter on unusual boxes or in tests
(``boot_id``, ``device_tree``, ``grubenv_backend``, ``settle_timeout``,
``log_format``); the healthcheck keys (``healthcheck_url``,
``auto_rollback_after``, ``kube_system_settle``) are also flags of the
``healthcheck`` command.

update.conf is ``key=value`` lines; ``#`` starts a comment line; blanks around
``=`` are ignored and a value may be wrapped in single or double quotes, so
the file can also be sourced by a shell. An empty value resets an optional
key (``kubeconfig=``) to "unset". A missing default file is fine (all
defaults); a missing file named with ``--config`` is an error.

Every mistake is a :class:`~kubesolo_core.errors.ConfigError` whose message
names the key and where it came from (file and line, variable, or flag) and
says how to fix it; the CLI turns it into exit code 2 and one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from kubesolo_core.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/kubesolo/update.conf")
ENV_PREFIX = "KUBESOLO_UPDATE_"
BOOTLOADERS = ("grub", "tryboot", "auto")
GRUBENV_BACKENDS = ("python", "grub-editenv")
LOG_FORMATS = ("auto", "console", "json")
URL_SCHEMES = ("https://", "http://", "file://")


def _default_node_name() -> str:
    # os.uname is what `hostname` prints; no socket import on the start-up path.
    return os.uname().nodename


# --------------------------------------------------------------------------- value parsers


def _path(value: str) -> Path:
    if not value.strip():
        raise ValueError("a path is required")
    return Path(value.strip())


def _optional_path(value: str) -> Path | None:
    return Path(value.strip()) if value.strip() else None


def _url(value: str) -> str:
    text = value.strip()
    if not text.startswith(URL_SCHEMES):
        raise ValueError(f"{value!r} is not an https://, http:// or file:// URL")
    return text


def _optional_url(value: str) -> str | None:
    return _url(value) if value.strip() else None


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _nonneg_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{number} is negative")
    return number


def _nonneg_float(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value!r} must be a finite number >= 0")
    return number


def slot_spec(value: str) -> str:
    """Validate a slot spec: ``PARTLABEL=NAME``, ``LABEL=NAME``, a device or image file path."""
    text = value.strip()
    if not text:
        raise ValueError("a slot spec is required")
    if "=" in text.split("/", 1)[0]:
        kind, _, name = text.partition("=")
        if kind not in ("LABEL", "PARTLABEL"):
            raise ValueError(
                f"{value!r}: only PARTLABEL=NAME, LABEL=NAME, a block device or an image "
                "file path are supported"
            )
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{value!r}: {kind}= needs a name without blanks")
    return text


def _node_name(value: str) -> str:
    text = value.strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{value!r} is not a node name")
    return text


# --------------------------------------------------------------------------- the table of keys

#: where a key is also an option of the CLI: the global options, or a command's
GLOBAL = "global"


def key(
    default: Any = attrs.NOTHING,
    parse: Callable[[str], Any] = _path,
    help: str = "",
    *,
    hint: str = "",
    metavar: str = "",
    option: str | None = GLOBAL,
    in_file: bool = True,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """One configuration key: a field of :class:`Settings` and everything else about it.

    The field's name is the update.conf key, ``--name-with-dashes`` the CLI
    option (of the global options, or of the command named by ``option``;
    None: no option) and ``KUBESOLO_UPDATE_NAME`` the variable. ``parse`` turns
    text into the value (raising ValueError with the reason), ``hint`` says how
    to fix a bad value, ``help`` and ``metavar`` are the option's help.
    """
    meta = {
        "parse": parse,
        "help": help,
        "hint": hint,
        "metavar": metavar,
        "option": option,
        "in_file": in_file,
    }
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta)
    return attrs.field(default=default, metadata=meta)


@attrs.frozen(kw_only=True)
class Settings:
    """The resolved configuration of one run; its fields are the table of keys (in --help order)."""

    config: Path = key(
        DEFAULT_CONFIG, _path, f"update.conf [default: {DEFAULT_CONFIG}]", metavar="PATH",
        in_file=False,
    )  # fmt: skip
    state: Path = key(
        Path("/var/lib/kubesolo/update/state.json"), _path,
        "state file [default: /var/lib/kubesolo/update/state.json]", metavar="PATH",
    )  # fmt: skip
    server: str | None = key(
        None, _optional_url, "the release document (https, http, file)", metavar="URL",
        hint="e.g. server=https://updates.example.com/stable/release.json",
    )  # fmt: skip
    bootloader: str = key(
        "auto", _choice(BOOTLOADERS), "[default: auto]", metavar="grub|tryboot|auto",
        hint="use grub, tryboot or auto",
    )  # fmt: skip
    grubenv: Path = key(
        Path("/boot/grub/grubenv"), _path, "GRUB env block [default: /boot/grub/grubenv]",
        metavar="PATH",
    )  # fmt: skip
    autoboot: Path = key(
        Path("/boot/firmware/autoboot.txt"), _path,
        "autoboot.txt of the tryboot selector partition [default: /boot/firmware/autoboot.txt]",
        metavar="PATH",
    )  # fmt: skip
    slot_a: str = key(
        "PARTLABEL=KSOLOA", slot_spec,
        "PARTLABEL=NAME (GPT partition name), LABEL=NAME (filesystem label), "
        "a block device or an image file [default: PARTLABEL=KSOLOA]",
        metavar="SPEC",
        hint="e.g. slot_a=PARTLABEL=KSOLOA, slot_a=LABEL=KSOLOA or slot_a=/dev/sda2",
    )  # fmt: skip
    slot_b: str = key(
        "PARTLABEL=KSOLOB", slot_spec, "as --slot-a [default: PARTLABEL=KSOLOB]", metavar="SPEC",
        hint="e.g. slot_b=PARTLABEL=KSOLOB, slot_b=LABEL=KSOLOB or slot_b=/dev/sda3",
    )  # fmt: skip
    cmdline: Path = key(
        Path("/proc/cmdline"), _path,
        "kernel command line; kubesolo.slot=A|B names the booted slot [default: /proc/cmdline]",
        metavar="PATH",
    )  # fmt: skip
    kubeconfig: Path | None = key(
        None, _optional_path, "none reachable = the Kubernetes checks are 'unavailable'",
        metavar="PATH",
    )  # fmt: skip
    node_name: str = key(
        parse=_node_name, help="[default: the host name]", metavar="NAME",
        factory=_default_node_name,
    )  # fmt: skip
    containerd_socket: Path = key(
        Path("/run/containerd/containerd.sock"), _path,
        "[default: /run/containerd/containerd.sock]", metavar="PATH",
    )  # fmt: skip
    data_dir: Path = key(
        Path("/var/lib/kubesolo"), _path,
        "the disk-writable probe lives here [default: /var/lib/kubesolo]", metavar="PATH",
    )  # fmt: skip
    # the healthcheck command's own options
    healthcheck_url: str | None = key(
        None, _optional_url, "Operator probe that must answer 200.", metavar="URL",
        option="healthcheck", hint="e.g. healthcheck_url=http://127.0.0.1:8080/healthz",
    )  # fmt: skip
    auto_rollback_after: int = key(
        0, _nonneg_int, "Roll back after N failed checks of a trial (0 = off) [default: 0]",
        metavar="N", option="healthcheck", hint="a count of failed health checks, 0 = off",
    )  # fmt: skip
    kube_system_settle: float = key(
        30.0, _nonneg_float, "kube-system pods must hold Running this long [default: 30]",
        metavar="SECONDS", option="healthcheck", hint="seconds, e.g. 30",
    )  # fmt: skip
    # keys without an option: they only matter on unusual boxes or in tests
    settle_timeout: float = key(300.0, _nonneg_float, option=None, hint="seconds, e.g. 300")
    boot_id: Path = key(Path("/proc/sys/kernel/random/boot_id"), _path, option=None)
    device_tree: Path = key(Path("/proc/device-tree"), _path, option=None)
    grubenv_backend: str = key("python", _choice(GRUBENV_BACKENDS), option=None)
    log_format: str = key("auto", _choice(LOG_FORMATS), option=None)


#: the keys, in the order of ``--help`` and ``config show``
KEYS: tuple[attrs.Attribute[Any], ...] = tuple(attrs.fields(Settings))
#: key -> parser (text to value, ValueError with the reason)
PARSERS: dict[str, Callable[[str], Any]] = {k.name: k.metadata["parse"] for k in KEYS}
#: keys a config file may not set (it would have to name itself)
NOT_IN_FILE = frozenset(k.name for k in KEYS if not k.metadata["in_file"])
#: how to fix a bad value, per key (for the error line)
HINTS: dict[str, str] = {k.name: k.metadata["hint"] for k in KEYS if k.metadata["hint"]}


def options_of(command: str) -> tuple[attrs.Attribute[Any], ...]:
    """The keys that are options of ``command`` (``GLOBAL``: the global options)."""
    return tuple(k for k in KEYS if k.metadata["option"] == command)


def _unknown(key: str, where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, list(PARSERS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(PARSERS)
    return ConfigError(f"{where}: unknown key {key!r}", way_out=hint)


def parse_value(key: str, raw: str, where: str) -> Any:
    """Parse ``raw`` for ``key`` or raise ConfigError naming ``where``."""
    try:
        return PARSERS[key](raw)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: bad value for {key}: {exc}", way_out=HINTS.get(key, "fix or remove it")
        ) from None


# --------------------------------------------------------------------------- sources


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_conf(text: str, source: str) -> dict[str, Any]:
    """Parse update.conf text; keys are checked and values parsed. Later lines win."""
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        if "=" not in stripped:
            raise ConfigError(
                f"{where}: expected key=value, got {stripped!r}", way_out="write it as key=value"
            )
        key, _, raw = stripped.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if "-" in key and key.replace("-", "_") in PARSERS:
            raise ConfigError(
                f"{where}: {key!r} is written with dashes",
                way_out=f"use {key.replace('-', '_')}= (flags use dashes, the file underscores)",
            )
        if key not in PARSERS:
            raise _unknown(key, where)
        if key in NOT_IN_FILE:
            raise ConfigError(
                f"{where}: {key}= cannot be set in a config file",
                way_out="use --config or KUBESOLO_UPDATE_CONFIG",
            )
        values[key] = parse_value(key, _unquote(raw.strip()), where)
    return values


def read_conf(path: Path, *, required: bool) -> dict[str, Any]:
    """Read update.conf at ``path``; a missing file is fine unless ``required``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"config file {path} does not exist",
                way_out="create it, or point --config / KUBESOLO_UPDATE_CONFIG elsewhere",
            ) from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"config file {path} cannot be read: {reason}",
            way_out="fix its permissions or encoding (UTF-8), or use --config",
        ) from None
    return parse_conf(text, str(path))


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``KUBESOLO_UPDATE_*`` variables of ``environ``, checked and parsed."""
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in PARSERS:
            raise _unknown(key, f"environment variable {name}")
        values[key] = parse_value(key, raw, f"environment variable {name}")
    return values


def flag_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags given on the command line (None = not given), parsed like the other sources."""
    values: dict[str, Any] = {}
    for key, raw in flags.items():
        if raw is None:
            continue
        if key not in PARSERS:
            raise _unknown(key, "command line")
        flag = "--" + key.replace("_", "-")
        values[key] = parse_value(key, str(raw), f"option {flag}")
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the settings of one run: defaults < file < environment < flags.

    ``config`` is an already-parsed mapping layered between the file and the
    environment (library users pass their configuration this way); its
    values may be strings (parsed like the file) or typed values.
    """
    env = env_values(os.environ if environ is None else environ)
    cli = flag_values(flags or {})
    config_path = cli.get("config") or env.get("config")
    explicit = config_path is not None
    file_values = read_conf(Path(config_path or DEFAULT_CONFIG), required=explicit)
    mapping: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key not in PARSERS:
            raise _unknown(key, "configuration mapping")
        mapping[key] = (
            parse_value(key, value, "configuration mapping") if isinstance(value, str) else value
        )
    merged: dict[str, Any] = {**file_values, **mapping, **env, **cli}
    merged["config"] = Path(config_path or DEFAULT_CONFIG)
    if merged.get("slot_a") is not None and merged.get("slot_a") == merged.get("slot_b"):
        raise ConfigError(
            f"slot_a and slot_b are both {merged['slot_a']!r}",
            way_out="give the two slots different specs",
        )
    try:
        return Settings(**merged)
    except TypeError as exc:
        raise ConfigError(f"configuration: {exc}") from None


def conf_text(settings: Settings) -> str:
    """``settings`` as update.conf text (what ``config show`` prints)."""
    lines = []
    for key in PARSERS:
        if key in NOT_IN_FILE:
            continue
        value = getattr(settings, key)
        lines.append(f"{key}={'' if value is None else value}")
    return "\n".join(lines) + "\n"
