"""CI checks of the Zeek package where no Zeek binary exists.

What this owns: every `.zeek` file in the repository (the package in `zeek_scripts/`, the examples in
`rules/zeek/`, the btest suite in `tests/zeek/`) must parse with `zeek-script parse` and be left unchanged by
`zeek-format`; the package's wire declarations (events, argument names and types in order, topics) must equal the
Zeek <-> sidecar contract in the repository's design document (docs/design.md; PACKETCLIP_DESIGN_DOC names another
file), and, where the project's shared design notes lie beside the checkout (../shared/docs/DESIGN.md), that
contract too; and the btest suite's capture and baselines must agree with each other.

What it does not own: running Zeek. The btest suite (`zkg test`, or `cd tests/zeek && btest -d`) does that where
Zeek is installed; `zeek-script` checks syntax only, so unknown identifiers and wrong types pass here.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from packetclip.output import LOG_PATH, ZEEK_FIELDS, ZeekWriter

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The wire contract the package follows: the repository's own design document, unless the environment names another.
DESIGN_DOC = Path(os.environ.get("PACKETCLIP_DESIGN_DOC", REPO_ROOT / "docs" / "design.md"))
# The project's shared design notes, where a checkout has them beside it: the package must follow them as well.
SHARED_DESIGN_DOC = REPO_ROOT.parent / "shared" / "docs" / "DESIGN.md"
PACKAGE_DIR = REPO_ROOT / "zeek_scripts"
# The package's scripts, one per concern, in the order __load__.zeek loads them.
PACKAGE_SCRIPTS = ("transport", "collection", "notices", "log", "websocket", "offline")
TRANSPORT_SCRIPT = PACKAGE_DIR / "transport.zeek"  # the wire: events, topics, shards, pending requests
COLLECTION_SCRIPT = PACKAGE_DIR / "collection.zeek"  # each connection's first frames
NOTICES_SCRIPT = PACKAGE_DIR / "notices.zeek"  # notices, allow_* options
LOG_SCRIPT = PACKAGE_DIR / "log.zeek"  # packetclip.log
STAND_IN = REPO_ROOT / "tests" / "zeek_peer" / "script_stand_in.py"
BTEST_DIR = REPO_ROOT / "tests" / "zeek"
SCRIPT_DIRS = (PACKAGE_DIR, REPO_ROOT / "rules" / "zeek", BTEST_DIR)

# The suite's capture and the options its baselines assume (the package defaults).
SMALL_CAPTURE = BTEST_DIR / "traces" / "packetclip-small.pcap"
MAX_CAPTURE_BYTES = 8 * 1024  # committed captures stay a few kB
MAX_PACKETS = 30
SNAPLEN = 192

TOOL_TIMEOUT_S = 60


def zeek_files() -> list[Path]:
    files = sorted(p for d in SCRIPT_DIRS for p in d.rglob("*.zeek") if ".tmp" not in p.parts)
    return files


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]', package zeekscript)")
    return path


def test_every_package_part_has_scripts() -> None:
    """The discovery below really finds the package, the examples and the btests (an empty glob would pass)."""
    files = zeek_files()
    for directory in SCRIPT_DIRS:
        assert any(directory in f.parents for f in files), f"no .zeek files under {directory}"
    assert (PACKAGE_DIR / "__load__.zeek").is_file()


@pytest.mark.parametrize("script", zeek_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_parses(script: Path) -> None:
    """zeek-script exits 0 only for a parse tree without erroneous nodes (1: hard error, 2: error nodes)."""
    tool = require_tool("zeek-script")
    result = subprocess.run(
        [tool, "parse", "--quiet", str(script)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
    )
    assert result.returncode == 0, f"{script}: zeek-script parse exit {result.returncode}\n{result.stderr}"


@pytest.mark.parametrize("script", zeek_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_is_zeek_format_clean(script: Path) -> None:
    """zeek-format prints the formatted script on stdout; a clean script comes back byte for byte."""
    tool = require_tool("zeek-format")
    result = subprocess.run([tool, str(script)], capture_output=True, timeout=TOOL_TIMEOUT_S)
    assert result.returncode == 0, f"{script}: zeek-format failed\n{result.stderr.decode(errors='replace')}"
    assert result.stdout == script.read_bytes(), (
        f"{script} is not zeek-format clean: run zeek-format -i on it"
    )


# --- the package's layout and exports ---------------------------------------------------------------------------

# What users may touch, per script: options and load-time constants, events, hooks, the request and log records,
# the log stream and the notice types. Everything else is module-internal.
EXPORTS = {
    "transport": {
        "request_topic",
        "num_shards",
        "verdict_topic_prefix",
        "control_topic",
        "node_name",
        "pending_expiry",
        "Request",
        "request",
        "verdict",
        "mission_scores",
        "allowed",
        "hello",
        "request_policy",
    },
    "collection": {"enable", "max_packets", "snaplen", "sample_rate", "max_wait"},
    "notices": {
        "Notice::Type",
        "notice_thresholds",
        "notice_suppress_for",
        "mission_thresholds",
        "allow_orig_nets",
        "allow_resp_nets",
        "allow_nets",
        "allow_resp_ports",
    },
    "log": {"Log::ID", "Info", "log_policy", "log_packetclip"},
    "websocket": {"listen_websocket", "websocket_address", "websocket_port"},
    "offline": {"wait_for_sidecar", "hello_timeout", "drain_timeout"},
}
# State and helpers the scripts share inside module PacketCLIP, never exported.
INTERNALS = (
    "pending",
    "hold_pending",
    "held_requests",
    "resent_uids",
    "Pending",
    "Collection",
    "collecting",
    "flush",
    "flush_all",
    "send_request",
    "resend_pending",
    "give_up",
    "this_node",
    "request_topic_for",
    "allowing_option",
    "capture_link_type",
    "waiting_for_hello",
    "draining",
    "register_counter",
    "counted",
)
# The package's counts, each a Telemetry counter (packetclip_<name>_total).
COUNTERS = {
    "requests_published",
    "requests_vetoed",
    "requests_expired",
    "requests_resent",
    "requests_without_link_type",
    "requests_lost",
    "verdicts_logged",
    "verdicts_allowed",
    "verdicts_unmatched",
    "verdicts_duplicate",
}
EXPORT_ITEM = re.compile(
    r"^\t(?:option (\w+)|const (\w+) .*&redef;|global (\w+): (?:event\(|hook\(|Log::PolicyHook;)"
    r"|type (\w+): record \{|redef enum ([\w:]+) \+= \{)"
)


def export_block(text: str) -> list[str]:
    """The lines inside a script's `export { ... }` block (none for a script without one)."""
    match = re.search(r"^export \{\n(.*?)^\}$", text, re.DOTALL | re.MULTILINE)
    return match.group(1).splitlines() if match else []


