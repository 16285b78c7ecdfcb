"""Configuration: defaults < update.conf < ``KUBESOLO_UPDATE_<KEY>`` < command-line flags.

Every global flag ``--some-thing`` is also the update.conf key ``some_thing=``
and the environment variable ``KUBESOLO_UPDATE_SOME_THING`` (``--config`` only
as a flag or the variable: a config file cannot name another). A few keys
have no flag because they only matter on unusual boxes or in tests
(``boot_id``, ``device_tree``, ``grubenv_backend``, ``settle_timeout``,
``lock_wait``, ``log_format``, ``adaptive``); the healthcheck keys (``healthcheck_url``,
``auto_rollback_after``, ``kube_system_settle``) are also flags of the
``healthcheck`` command.

update.conf is ``key=value`` lines; ``#`` starts a comment line; blanks around
``=`` are ignored and a value may be wrapped in single or double quotes, so
the file can also be sourced by a shell. An empty value resets an optional
key (``kubeconfig=``) to "unset". A missing default file is fine (all
defaults); a missing file named with ``--config`` is an error.

Lines end at ``\n`` only (a ``\r\n`` file is fine): a carriage return, a
vertical tab or a Unicode line separator inside a line is not a line break
here, as it is not for the shell, so it cannot smuggle a second key into the
file; it is a control character, and no value of any source (file,
variable, flag, cloud-init, library mapping) may hold one. The writer
(:func:`conf_line`, used by ``config show`` and cloud-init) quotes where the
reader would otherwise strip, and refuses what it cannot write so that the
reader reads back exactly what was written.

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
from kubesolo_entrypoints import confvalues as v

DEFAULT_CONFIG = Path("/etc/kubesolo/update.conf")
ENV_PREFIX = "KUBESOLO_UPDATE_"
BOOTLOADERS = ("grub", "tryboot", "auto")
GRUBENV_BACKENDS = ("python", "grub-editenv")
LOG_FORMATS = ("auto", "console", "json")
#: where the release document may come from; the health probe is http(s) only
SERVER_SCHEMES = ("https", "http", "file")
PROBE_SCHEMES = ("http", "https")
#: update.conf is a few hundred bytes; anything this big is not one
MAX_CONF_BYTES = 1 << 20


# --------------------------------------------------------------------------- the table of keys

#: where a key is also an option of the CLI: the global options, or a command's
GLOBAL = "global"


def key(
    default: Any = attrs.NOTHING,
    parse: Callable[[str], Any] = v.path,
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
        DEFAULT_CONFIG, v.path, f"update.conf [default: {DEFAULT_CONFIG}]", metavar="PATH",
        in_file=False,
    )  # fmt: skip
    state: Path = key(
        Path("/var/lib/kubesolo/update/state.json"), v.path,
        "state file [default: /var/lib/kubesolo/update/state.json]", metavar="PATH",
    )  # fmt: skip
    server: str | None = key(
        None, v.url_of(SERVER_SCHEMES),
        "the TUF repository (https, http, file); with allow_unsigned=true and no trust root, "
        "a plain release document",
        metavar="URL",
        hint="e.g. server=https://updates.example.com/ (a TUF repository; with "
        "allow_unsigned=true a release document URL)",
    )  # fmt: skip
    bootloader: str = key(
        "auto", v.choice(BOOTLOADERS), "[default: auto]", metavar="grub|tryboot|auto",
        hint="use grub, tryboot or auto",
    )  # fmt: skip
    grubenv: Path = key(
        Path("/boot/grub/grubenv"), v.path, "GRUB env block [default: /boot/grub/grubenv]",
        metavar="PATH",
    )  # fmt: skip
    autoboot: Path = key(
        Path("/boot/firmware/autoboot.txt"), v.path,
        "autoboot.txt of the tryboot selector partition [default: /boot/firmware/autoboot.txt]",
        metavar="PATH",
    )  # fmt: skip
    slot_a: str = key(
        "PARTLABEL=KSOLOA", v.slot_spec,
        "PARTLABEL=NAME (GPT partition name), LABEL=NAME (filesystem label), "
        "a block device or an image file [default: PARTLABEL=KSOLOA]",
        metavar="SPEC",
        hint="e.g. slot_a=PARTLABEL=KSOLOA, slot_a=LABEL=KSOLOA or slot_a=/dev/sda2",
    )  # fmt: skip
    slot_b: str = key(
        "PARTLABEL=KSOLOB", v.slot_spec, "as --slot-a [default: PARTLABEL=KSOLOB]", metavar="SPEC",
        hint="e.g. slot_b=PARTLABEL=KSOLOB, slot_b=LABEL=KSOLOB or slot_b=/dev/sda3",
    )  # fmt: skip
    # trust (DESIGN.md 5): a TUF root, or unsigned only when asked for by name
    trust_root: Path | None = key(
        None, v.optional_path,
        "TUF root.json shipped in the OS image; --server is then the repository "
        "(unsigned release documents only with allow_unsigned=true in update.conf)",
        metavar="PATH",
        hint="e.g. trust_root=/etc/kubesolo/root.json (the repository's 1.root.json)",
    )  # fmt: skip
    channel: str = key("stable", v.channel, option=None, hint="e.g. channel=stable")
    allow_unsigned: bool = key(
        False, v.boolean, option=None,
        hint="true or false (true only for labs: releases are then not verified)",
    )  # fmt: skip
    cmdline: Path = key(
        Path("/proc/cmdline"), v.path,
        "kernel command line; kubesolo.slot=A|B names the booted slot [default: /proc/cmdline]",
        metavar="PATH",
    )  # fmt: skip
    kubeconfig: Path | None = key(
        None, v.optional_path, "none reachable = the Kubernetes checks are 'unavailable'",
        metavar="PATH",
    )  # fmt: skip
    node_name: str = key(
        parse=v.node_name, help="[default: the host name]", metavar="NAME",
        factory=v.default_node_name,
    )  # fmt: skip
    containerd_socket: Path = key(
        Path("/run/containerd/containerd.sock"), v.path,
        "[default: /run/containerd/containerd.sock]", metavar="PATH",
    )  # fmt: skip
    data_dir: Path = key(
        Path("/var/lib/kubesolo"), v.path,
        "the disk-writable probe lives here [default: /var/lib/kubesolo]", metavar="PATH",
    )  # fmt: skip
    # the healthcheck command's own options
    healthcheck_url: str | None = key(
        None, v.url_of(PROBE_SCHEMES), "Operator probe that must answer 200.", metavar="URL",
        option="healthcheck",
        hint="an http(s) URL, e.g. healthcheck_url=http://127.0.0.1:8080/healthz",
    )  # fmt: skip
    auto_rollback_after: int = key(
        0, v.nonneg_int, "Roll back after N failed checks of a trial (0 = off) [default: 0]",
        metavar="N", option="healthcheck", hint="a count of failed health checks, 0 = off",
    )  # fmt: skip
    kube_system_settle: float = key(
        30.0, v.nonneg_float, "kube-system pods must hold Running this long [default: 30]",
        metavar="SECONDS", option="healthcheck", hint="seconds, e.g. 30",
    )  # fmt: skip
    # keys without an option: they only matter on unusual boxes or in tests
    settle_timeout: float = key(300.0, v.nonneg_float, option=None, hint="seconds, e.g. 300")
    lock_wait: float = key(30.0, v.nonneg_float, option=None, hint="seconds, e.g. 30")
    boot_id: Path = key(Path("/proc/sys/kernel/random/boot_id"), v.path, option=None)
    device_tree: Path = key(Path("/proc/device-tree"), v.path, option=None)
    grubenv_backend: str = key("python", v.choice(GRUBENV_BACKENDS), option=None)
    log_format: str = key("auto", v.choice(LOG_FORMATS), option=None)
    adaptive: bool = key(
        True, v.boolean, option=None,
        hint="true (chunks when a release offers them) or false (always the full image)",
    )  # fmt: skip


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
        return PARSERS[key](v.check_text(raw))
    except ValueError as exc:
        raise ConfigError(
            f"{where}: bad value for {key}: {exc}", way_out=HINTS.get(key, "fix or remove it")
        ) from None


# --------------------------------------------------------------------------- sources


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def conf_pairs(text: str, source: str) -> list[tuple[str, str, str]]:
    """The ``(key, raw value, where)`` of each setting line of update.conf text, in order.

    Keys are checked; values are unquoted but not parsed. A line ends at
    ``\n`` only (see the module docstring).
    """
    pairs: list[tuple[str, str, str]] = []
    text = text.removeprefix("\ufeff")  # a BOM some editors write
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")  # noqa: PLW2901  (a CRLF file)
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        if "=" not in stripped:
            raise ConfigError(
                f"{where}: expected key=value, got {v.shown(stripped)}",
                way_out="write it as key=value",
            )
        key, _, raw = stripped.partition("=")
        key = key.strip(" \t")
        if key.startswith("export "):
            key = key[len("export ") :].strip(" \t")
        if "-" in key and key.replace("-", "_") in PARSERS:
            raise ConfigError(
                f"{where}: {key!r} is written with dashes",
                way_out=f"use {key.replace('-', '_')}= (flags use dashes, the file underscores)",
            )
        if key not in PARSERS:
            raise _unknown(key if len(key) <= 40 else key[:40] + "...", where)
        if key in NOT_IN_FILE:
            raise ConfigError(
                f"{where}: {key}= cannot be set in a config file",
                way_out="use --config or KUBESOLO_UPDATE_CONFIG",
            )
        pairs.append((key, _unquote(raw.strip(" \t")), where))
    return pairs


def parse_conf(text: str, source: str) -> dict[str, Any]:
    """Parse update.conf text; keys are checked and values parsed. Later lines win."""
    return {key: parse_value(key, raw, where) for key, raw, where in conf_pairs(text, source)}


def conf_line(key: str, value: str, where: str = "update.conf") -> str:
    """The update.conf line for ``key`` = ``value`` that :func:`conf_pairs` reads back exactly.

    Quotes a value the reader would otherwise change (surrounding blanks, a
    quoted-looking value); raises ConfigError for what no line can carry
    (control characters, line breaks).
    """
    try:
        v.check_text(value)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: cannot write {key}: {exc}", way_out=HINTS.get(key, "fix the value")
        ) from None
    line = f"{key}={value}"
    if value != value.strip(" \t") or _unquote(value) != value:
        line = f'{key}="{value}"'
    read = conf_pairs(line, where)
    if read != [(key, value, f"{where}:1")]:  # never emit what reads back differently
        raise ConfigError(f"{where}: {key}={v.shown(value)} cannot be written to update.conf")
    return line


def read_conf(path: Path, *, required: bool) -> dict[str, Any]:
    """Read update.conf at ``path``; a missing file is fine unless ``required``."""
    from kubesolo_adapters.inputs import read_input

    try:
        text = read_input(path, limit=MAX_CONF_BYTES, allow_null=True).decode("utf-8")
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
            way_out="point --config / KUBESOLO_UPDATE_CONFIG at a regular UTF-8 file",
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
            raise _unknown(str(key), "configuration mapping")
        # Typed values (a Path, an int) are checked by the same parser as text;
        # a list, a dict or bytes has no one text form: refused, not str()-ed.
        if value is not None and not isinstance(value, str | int | float | os.PathLike):
            raise ConfigError(
                f"configuration mapping key {key!r}: a {type(value).__name__} is not a value "
                "of update.conf",
                way_out="give text, a number, a boolean or a path",
            )
        text = "" if value is None else value if isinstance(value, str) else str(value)
        mapping[key] = parse_value(key, text, f"configuration mapping key {key!r}")
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


def conf_values(settings: Settings) -> dict[str, Any]:
    """``settings`` as JSON values, key by key (what ``config show --json`` prints)."""
    values: dict[str, Any] = {}
    for key in PARSERS:
        if key in NOT_IN_FILE:
            continue
        value = getattr(settings, key)
        plain = value is None or isinstance(value, bool | int | float | str)
        values[key] = value if plain else str(value)
    return values


def conf_text(settings: Settings) -> str:
    """``settings`` as update.conf text (what ``config show`` prints)."""
    lines = [
        conf_line(key, "" if value is None else str(value), "config show")
        for key, value in conf_values(settings).items()
    ]
    return "\n".join(lines) + "\n"
