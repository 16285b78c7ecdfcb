"""Fuzzing every parser and text entry point (issue 8): only our domain errors, ever.

Each test feeds one parser :data:`~tests.unit.fuzzing.FUZZ_EXAMPLES` inputs
(10,000 in CI): random bytes or text, and valid documents with random
edits. Whatever the input, the parser returns a value or raises a
:class:`~kubesolo_core.errors.KubesoloError`; a ValueError, RecursionError,
UnicodeError or a library's own exception is a bug (a traceback on an
operator's screen), and hypothesis shrinks it to the smallest input. Some
tests also check a property of what is accepted (a URL that passes the
validator is one urllib and httpx accept too; a version orders like its
numbers). The number of examples per parser and the time it took are
printed at the end of the run.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kubesolo_adapters import autoboot, fsversion, grubenv
from kubesolo_adapters.bootfacts import slot_from_cmdline
from kubesolo_core.codec import dumps_state, loads_state, looks_like_state
from kubesolo_core.errors import KubesoloError
from kubesolo_core.release import parse_release
from kubesolo_core.slots import Slot
from kubesolo_core.urls import check_image_url, check_url
from kubesolo_core.versions import Version
from kubesolo_entrypoints import cloudinit, config, metrics
from tests.contract.state_suite import RICH
from tests.unit.fuzzing import (
    FUZZ,
    HOSTILE_PIECES,
    JSON_VALUES,
    SECONDS,
    mutated,
    only_domain_errors,
    text_of,
)

ANY_TEXT = st.text(max_size=120)
ANY_BYTES = st.binary(max_size=256)


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    start = time.perf_counter()
    yield
    name = request.node.name.removeprefix("test_fuzz_")
    SECONDS[name] = SECONDS.get(name, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------- release document

_VALID_RELEASE = json.dumps(
    {
        "schema": 1,
        "version": "1.3.0",
        "image": {
            "url": "kubesolo-os-1.3.0-amd64.img.gz",
            "sha256": "a" * 64,
            "size": 1000,
            "compression": "gzip",
            "raw_size": 4000,
            "raw_sha256": "b" * 64,
        },
        "min_from_version": "1.0.0",
    }
).encode()
_RELEASE_FIELDS = ["schema", "version", "min_from_version", "image"]
_IMAGE_FIELDS = ["url", "sha256", "size", "compression", "raw_size", "raw_sha256"]


@st.composite
def _release_docs(draw: st.DrawFn) -> object:
    doc = json.loads(_VALID_RELEASE)
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            doc[draw(st.sampled_from(_RELEASE_FIELDS))] = draw(JSON_VALUES)
        elif isinstance(doc.get("image"), dict):
            doc["image"][draw(st.sampled_from(_IMAGE_FIELDS))] = draw(
                JSON_VALUES | st.text(max_size=80) | st.integers()
            )
    return doc


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(_VALID_RELEASE), _release_docs()))
@example(b"[" * 100_000)
@example(_VALID_RELEASE.replace(b'"1.3.0"', b'"' + b"9" * 5000 + b'"'))
def test_fuzz_release_document(data: object) -> None:
    def run() -> object:
        release = parse_release(data)  # type: ignore[arg-type]
        check_image_url("https://updates.example.com/r.json", release.image.url)
        return release

    only_domain_errors("release_document", run)


# --------------------------------------------------------------------------- grubenv

_VALID_BLOCK = grubenv.set_vars(
    grubenv.create(), {"active_slot": "A", "boot_counter": "3", "boot_success": "1"}
)


@FUZZ
@given(
    st.one_of(ANY_BYTES, mutated(_VALID_BLOCK, max_edits=6)),
    st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=3),
    st.lists(st.text(max_size=12), max_size=2),
)
def test_fuzz_grubenv_block(block: bytes, assign: dict[str, str], drop: list[str]) -> None:
    def run() -> None:
        pairs = grubenv.parse(block, source="fuzz")
        grubenv.last_wins(pairs)
        edited = grubenv.set_vars(block, assign, source="fuzz")
        assert len(edited) == len(block)  # the block never grows or shrinks
        grubenv.parse(edited, source="edited")  # and stays a block we can read
        grubenv.unset_vars(edited, drop, source="fuzz")

    only_domain_errors("grubenv_block", run)


# --------------------------------------------------------------------------- autoboot.txt

_VALID_AUTOBOOT = b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"


@FUZZ
@given(
    text_of(st.one_of(ANY_BYTES, mutated(_VALID_AUTOBOOT, max_edits=6))),
    st.integers(1, 64),
    st.integers(1, 64),
    st.booleans(),
)
def test_fuzz_autoboot_txt(text: str, committed: int, trial: int, ab: bool) -> None:
    def run() -> None:
        autoboot.parse_autoboot(text)
        out = autoboot.render_autoboot(text, committed=committed, trial=trial, tryboot_a_b=ab)
        got = autoboot.parse_autoboot(out)
        assert (got.committed, got.trial, got.tryboot_a_b) == (committed, trial, ab)

    only_domain_errors("autoboot_txt", run)


# --------------------------------------------------------------------------- state.json

_VALID_STATE = dumps_state(RICH).encode()


@st.composite
def _state_docs(draw: st.DrawFn) -> bytes:
    doc = json.loads(_VALID_STATE)
    for _ in range(draw(st.integers(1, 3))):
        doc[draw(st.sampled_from(sorted(doc)))] = draw(JSON_VALUES | st.text(max_size=80))
    return json.dumps(doc).encode()


@FUZZ
@given(st.one_of(ANY_BYTES, mutated(_VALID_STATE), _state_docs()))
@example(b'{"schema_version": 2, "attempt_count": ' + b"9" * 5000 + b"}")
@example(b"[" * 100_000)
def test_fuzz_state_json(data: bytes) -> None:
    def run() -> None:
        looks_like_state(data)
        state = loads_state(data, source="fuzz")
        assert loads_state(dumps_state(state)) == state  # what loads, saves and loads again

    only_domain_errors("state_json", run)


# --------------------------------------------------------------------------- update.conf

_VALID_CONF = (
    b"# update.conf\nserver=https://updates.example.com/r.json\nslot_b=PARTLABEL=KSOLOB\n"
    b"auto_rollback_after=3\nkube_system_settle='45'\nexport node_name=edge-1\n"
)


@FUZZ
@given(text_of(st.one_of(ANY_BYTES, mutated(_VALID_CONF, max_edits=6))))
def test_fuzz_update_conf(text: str) -> None:
    def run() -> None:
        values = config.parse_conf(text, "fuzz.conf")
        # what parses, writes back and parses the same
        settings = config.load_settings({"config": "/dev/null"}, {}, config=dict(values))
        assert config.parse_conf(config.conf_text(settings), "again") is not None

    only_domain_errors("update_conf", run)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(config.PARSERS)), ANY_TEXT, max_size=4))
def test_fuzz_environment_and_flags(values: dict[str, str]) -> None:
    environ = {config.ENV_PREFIX + k.upper(): v for k, v in values.items() if "\x00" not in v}

    def run() -> None:
        config.env_values(environ)
        config.flag_values(values)

    only_domain_errors("environment_and_flags", run)


# --------------------------------------------------------------------------- cloud-init

_VALID_USERDATA = b"""#cloud-config
hostname: edge
x: &srv
  server: https://updates.example.com/stable/release.json