def exported_names(lines: list[str]) -> set[str]:
    """Names declared at the top level of an export block; fails on any declaration users may not touch."""
    names = set()
    for line in lines:
        if not line.startswith("\t") or line.startswith(("\t\t", "\t#", "\t ", "\t}")):
            continue  # continuation, record field, enum member, comment
        item = EXPORT_ITEM.match(line)
        assert item, f"not an option, constant, event, hook, record or enum users may touch: {line!r}"
        names.add(next(group for group in item.groups() if group))
    return names


def undocumented(lines: list[str]) -> list[str]:
    """Declarations of an export block (top-level items, record fields, enum members) without a `##` comment
    right above them. A `redef enum ... += {` line needs none (Zeek's idiom); its members do."""
    missing = []
    members = False  # inside a record's fields or an enum's members
    previous = ""
    for line in lines:
        code = line.strip()
        top_level = line.startswith("\t") and not line.startswith(("\t\t", "\t ", "\t#"))
        if top_level:
            if code.startswith("}"):
                members = False
            elif code.startswith("redef enum "):
                members = code.endswith("{")
            else:
                members = code.startswith("type ") and code.endswith("{")
                if not previous.strip().startswith("##"):
                    missing.append(code)
        elif (
            members
            and line.startswith("\t\t")
            and not line.startswith(("\t\t#", "\t\t "))
            and not previous.strip().startswith("##")
        ):
            missing.append(code)
        previous = line
    return missing


def test_load_order_is_one_script_per_concern() -> None:
    """__load__.zeek loads every script of the package, each once, in dependency order; zkg.meta points at them."""
    loaded = re.findall(r"^@load \./(\w+)$", (PACKAGE_DIR / "__load__.zeek").read_text(), re.MULTILINE)
    assert tuple(loaded) == PACKAGE_SCRIPTS
    on_disk = {p.stem for p in PACKAGE_DIR.glob("*.zeek")} - {"__load__"}
    assert on_disk == set(PACKAGE_SCRIPTS)
    assert re.search(r"^script_dir = zeek_scripts$", (REPO_ROOT / "zkg.meta").read_text(), re.MULTILINE)
    # each script loads only scripts loaded before it
    for position, (name, text) in enumerate(package_scripts().items()):
        for dependency in re.findall(r"^@load \./(\w+)$", text, re.MULTILINE):
            assert PACKAGE_SCRIPTS.index(dependency) < position, f"{name}.zeek loads {dependency}.zeek"


