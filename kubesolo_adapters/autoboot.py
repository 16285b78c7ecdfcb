"""autoboot.txt, the Raspberry Pi firmware's boot-selector file: read and edited line-true.

The firmware (specs/BOOTLOADER-FACTS.md section 3) takes the committed
partition from ``[all] boot_partition`` and, in a tryboot with ``[all]
tryboot_a_b=1``, the trial one from ``[tryboot] boot_partition``. Later lines
override earlier ones within the sections that apply.

Editing keeps every line it does not need to change (comments, unknown keys,
other sections, CRLF line ends); a value is rewritten in the line that is in
effect, a missing one is added where it takes effect. The result is re-parsed
and must say what was meant, or :class:`~kubesolo_core.errors.CorruptInput`
is raised and nothing is to be written.
"""

from __future__ import annotations

import attrs

from kubesolo_core.errors import BootEnvError, CorruptInput

__all__ = ["AUTOBOOT_LIMIT", "AutobootSettings", "parse_autoboot", "render_autoboot"]

#: the firmware reads at most this many bytes of autoboot.txt
AUTOBOOT_LIMIT = 512


@attrs.frozen(kw_only=True)
class AutobootSettings:
    """What autoboot.txt says, as the firmware reads it.

    ``committed`` is the ``boot_partition`` in effect in a normal boot,
    ``trial`` the one in effect in a tryboot (the same as ``committed`` when
    no ``[tryboot]`` section sets one). None: not set at all. A value that is
    not a number reads as 0 ("the first bootable partition").
    """

    committed: int | None
    trial: int | None
    tryboot_a_b: bool


def _section(line: str) -> str | None:
    text = line.strip()
    if text.startswith("[") and text.endswith("]"):
        return text[1:-1].strip().lower()
    return None


def _key_value(line: str) -> tuple[str, str] | None:
    text = line.strip()
    if not text or text.startswith("#") or "=" not in text:
        return None
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def _as_int(value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        return 0


def _applies(section: str, context: str) -> bool:
    # Lines before any section header apply everywhere, as in config.txt.
    if context == "all":
        return section == "all"
    return section in ("all", "tryboot")


def _walk(lines: list[str]) -> list[tuple[int, str, str, str]]:
    """(index, section, key, value) for every setting line."""
    out = []
    section = "all"
    for index, line in enumerate(lines):
        header = _section(line)
        if header is not None:
            section = header
            continue
        kv = _key_value(line)
        if kv is not None:
            out.append((index, section, kv[0], kv[1]))
    return out


def _effective(lines: list[str], key: str, context: str) -> tuple[int, str] | None:
    """(line index, value) of the line that decides ``key`` in ``context``."""
    found = None
    for index, section, name, value in _walk(lines):
        if name == key and _applies(section, context):
            found = (index, value)
    return found


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_autoboot(text: str) -> AutobootSettings:
    """The settings in effect in ``text`` (unknown lines ignored)."""
    lines = _split(text)
    committed = _effective(lines, "boot_partition", "all")
    trial = _effective(lines, "boot_partition", "tryboot")
    ab = _effective(lines, "tryboot_a_b", "all")
    return AutobootSettings(
        committed=None if committed is None else _as_int(committed[1]),
        trial=None if trial is None else _as_int(trial[1]),
        tryboot_a_b=ab is not None and ab[1] == "1",
    )


def _set_line(lines: list[str], index: int, key: str, value: str) -> None:
    old = lines[index]
    indent = old[: len(old) - len(old.lstrip())]
    cr = "\r" if old.endswith("\r") else ""
    lines[index] = f"{indent}{key}={value}{cr}"


def _insert_all(lines: list[str], key: str, value: str, cr: str) -> None:
    # Add where it takes effect in a normal boot and cannot override the
    # [tryboot] value: at the end of the last [all] stretch before [tryboot].
    section = "all"
    explicit_all = False
    insert_at: int | None = None
    for index, line in enumerate(lines):
        header = _section(line)
        if header is not None:
            if header == "tryboot":
                break
            section = header
            explicit_all = explicit_all or header == "all"
            continue
        if section == "all" and (explicit_all or _key_value(line) is not None):
            insert_at = index + 1
    if insert_at is None:
        lines[0:0] = [f"[all]{cr}", f"{key}={value}{cr}"]
    else:
        lines.insert(insert_at, f"{key}={value}{cr}")


def render_autoboot(
    text: str, *, committed: int, trial: int, tryboot_a_b: bool, source: str = "autoboot.txt"
) -> str:
    """``text`` edited so that its settings are exactly these; everything else kept.

    Raises :class:`CorruptInput` when the file's layout makes that impossible
    (an ``[all]`` value after ``[tryboot]`` overriding it, say) and
    :class:`BootEnvError` when the result would not fit 512 bytes.
    """
    lines = _split(text)
    cr = "\r" if any(line.endswith("\r") for line in lines) else ""
    wanted_ab = "1" if tryboot_a_b else "0"
    for key, value in (("tryboot_a_b", wanted_ab), ("boot_partition", str(committed))):
        found = _effective(lines, key, "all")
        if found is None:
            if key == "tryboot_a_b" and not tryboot_a_b:
                continue  # absent already means off
            _insert_all(lines, key, value, cr)
        elif found[1] != value:
            _set_line(lines, found[0], key, value)
    found_trial = None
    for index, section, name, _ in _walk(lines):
        if name == "boot_partition" and section == "tryboot":
            found_trial = index
    if found_trial is not None:
        _set_line(lines, found_trial, "boot_partition", str(trial))
    else:
        lines.extend([f"[tryboot]{cr}", f"boot_partition={trial}{cr}"])
    result = "".join(f"{line}\n" for line in lines)
    got = parse_autoboot(result)
    if (got.committed, got.trial, got.tryboot_a_b) != (committed, trial, tryboot_a_b):
        raise CorruptInput(
            f"{source}: cannot set boot_partition={committed} and [tryboot] "
            f"boot_partition={trial} in this layout (it would read as committed="
            f"{got.committed}, trial={got.trial}, tryboot_a_b={int(got.tryboot_a_b)}); "
            "nothing was written",
            way_out="rewrite autoboot.txt as [all] tryboot_a_b=1, boot_partition=N, "
            "then [tryboot] boot_partition=M (deploy/autoboot.txt)",
        )
    size = len(result.encode("utf-8", "surrogateescape"))
    if size > AUTOBOOT_LIMIT:
        raise BootEnvError(
            f"{source}: the edited file would be {size} bytes, the firmware reads only "
            f"{AUTOBOOT_LIMIT}; nothing was written",
            way_out="remove comments or unused lines from autoboot.txt",
        )
    return result