updates:
  <<: *srv
  auto_rollback_after: 3
  kube_system_settle: 45  # seconds
  healthcheck_url: "http://127.0.0.1:8080/healthz"
  slot_b: PARTLABEL=KSOLOB
write_files:
  - path: /etc/motd
    content: |
      hello
"""
_YAML_SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from([b.decode("latin-1") for b in HOSTILE_PIECES]),
)


@st.composite
def _updates_yaml(draw: st.DrawFn) -> str:
    # JSON is YAML's flow style: json.dumps writes any value as YAML (and fast).
    keys = st.sampled_from([*sorted(config.PARSERS), "sever", "slot-b"]) | st.text(max_size=8)
    updates = draw(st.dictionaries(keys, _YAML_SCALARS | JSON_VALUES, max_size=4))
    ascii_only = draw(st.booleans())
    lines = [
        f"  {json.dumps(k, ensure_ascii=ascii_only)}: {json.dumps(v, ensure_ascii=ascii_only)}"
        for k, v in updates.items()
    ]
    return "#cloud-config\nupdates:\n" + "\n".join(lines) + "\n"


@FUZZ
@given(
    st.one_of(text_of(ANY_BYTES), text_of(mutated(_VALID_USERDATA, max_edits=6)), _updates_yaml())
)
@example("a: &a [x, x]\nb: &b [*a, *a, *a]\nupdates: *b\n")
@example("updates: !!python/object/apply:os.system ['true']\n")
@example("updates:\n  auto_rollback_after: " + "9" * 5000 + "\n")
def test_fuzz_cloud_init(text: str) -> None:
    def run() -> None:
        doc = cloudinit.load_userdata(text, "fuzz")
        updates = doc.get("updates")
        if isinstance(updates, dict):
            written = cloudinit.conf_from_mapping(updates, "fuzz: updates")
            config.parse_conf(written, "written")  # the writer's output always reads back

    only_domain_errors("cloud_init", run)


# --------------------------------------------------------------------------- versions

_VERSION_CHARS = st.sampled_from(list("0123456789.-+vVaZ \n\u0661\u00b2"))


@FUZZ
@given(
    st.one_of(ANY_TEXT, st.text(_VERSION_CHARS, max_size=80)), st.text(_VERSION_CHARS, max_size=20)
)
@example("1" * 5000, "1.0")
def test_fuzz_versions(text: str, other: str) -> None:
    def run() -> None:
        version = Version.parse(text)
        assert len(version.text) <= 64 and all(n < 10**9 for n in version.numbers)
        try:
            second = Version.parse(other)
        except KubesoloError:
            return
        assert (version < second) + (version == second) + (second < version) == 1

    only_domain_errors("versions", run)


# --------------------------------------------------------------------------- URLs

_URL_CHARS = st.sampled_from(list("abcAZ019:/?#[]@!$&'()*+,;=%-._~ \x00\x7f\u00e4\u2028\r\n\\{}"))
_URL_PARTS = st.lists(
    st.sampled_from(
        ["http://", "https://", "file://", "ftp://", "[", "]", "::1", ":", "@", "127.0.0.1",
         "example.com", "/", "%", "%41", "99999", "0", "65535", "?q", "#f", "..", "xn--a"]
    ) | st.text(_URL_CHARS, max_size=4),
    max_size=10,
).map("".join)  # fmt: skip


@FUZZ
@given(st.one_of(ANY_TEXT, st.text(_URL_CHARS, max_size=60), _URL_PARTS))
@example("http://[::1/release.json")
@example("http://127.0.0.1:99999/r.json")
def test_fuzz_urls(text: str) -> None:
    """What the validator accepts, urllib and httpx accept too (no traceback later)."""

    def run() -> None:
        url = check_url(text, schemes=("https", "http", "file"))
        parts = urllib.parse.urlsplit(url)
        _ = parts.port, parts.hostname  # raise ValueError on a bad port or bracket
        if parts.scheme.lower() in ("http", "https"):
            httpx.URL(url)  # raises httpx.InvalidURL on what it cannot send
            assert parts.hostname
        joined = urllib.parse.urljoin(url, "image.img")
        check_url(joined, schemes=("https", "http", "file"))
        check_url(text, relative=True)

    only_domain_errors("urls", run)


# --------------------------------------------------------------------------- slot specs

_SPEC_CHARS = st.sampled_from(list("PARTLABELKSOB=/dev/sda0123 .\n\t\x00\u2028-_"))


@FUZZ
@given(st.one_of(ANY_TEXT, st.text(_SPEC_CHARS, max_size=40)))
@example("LABEL=")
@example("PARTLABEL=KSOLO B")
def test_fuzz_slot_specs(text: str) -> None:
    def run() -> None:
        a = config.parse_value("slot_a", text, "option --slot-a")
        assert a == a.strip() and a

    only_domain_errors("slot_specs", run)


# --------------------------------------------------------------------------- smaller entry points


def _superblock(label: bytes) -> bytes:
    """The first 2 KiB of an ext filesystem (magic, label), then FAT boot sectors."""
    head = bytearray(2048)
    head[1024 + 0x38 : 1024 + 0x3A] = b"\x53\xef"
    head[1024 + 0x78 : 1024 + 0x78 + len(label)] = label
    return bytes(head)


_FAT = bytearray(512)
_FAT[0x36:0x39] = b"FAT"
_FAT[0x16:0x18] = b"\x01\x00"
_FAT[0x2B:0x36] = b"KSOLOEFI   "
_FAT[510:512] = b"\x55\xaa"


@FUZZ
@given(
    text_of(ANY_BYTES),
    ANY_TEXT,
    st.one_of(ANY_BYTES, mutated(_superblock(b"KSOLOA")), mutated(bytes(_FAT))),
    st.one_of(ANY_BYTES, mutated(b"1.3.0\n"), st.just(b"")),
)
@example("kubesolo.slot=\u00b2", "127.0.0.1:\u00b2", b"", b"")
@example("", "[::1]:" + "9" * 5000, b"", b"")
def test_fuzz_small_entry_points(cmdline: str, listen: str, head: bytes, version: bytes) -> None:
    """Kernel command line, --listen, a slot's superblock and its /version file."""

    def run() -> None:
        slot_from_cmdline(cmdline)
        Slot.parse(cmdline[:4])
        fsversion.probe_filesystem(head)
        fsversion._version_text(version)
        metrics.parse_listen(listen)

    only_domain_errors("small_entry_points", run)