@pytest.mark.parametrize("name", PACKAGE_SCRIPTS)
def test_export_block_holds_only_what_users_touch(name: str) -> None:
    """Options, constants, events, hooks, records and enums, exactly the expected ones (users' redefs keep their
    PacketCLIP::... names), and every one of them, every record field and every notice type documented."""
    text = (PACKAGE_DIR / f"{name}.zeek").read_text()
    assert re.search(r"^module PacketCLIP;$", text, re.MULTILINE)
    lines = export_block(text)
    assert exported_names(lines) == EXPORTS[name]
    assert undocumented(lines) == []


def test_export_reader_can_fail() -> None:
    """The readers above reject an exported helper and find an undocumented field."""
    with pytest.raises(AssertionError):
        exported_names(["\t## Sends everything.", "\tglobal flush_all: function();"])
    with pytest.raises(AssertionError):
        exported_names(["\tglobal pending: table[string] of count;"])
    record = [
        "\t## A record.",
        "\ttype R: record {",
        "\t\t## Documented.",
        "\t\ta: count;",
        "\t\tb: count;",
        "\t};",
    ]
    assert undocumented(record) == ["b: count;"]


@pytest.mark.parametrize("internal", INTERNALS)
def test_internals_stay_in_the_module_body(internal: str) -> None:
    """The scripts' shared state and helpers are declared outside every export block."""
    declaration = re.compile(
        rf"^(?:global {internal}\b|type {internal}: |function {internal}\()", re.MULTILINE
    )
    declared_in = [name for name, text in package_scripts().items() if declaration.search(text)]
    assert len(declared_in) == 1, f"{internal} declared in {declared_in}"
    for name, text in package_scripts().items():
        assert internal not in exported_names(export_block(text)), f"{name}.zeek exports {internal}"


def test_counts_are_telemetry_counters() -> None:
    """Every count is a counter of Zeek's Telemetry framework named as the variable holding it, registered once,
    and never a plain number incremented by hand."""
    text = "\n".join(package_scripts().values())
    assert "@load base/frameworks/telemetry" in TRANSPORT_SCRIPT.read_text()
    assert "Telemetry::register_counter_family(Telemetry::MetricOpts(" in TRANSPORT_SCRIPT.read_text()
    registered = re.findall(r'^global (\w+) = register_counter\(\s*"(\w+)",', text, re.MULTILINE)
    assert sorted(variable for variable, _ in registered) == sorted(COUNTERS)
    assert all(variable == metric for variable, metric in registered)
    for counter in COUNTERS:
        assert f"Telemetry::counter_inc({counter}" in text, f"{counter} is never incremented"
        assert not re.search(rf"(\+\+{counter}\b|\b{counter} \+=|global {counter} = \d)", text), counter


def test_readers_of_the_counts_name_real_counters() -> None:
    """What reads the counts by name (the btests through `counted`, the stand-in's mirrored counts) names a
    registered counter: a typo would read 0 and pass."""
    read = set()
    for test in (BTEST_DIR / "tests").glob("*.zeek"):
        read |= set(re.findall(r'counted\("(\w+)"\)', test.read_text()))
    assert read and read <= COUNTERS
    mirrored = set(
        re.findall(r"^    ((?:requests|verdicts)_\w+): int = 0$", STAND_IN.read_text(), re.MULTILINE)
    )
    assert mirrored and mirrored <= COUNTERS


# --- the wire contract -------------------------------------------------------------------------------------------


def split_params(params: str) -> list[tuple[str, str]]:
    """'a: string, b: vector of double' -> [('a', 'string'), ('b', 'vector of double')], whitespace normalised."""
    pairs = []
    for part in " ".join(params.split()).split(","):
        name, _, type_name = part.partition(":")
        pairs.append((name.strip(), type_name.strip()))
    return pairs


def contract_docs() -> list[Path]:
    """Every document whose wire contract the package must follow: the design document, then the shared design
    notes when they exist and are another file."""
    docs = [DESIGN_DOC]
    if SHARED_DESIGN_DOC.is_file() and SHARED_DESIGN_DOC.resolve() != DESIGN_DOC.resolve():
        docs.append(SHARED_DESIGN_DOC)
    return docs


def contract_text(doc: Path) -> str:
    if not doc.is_file():
        pytest.fail(f"design document not found at {doc} (PACKETCLIP_DESIGN_DOC names another)")
    return doc.read_text()


def contract_signature(event: str, doc: Path = DESIGN_DOC) -> list[tuple[str, str]]:
    match = re.search(rf"`PacketCLIP::{event}\(([^)]*)\)`", contract_text(doc), re.DOTALL)
    assert match, f"{doc} has no PacketCLIP::{event}(...) signature"
    return split_params(match.group(1))


def package_scripts() -> dict[str, str]:
    """Name -> text of every script of the package, in load order."""
    return {name: (PACKAGE_DIR / f"{name}.zeek").read_text() for name in PACKAGE_SCRIPTS}


def declared_signature(event: str) -> list[tuple[str, str]]:
    match = re.search(rf"global {event}: event\(([^)]*)\);", TRANSPORT_SCRIPT.read_text(), re.DOTALL)
    assert match, f"transport.zeek declares no global {event}: event(...)"
    return split_params(match.group(1))


def handler_signatures(event: str) -> list[list[tuple[str, str]]]:
    """The parameters of every handler of `event` in the package's scripts (one or more)."""
    found = [
        split_params(params)
        for text in package_scripts().values()
        for params in re.findall(rf"^event {event}\(([^)]*)\)", text, re.DOTALL | re.MULTILINE)
    ]
    assert found, f"the package has no handler of {event}"
    return found


def record_fields(record: str, script: Path) -> list[tuple[str, str]]:
    match = re.search(rf"type {record}: record \{{(.*?)\n\t\}};", script.read_text(), re.DOTALL)
    assert match, f"{script.name} has no type {record}: record"
    fields = []
    for line in match.group(1).splitlines():
        code = line.split("#", 1)[0].strip()
        if code:
            name, _, type_name = code.rstrip(";").partition(":")
            fields.append((name.strip(), " ".join(type_name.split())))
    return fields


def string_const(name: str) -> str:
    match = re.search(rf'const {name} = "([^"]*)" &redef;', TRANSPORT_SCRIPT.read_text())
    assert match, f'transport.zeek has no const {name} = "..." &redef'
    return match.group(1)


def test_design_document_lives_in_the_repository() -> None:
    """A clean clone carries its contract: by default it is read from inside the repository."""
    default = REPO_ROOT / "docs" / "design.md"
    assert default.is_file()
    if "PACKETCLIP_DESIGN_DOC" not in os.environ:
        assert default == DESIGN_DOC


def test_contract_parser_reads_the_design_document() -> None:
    """The contract is really read from each document: ten request arguments, six verdict ones, two hello ones."""
    for doc in contract_docs():
        assert len(contract_signature("request", doc)) == 10, doc
        assert contract_signature("verdict", doc)[3] == ("score", "double"), doc
        assert [name for name, _ in contract_signature("hello", doc)] == ["sidecar", "model"], doc


@pytest.mark.parametrize("event", ["request", "verdict", "hello"])
def test_event_declaration_equals_contract(event: str) -> None:
    """Names and types in order: the sidecar builds and decodes these positionally, with exact types."""
    for doc in contract_docs():
        assert declared_signature(event) == contract_signature(event, doc), f"{event} differs from {doc}"


def test_verdict_handlers_match_contract() -> None:
    """log.zeek's handler and offline.zeek's both take the contract's arguments."""
    handlers = handler_signatures("verdict")
    assert len(handlers) == 2
    for doc in contract_docs():
        assert all(handler == contract_signature("verdict", doc) for handler in handlers), doc


def test_mission_scores_event_follows_this_repositorys_contract() -> None:
    """User-written missions' scores travel in an event of their own, declared and handled as docs/design.md
    says (the shared design notes predate it)."""
    contract = contract_signature("mission_scores")
    assert contract == [("uid", "string"), ("missions", "vector of string"), ("scores", "vector of double")]
    assert declared_signature("mission_scores") == contract
    assert handler_signatures("mission_scores") == [contract, contract]  # notices.zeek's and log.zeek's


def test_allowed_event_follows_this_repositorys_contract() -> None:
    """That the sidecar's allowlist allowed a verdict travels in an event of its own, declared and handled as
    docs/design.md says."""
    contract = contract_signature("allowed")
    assert contract == [("uid", "string"), ("reason", "string")]
    assert declared_signature("allowed") == contract
    assert handler_signatures("allowed") == [contract]


def test_allow_options_are_sets_the_config_framework_can_change() -> None:
    """The allow_* options are `option`s (changeable at run time) of a set of one atomic type: Zeek's config
    reader (the Config framework's file input) takes sets and vectors of atomic values but no table with values
    and no record, and a `const` could not change without a restart."""
    declared = dict(
        re.findall(r"^\toption (allow_\w+): (.+?) = \{\};$", NOTICES_SCRIPT.read_text(), re.MULTILINE)
    )
    assert declared == {
        "allow_orig_nets": "set[subnet]",
        "allow_resp_nets": "set[subnet]",
        "allow_nets": "set[subnet]",
        "allow_resp_ports": "set[port]",
    }


def test_request_record_and_publish_calls_follow_contract() -> None:
    """The Request record mirrors the event, and both publish calls spread it in the contract's order."""
    contract = contract_signature("request")
    assert record_fields("Request", TRANSPORT_SCRIPT) == contract
    calls = re.findall(
        r"(?:Cluster|Broker)::publish\(topic, request,(.*?)\);", TRANSPORT_SCRIPT.read_text(), re.DOTALL
    )
    assert len(calls) == 2, "expected one Cluster::publish (7.1+) and one Broker::publish (older) call"
    expected = [f"req${name}" for name, _ in contract]
    for call in calls:
        assert [arg.strip() for arg in call.split(",")] == expected


def test_topics_follow_contract() -> None:
    request_topic = string_const("request_topic")
    verdict_prefix = string_const("verdict_topic_prefix")
    control_topic = string_const("control_topic")
    for path in contract_docs():
        doc = contract_text(path)
        assert f"`{request_topic}`" in doc, path
        assert f"`{request_topic}<shard>/`" in doc, path
        assert f"`{verdict_prefix}<node>/`" in doc, path
        assert f"`{control_topic}`" in doc, path
    script = TRANSPORT_SCRIPT.read_text()
    # the node's topic ends in "/", so worker-1 does not also receive worker-10's verdicts
    assert 'subscribe(fmt("%s%s/", verdict_topic_prefix, this_node()));' in script
    assert 'return fmt("%s%d/", request_topic, last_word % num_shards);' in script
    assert "subscribe(control_topic);" in script


# Zeek types of the Info record as the ASCII writer declares them in #types; a record field (conn_id) is logged as
# its fields, prefixed with the field's name.
LOG_TYPES = {
    "time": "time",
    "string": "string",
    "double": "double",
    "transport_proto": "enum",
    "vector of string": "vector[string]",
    "bool": "bool",
}
CONN_ID_FIELDS = (("orig_h", "addr"), ("orig_p", "port"), ("resp_h", "addr"), ("resp_p", "port"))


def logged_columns() -> list[tuple[str, str]]:
    """(name, log type) of every column of packetclip.log, read from log.zeek's Info record."""
    columns = []
    for name, declared in record_fields("Info", LOG_SCRIPT):
        declared = declared.removesuffix(" &optional")  # logged as unset ("-") when not set
        declared = declared.removesuffix(" &default=F")  # logged as F unless set
        assert declared.endswith(" &log"), f"Info${name} is not logged"
        zeek_type = declared.removesuffix(" &log")
        if zeek_type == "conn_id":
            columns.extend((f"{name}.{sub}", kind) for sub, kind in CONN_ID_FIELDS)
        else:
            columns.append((name, LOG_TYPES[zeek_type]))
    return columns


def test_zeek_log_layout_is_classifys() -> None:
    """packetclip.log from Zeek and from `packetclip classify --format zeek` have one layout: the same columns,
    in the same order, with the same types (both files carry `#path packetclip`)."""
    assert logged_columns() == list(ZEEK_FIELDS)
    assert '$path="packetclip"' in LOG_SCRIPT.read_text()
    assert LOG_PATH == "packetclip"


def test_verdict_btest_checks_the_header_classify_writes() -> None:
    """The btest that runs Zeek compares packetclip.log's #fields and #types lines with a baseline; that
    baseline is exactly the header classify's writer produces."""
    stream = io.StringIO()
    ZeekWriter(stream, clock=lambda: 0.0)
    header = [line for line in stream.getvalue().splitlines() if line.startswith(("#fields", "#types"))]
    baseline = (BTEST_DIR / "Baseline" / "tests.verdicts" / "header").read_text().splitlines()
    assert baseline == header
    assert "btest-diff header" in (BTEST_DIR / "tests" / "verdicts.zeek").read_text()


# --- version guards ----------------------------------------------------------------------------------------------


def guarding_versions(script: str, needle: str) -> list[str]:
    """The Version::at_least arguments of the @if blocks open at every line containing `needle` (an @else
    flips the block to "before that version", written with a leading "<")."""
    stack: list[str] = []
    found = []
    for line in script.splitlines():
        opened = re.match(r'@if \( (!)? ?Version::at_least\("([0-9.]+)"\) \)', line)
        if opened:
            stack.append(("<" if opened.group(1) else "") + opened.group(2))
        elif line.startswith("@if"):
            stack.append("")
        elif line.startswith("@else"):
            top = stack.pop()
            stack.append(top[1:] if top.startswith("<") else ("<" + top if top else ""))
        elif line.startswith("@endif"):
            stack.pop()
        if needle in line:
            found.extend(v for v in stack if v)
    return found


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_websocket_server_options_listen_addr_is_guarded_for_7_2_2() -> None:
    """`Cluster::WebSocketServerOptions$listen_addr` exists from Zeek 7.2.2 on (7.2.0 and 7.2.1 lack it): every
    use is inside a guard of at least 7.2.2, and the older branch (Broker::listen_websocket, TLS off) covers
    everything below it."""
    script = (PACKAGE_DIR / "websocket.zeek").read_text()
    at_least = [v for v in guarding_versions(script, "$listen_addr=") if not v.startswith("<")]
    assert at_least and max(version_tuple(v) for v in at_least) >= (7, 2, 2)
    broker = guarding_versions(script, "Broker::listen_websocket(")
    assert "<7.2.2" in broker
    assert guarding_versions(script, "redef Broker::disable_ssl = T;") == ["<8.1", "<7.2.2"]


def test_the_guard_reader_can_fail() -> None:
    """The reader above finds the version of a guard that is too old."""
    old = '@if ( Version::at_least("7.2") )\n\tx($listen_addr=a);\n@else\n\ty();\n@endif\n'
    assert guarding_versions(old, "$listen_addr=") == ["7.2"]
    assert guarding_versions(old, "y();") == ["<7.2"]


# --- the btest suite's data --------------------------------------------------------------------------------------


def expected_request_lines(capture: Path) -> list[str]:
    """The request lines tests/zeek/tests/requests.zeek prints, computed with an independent reader (dpkt)."""
    connections: dict[tuple, dict] = {}
    with capture.open("rb") as handle:
        for _, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
            transport = ip.data
            if isinstance(transport, dpkt.icmp.ICMP):
                proto, key = "icmp", (frozenset((src, dst)), "icmp")
                src_port, dst_port = transport.type, 0
            else:
                proto = "tcp" if isinstance(transport, dpkt.tcp.TCP) else "udp"
                src_port, dst_port = transport.sport, transport.dport
                key = (frozenset(((src, src_port), (dst, dst_port))), proto)
            conn = connections.setdefault(
                key, {"orig": (src, src_port), "resp": (dst, dst_port), "frames": []}
            )
            conn["proto"] = proto
            if len(conn["frames"]) < MAX_PACKETS:
                conn["frames"].append((src == conn["orig"][0], min(len(frame), SNAPLEN)))
    lines = []
    for conn in connections.values():
        (orig_h, orig_p), (resp_h, resp_p), proto = conn["orig"], conn["resp"], conn["proto"]
        directions = "".join("T" if is_orig else "F" for is_orig, _ in conn["frames"])
        sent = sum(size for _, size in conn["frames"])
        lines.append(
            f"zeek {orig_h}:{orig_p}/{proto} -> {resp_h}:{resp_p}/{proto} link=1 n={len(conn['frames'])} "
            f"dirs={directions} bytes={sent} times=T topic=packetclip/request/"
        )
    return sorted(lines)


def test_small_capture_is_small() -> None:
    assert SMALL_CAPTURE.stat().st_size <= MAX_CAPTURE_BYTES


def script_max_wait() -> float:
    """`PacketCLIP::max_wait`'s default in collection.zeek, in seconds."""
    found = re.search(r"option max_wait = (\d+(?:\.\d+)?)(msec|sec|min);", COLLECTION_SCRIPT.read_text())
    assert found, "collection.zeek declares no max_wait option"
    return float(found[1]) * {"msec": 0.001, "sec": 1.0, "min": 60.0}[found[2]]


def test_max_wait_default_is_the_sidecars_and_the_default_recipes_window() -> None:
    """Zeek sends a connection max_wait after its first packet: the default is the featurizer window the default
    recipe trains with (the model sees the seconds it learnt from), and `packetclip serve`'s default matches it
    (its first-packet order waits for Zeek's max_wait)."""
    yaml = pytest.importorskip("yaml")
    from packetclip.zeek.settings import ServeSettings

    recipe = REPO_ROOT / "training" / "packetclip_training" / "dataset" / "recipes" / "default.yaml"
    window = yaml.safe_load(recipe.read_text())["featurizer"]["window"]
    assert script_max_wait() == ServeSettings().max_wait == window == 5.0


def test_small_capture_fires_the_max_wait_timer() -> None:
    """The half-open SYN of the suite's capture is sent by its max_wait timer: the capture's last packet comes
    more than max_wait after every other connection's first packet, moving network time past their timers."""
    with SMALL_CAPTURE.open("rb") as handle:
        times = [ts for ts, _ in dpkt.pcap.Reader(handle)]
    assert times[-1] - max(times[:-1]) > script_max_wait()


def test_request_baseline_matches_capture() -> None:
    """The btest baseline was written by reasoning, not by Zeek: recompute it from the capture itself."""
    baseline = (BTEST_DIR / "Baseline" / "tests.requests" / "requests").read_text().splitlines()
    assert baseline == expected_request_lines(SMALL_CAPTURE)
    assert any("n=30 " in line for line in baseline), "the capture must exercise the max_packets cap"


def test_every_btest_diff_has_a_baseline() -> None:
    tests = sorted((BTEST_DIR / "tests").glob("*.zeek"))
    assert tests
    for test in tests:
        for name in re.findall(r"@TEST-EXEC: btest-diff (\S+)", test.read_text()):
            baseline = BTEST_DIR / "Baseline" / f"tests.{test.stem}" / name
            assert baseline.is_file(), f"{test.name}: no baseline {baseline}"


# --- the edge-case captures (issue 20) ---------------------------------------------------------------------------

from tests.zeekscripts.zeek_view import zeek_requests  # noqa: E402

EDGE_TESTS = {
    "edge-short-capture": "packetclip-short.pcap",
    "edge-fragments": "packetclip-fragments.pcap",
    "edge-backwards-times": "packetclip-backwards.pcap",
}
EDGE_MAKER = BTEST_DIR / "traces" / "make_packetclip_edges.py"


@pytest.mark.parametrize("test", sorted(EDGE_TESTS))
def test_edge_baseline_matches_capture(test: str) -> None:
    """The request lines of each edge-case btest, recomputed from its capture (tests/zeekscripts/zeek_view.py);
    the btest runs the capture through Zeek and prints them with tests/zeek/scripts/print-requests.zeek."""
    capture = BTEST_DIR / "traces" / EDGE_TESTS[test]
    baseline = (BTEST_DIR / "Baseline" / f"tests.{test}" / "requests").read_text().splitlines()
    assert baseline == sorted(request.btest_line() for request in zeek_requests(capture))
    assert f"$TRACES/{EDGE_TESTS[test]}" in (BTEST_DIR / "tests" / f"{test}.zeek").read_text()


def test_edge_captures_exercise_their_faults() -> None:
    """Each capture has what its btest is about: the short one lasts less than max_wait in another link
    type than Ethernet, the fragmented one hands Zeek later fragments and one first fragment as completing
    frames, the backwards one has connections that start before packets already seen."""
    short = zeek_requests(BTEST_DIR / "traces" / "packetclip-short.pcap")
    times = [t for request in short for t in request.ts]
    assert max(times) - min(times) < script_max_wait() and {r.link_type for r in short} == {113}
    fragmented = zeek_requests(BTEST_DIR / "traces" / "packetclip-fragments.pcap")
    assert [r.btest_line().split(" frags=")[1].split()[0] for r in fragmented] == ["LLFN"]
    backwards = zeek_requests(BTEST_DIR / "traces" / "packetclip-backwards.pcap")
    starts = [r.start for r in backwards]
    assert starts != sorted(starts) and min(starts) < max(t for r in backwards for t in r.ts) - 5


def fake_sidecar_answers() -> dict[str, tuple[str, str, float, str]]:
    """tests/zeek/scripts/fake-sidecar.zeek's verdict per responder port ("22/tcp" -> label, attack, score,
    explanation)."""
    text = (BTEST_DIR / "scripts" / "fake-sidecar.zeek").read_text()
    found = re.findall(
        r'\[(\d+/\w+)\] = Answer\(\$label="(\w+)",\s+\$attack="(\w+)",\s+\$score=([\d.]+),\s+'
        r'\$explanation="([^"]*)"\)',
        text,
    )
    return {
        port: (label, attack, float(score), explanation) for port, label, attack, score, explanation in found
    }


def test_allowlist_baselines_follow_from_the_capture_and_the_fake_sidecar() -> None:
    """The allowlist btest's baselines, recomputed: every connection of the capture gets the fake sidecar's answer
    for its port; the SSH one (allowed by the sidecar) and 10.0.0.9's (allow_orig_nets) are allowed, the latter
    with the option's name after its explanation; notices come from the rows not allowed whose score reaches
    notices.zeek's default threshold (0.8), one per originator and class (suppression), and the mission scores of the
    allowed port-80 row raise none."""
    test = (BTEST_DIR / "tests" / "allowlist.zeek").read_text()
    assert "redef PacketCLIP::allow_orig_nets = {10.0.0.9/32};" in test
    assert (
        'if ( req$resp_p == 22/tcp )\n\t\tevent PacketCLIP::allowed(req$uid, "the jump host\'s logins");'
        in test
    )
    answers = fake_sidecar_answers()
    assert len(answers) == 6
    notes = {"dos": "PacketCLIP::DoS", "recon": "PacketCLIP::Recon", "bruteforce": "PacketCLIP::BruteForce"}
    rows: list[str] = []
    raising: dict[tuple[str, str], list[int]] = {}  # (note, originator) -> responder ports of rows raising it
    for request in zeek_requests(SMALL_CAPTURE):
        label, attack, score, explanation = answers[f"{request.resp_p}/{request.proto}"]
        by_sidecar = request.resp_p == 22 and request.proto == "tcp"
        by_option = request.orig_h == "10.0.0.9" and label != "error"
        if by_option and not by_sidecar:
            explanation += " Allowed: PacketCLIP::allow_orig_nets."
        allowed = by_sidecar or by_option
        rows.append(
            f"{request.orig_h}\t{request.resp_p}\t{label}\t{attack}\t{'T' if allowed else 'F'}\t{explanation}"
        )
        if not allowed and label in notes and score >= 0.8:
            raising.setdefault((notes[label], request.orig_h), []).append(request.resp_p)
    # one row per originator and class raises it, so suppression cannot make the baseline depend on row order
    assert all(len(ports) == 1 for ports in raising.values())
    notices = [f"{note}\t{orig_h}\t{ports[0]}" for (note, orig_h), ports in raising.items()]
    baseline = BTEST_DIR / "Baseline" / "tests.allowlist"
    assert (baseline / "rows").read_text().splitlines() == sorted(rows)
    assert (baseline / "notices").read_text().splitlines() == sorted(notices)
    assert (baseline / "output").read_text() == (
        f"published={len(rows)} logged={len(rows)} allowed={sum(r.split(chr(9))[4] == 'T' for r in rows)} "
        "unmatched=0 pending=0\n"
    )


def test_backwards_rows_baseline_has_each_connections_first_packet_time() -> None:
    rows = (BTEST_DIR / "Baseline" / "tests.edge-backwards-times" / "rows").read_text().splitlines()
    requests = zeek_requests(BTEST_DIR / "traces" / "packetclip-backwards.pcap")
    assert rows == sorted(f"{r.start:.6f}\t{r.orig_p}\tbenign" for r in requests)


def test_edge_captures_are_what_their_maker_writes(tmp_path: Path) -> None:
    """The committed captures' provenance: make_packetclip_edges.py writes them byte for byte."""
    subprocess.run([sys.executable, str(EDGE_MAKER), str(tmp_path)], check=True, timeout=TOOL_TIMEOUT_S)
    for name in EDGE_TESTS.values():
        committed = (BTEST_DIR / "traces" / name).read_bytes()
        assert (tmp_path / name).read_bytes() == committed, name
        assert len(committed) <= MAX_CAPTURE_BYTES, name
