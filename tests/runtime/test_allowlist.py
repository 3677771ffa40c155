"""Allowlists (`packetclip.allowlist`): the file's checks and their one-line errors, what an entry matches (fields
ANDed, values ORed, IPv4 and IPv6, ports with protocols and ranges, services, coarse and fine classes, the first
entry's reason), expiry, following the file (an edit is taken, a broken edit keeps the list in force and is counted
once), and the offline path end to end: `packetclip classify --allowlist` on the lab capture marks exactly the
connections the sample allowlist names, with labels, attacks and scores those of a run without it; the flag, the
environment variable and the config file reach every command's engine; an unusable file stops a command with one
line and exit status 1. The Zeek path is tests/zeek_peer/test_allowlist_zeek.py, the Suricata path
tests/suricata/test_suricata_allowlist.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from packetclip.allowlist import (
    AllowlistError,
    AllowlistFile,
    NetworkSet,
    allowed_explanation,
    load_allowlist,
    parse_allowlist,
)
from packetclip.cli import main
from packetclip.engine import Engine, Verdict
from packetclip.featurizer import featurize_pcap
from packetclip.output import ZEEK_FIELDS, ZeekWriter, verdict_record
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle

REPO = Path(__file__).resolve().parents[2]
SAMPLE_ALLOWLIST = REPO / "samples" / "allowlist.toml"
SCANNER, NTP_SERVER = "198.18.3.68", "198.18.2.16"  # the lab sample's att3 and its NTP server
MAR_31_2027_END = 1806537600.0  # 2027-04-01T00:00:00Z: the first second after the sample's dated entry


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def entries(text: str) -> Any:
    return parse_allowlist(text, "allow.toml")


def error_of(text: str) -> str:
    with pytest.raises(AllowlistError) as caught:
        entries(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def match(text: str, **connection: Any) -> str | None:
    """The reason of the entry that allows the connection, or None."""
    values = {
        "orig_h": "10.0.0.1",
        "resp_h": "10.0.0.2",
        "resp_p": 80,
        "proto": "tcp",
        "service": "http",
        "label": "recon",
        "attack": "port_scan",
    }
    values.update(connection)
    entry = entries(text).match(**values)
    return None if entry is None else entry.reason


# --- the file's checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[allow]\n", "allow.toml: not valid TOML"),
        ("allows = 1\n", "allow.toml: unknown top-level key 'allows'"),
        ('allow = "x"\n', "allow.toml: 'allow' must be written as [[allow]] tables"),
        ('[[allow]]\norig_nets = "10.0.0.1"\n', "allow.toml: entry 1: reason: missing"),
        ('[[allow]]\nreason = ""\norig_nets = "10.0.0.1"\n', "entry 1: reason: expected a non-empty string"),
        ('[[allow]]\nreason = "a\\nb"\nnets = "10.0.0.1"\n', "entry 1 ('a\\nb'): reason: must be one line"),
        ('[[allow]]\nreason = "r"\n', "entry 1 ('r'): names no traffic: give at least one of orig_nets"),
        ('[[allow]]\nreason = "r"\nports = [53]\n', "entry 1 ('r'): ports: unknown field (known: reason,"),
        (
            '[[allow]]\nreason = "r"\norig_nets = ["10.0.0.300"]\n',
            "entry 1 ('r'): orig_nets: '10.0.0.300' is not an IPv4 or IPv6 address or network",
        ),
        (
            '[[allow]]\nreason = "r"\nresp_nets = "10.1.2.3/16"\n',
            "entry 1 ('r'): resp_nets: '10.1.2.3/16' has host bits set: write '10.1.0.0/16' for the network",
        ),
        (
            '[[allow]]\nreason = "r"\nnets = "2001:db8::1/32"\n',
            "entry 1 ('r'): nets: '2001:db8::1/32' has host bits set: write '2001:db8::/32'",
        ),
        (
            '[[allow]]\nreason = "r"\nnets = [10]\n',
            "entry 1 ('r'): nets: expected an address or network as a string",
        ),
        ('[[allow]]\nreason = "r"\nnets = []\n', "entry 1 ('r'): nets: an empty list matches nothing"),
        (
            '[[allow]]\nreason = "r"\nresp_ports = ["70000/tcp"]\n',
            "entry 1 ('r'): resp_ports: '70000/tcp' is not a port",
        ),
        (
            '[[allow]]\nreason = "r"\nresp_ports = ["53/sctp"]\n',
            "entry 1 ('r'): resp_ports: '53/sctp' is not a port",
        ),
        (
            '[[allow]]\nreason = "r"\nresp_ports = ["90-80"]\n',
            "entry 1 ('r'): resp_ports: '90-80' is not a port",
        ),
        ('[[allow]]\nreason = "r"\nresp_ports = [-1]\n', "entry 1 ('r'): resp_ports: -1 is not a port"),
        ('[[allow]]\nreason = "r"\nresp_ports = [true]\n', "entry 1 ('r'): resp_ports: True is not a port"),
        (
            '[[allow]]\nreason = "r"\nservices = ["dsn"]\n',
            "entry 1 ('r'): services: unknown service 'dsn' (known:",
        ),
        (
            '[[allow]]\nreason = "r"\nclasses = ["scan"]\n',
            "entry 1 ('r'): classes: unknown class 'scan' (known:",
        ),
        ('[[allow]]\nreason = "r"\nclasses = ["error"]\n', "entry 1 ('r'): classes: unknown class 'error'"),
        (
            '[[allow]]\nreason = "r"\nclasses = "recon"\nexpires = "2027-13-01"\n',
            "entry 1 ('r'): expires: '2027-13-01' is not a date (YYYY-MM-DD)",
        ),
        ('[[allow]]\nreason = "r"\nclasses = "recon"\nexpires = 12:00:00\n', "entry 1 ('r'): expires: "),
        (
            '[[allow]]\nreason = "ok"\nclasses = "recon"\n\n[[allow]]\nreason = "second"\nnets = "x"\n',
            "allow.toml: entry 2 ('second'): nets: 'x' is not",
        ),
    ],
)
def test_each_problem_is_one_line_naming_the_file_the_entry_and_the_field(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_the_known_classes_and_services_are_the_runtimes(tmp_path: Path) -> None:
    """Coarse and fine class names and the service names of the featurizer's table are taken; the error for an
    unknown one lists them, so an operator can correct a typo from the message alone."""
    from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
    from packetclip.featurizer.services import SERVICE_NAMES, service_name

    every = ", ".join(f'"{name}"' for name in (*COARSE_CLASSES, *FINE_CLASSES))
    entries(f'[[allow]]\nreason = "r"\nclasses = [{every}]\nservices = ["dns", "ntp", "ssh", "ssl"]\n')
    assert {service_name(17, 53), service_name(17, 123), service_name(6, 22)} <= SERVICE_NAMES
    message = error_of('[[allow]]\nreason = "r"\nclasses = ["portscan"]\n')
    assert all(name in message for name in (*COARSE_CLASSES, *FINE_CLASSES))


def test_a_file_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError, match=r"nowhere\.toml: cannot read allowlist"):
        load_allowlist(tmp_path / "nowhere.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[[allow]]")
    with pytest.raises(AllowlistError, match=r"binary\.toml: cannot read allowlist"):
        AllowlistFile(binary)
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing allowed yet\n")
    assert load_allowlist(empty).entries == ()


def test_the_committed_sample_is_valid() -> None:
    allowlist = load_allowlist(SAMPLE_ALLOWLIST)
    assert [e.number for e in allowlist.entries] == [1, 2, 3]
    assert all(e.reason for e in allowlist.entries)


# --- matching ---------------------------------------------------------------------------------------------------


def test_fields_are_anded_and_values_ored() -> None:
    text = '[[allow]]\nreason = "r"\norig_nets = ["10.0.0.1", "10.9.0.0/16"]\nresp_ports = [80, 443]\n'
    assert match(text) == "r"
    assert match(text, orig_h="10.9.200.7", resp_p=443) == "r"  # the other value of each field
    assert match(text, orig_h="10.0.0.3") is None  # one field misses: no match
    assert match(text, resp_p=8080) is None
    assert match(text, orig_h="10.0.0.2", resp_h="10.0.0.1") is None  # orig_nets is the originator only


def test_networks_on_each_side_and_either_side_ipv4_and_ipv6() -> None:
    resp = '[[allow]]\nreason = "r"\nresp_nets = ["2001:db8:1::/48", "192.0.2.0/24"]\n'
    assert match(resp, resp_h="2001:db8:1:ffff::9") == "r"
    assert match(resp, resp_h="2001:db8:2::9") is None
    assert match(resp, resp_h="192.0.2.255") == "r"
    assert match(resp, orig_h="192.0.2.1", resp_h="10.0.0.2") is None
    either = '[[allow]]\nreason = "r"\nnets = "2001:db8::/32"\n'
    assert match(either, orig_h="2001:db8::1", resp_h="10.0.0.2") == "r"
    assert match(either, orig_h="10.0.0.2", resp_h="2001:db8:ff::1") == "r"
    assert match(either, orig_h="2001:db9::1", resp_h="10.0.0.2") is None
    # an IPv4 address and an IPv6 network of the same bits never match each other
    v6_zero = '[[allow]]\nreason = "r"\nnets = "::/96"\n'
    assert match(v6_zero, orig_h="0.0.0.1", resp_h="0.0.0.2") is None
    assert match(v6_zero, orig_h="::1", resp_h="0.0.0.2") == "r"
    assert match('[[allow]]\nreason = "r"\nnets = "0.0.0.0/0"\n', orig_h="::1", resp_h="::2") is None


def test_network_sets_look_up_every_prefix_length() -> None:
    import ipaddress

    networks = NetworkSet(
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "10.1.2.3/32", "172.16.0.0/12", "2001:db8::/32", "::1/128")
    )
    from packetclip.allowlist import address_key

    assert address_key("10.200.0.1") in networks and address_key("172.31.255.255") in networks
    assert address_key("172.32.0.0") not in networks and address_key("11.0.0.0") not in networks
    assert address_key("::1") in networks and address_key("::2") not in networks
    assert address_key("2001:db8:ffff::") in networks and None not in networks
    assert address_key("not an address") is None


def test_ports_with_protocols_and_ranges() -> None:
    text = '[[allow]]\nreason = "r"\nresp_ports = ["53/udp", "8000-8099/tcp", 0]\n'
    assert match(text, resp_p=53, proto="udp") == "r"
    assert match(text, resp_p=53, proto="tcp") is None  # the protocol is part of the value
    assert match(text, resp_p=8099, proto="tcp") == "r" and match(text, resp_p=8100, proto="tcp") is None
    assert match(text, resp_p=0, proto="icmp") == "r"  # a port without a protocol: any (ICMP's, Zeek's way)


def test_services_and_classes_coarse_or_fine() -> None:
    services = '[[allow]]\nreason = "r"\nservices = ["dns", "ntp"]\n'
    assert match(services, service="ntp") == "r" and match(services, service="") is None
    coarse = '[[allow]]\nreason = "r"\nclasses = ["dos"]\n'
    assert match(coarse, label="dos", attack="syn_flood") == "r" and match(coarse) is None
    fine = '[[allow]]\nreason = "r"\nclasses = ["vulnerability_scan"]\n'
    assert match(fine, label="recon", attack="vulnerability_scan") == "r"
    assert match(fine, label="recon", attack="port_scan") is None


def test_the_first_matching_entry_gives_the_reason() -> None:
    text = (
        '[[allow]]\nreason = "scanner"\norig_nets = "10.0.0.1"\nclasses = "recon"\n\n'
        '[[allow]]\nreason = "web tier"\nresp_ports = 80\n'
    )
    assert match(text) == "scanner"
    assert match(text, label="dos", attack="syn_flood") == "web tier"
    assert match(text, label="dos", attack="syn_flood", resp_p=81) is None


def test_the_index_finds_what_trying_every_entry_in_order_finds() -> None:
    """The entry index (by originator, responder, either-side networks, single ports, or none) never changes the
    answer: on random lists and connections the first matching entry is the one a plain scan in file order finds,
    including where an unindexed entry comes before an indexed one."""
    import random

    from packetclip.allowlist import address_key

    rng = random.Random(17)
    hosts = [f"10.{a}.{b}.{c}" for a in (0, 1) for b in (0, 7) for c in (1, 2, 200)] + [
        "2001:db8::1",
        "2001:db8:1::5",
        "fd00::7",
    ]
    nets = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.0.7.0/24",
        "10.1.7.200/32",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::/0",
    ]
    ports = ["53/udp", "80/tcp", "22", "1-1024/tcp", "123/udp", "0/icmp"]

    def entry(number: int) -> str:
        fields = [f'reason = "r{number}"']
        for name in rng.sample(
            ["orig_nets", "resp_nets", "nets", "resp_ports", "services", "classes"], k=rng.randint(1, 3)
        ):
            if name.endswith("nets"):
                values = rng.sample(nets, k=rng.randint(1, 2))
            elif name == "resp_ports":
                values = rng.sample(ports, k=rng.randint(1, 2))
            elif name == "services":
                values = rng.sample(["dns", "http", "ssh", "ntp"], k=1)
            else:
                values = rng.sample(["recon", "dos", "port_scan", "syn_flood", "benign"], k=1)
            fields.append(f"{name} = {json.dumps(values)}")
        return "[[allow]]\n" + "\n".join(fields) + "\n"

    outcomes = {True: 0, False: 0}
    for _ in range(20):
        allowlist = entries("\n".join(entry(n) for n in range(1, 9)))
        for _ in range(200):
            connection = {
                "orig_h": rng.choice(hosts),
                "resp_h": rng.choice(hosts),
                "resp_p": rng.choice([0, 22, 53, 80, 123, 5000]),
                "proto": rng.choice(["tcp", "udp", "icmp"]),
                "service": rng.choice(["", "dns", "http", "ssh", "ntp"]),
                "label": rng.choice(["benign", "recon", "dos"]),
                "attack": rng.choice(["benign", "port_scan", "syn_flood"]),
            }
            orig, resp = address_key(connection["orig_h"]), address_key(connection["resp_h"])
            rest = [connection[k] for k in ("resp_p", "proto", "service", "label", "attack")]
            scanned = next((e for e in allowlist.entries if e.matches(orig, resp, *rest)), None)
            assert allowlist.match(**connection) is scanned, connection
            outcomes[scanned is None] += 1
    assert outcomes[True] > 500 and outcomes[False] > 500  # both answers were put to the test


def test_the_reason_ends_the_explanation() -> None:
    assert allowed_explanation("TCP to port 80; judged a port scan.", "the scanner") == (
        "TCP to port 80; judged a port scan. Allowed: the scanner."
    )
    assert allowed_explanation("x.", "agreed until May.") == "x. Allowed: agreed until May."
    assert allowed_explanation("", "r") == "Allowed: r."


# --- expiry and following the file --------------------------------------------------------------------------------


class Clocks:
    """A wall clock and a monotonic clock the test moves."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 100.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def follow(path: Path, clocks: Clocks, check_every: float = 2.0) -> AllowlistFile:
    return AllowlistFile(path, check_every=check_every, clock=clocks.time, monotonic=clocks.monotonic)


def write(path: Path, text: str) -> None:
    """Replace the file as an operator should (a new file renamed over the old one)."""
    partial = path.with_suffix(".new")
    partial.write_text(text)
    os.replace(partial, path)


def test_expired_entries_are_ignored_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "allow.toml"
    path.write_text(
        '[[allow]]\nreason = "pentest"\nnets = "10.0.0.1"\nexpires = 2027-03-31\n\n'
        '[[allow]]\nreason = "until noon"\nnets = "10.0.0.1"\nexpires = 2027-03-31T12:00:00+02:00\n\n'
        '[[allow]]\nreason = "last"\nnets = "10.0.0.1"\nresp_ports = 80\nexpires = "2027-04-02T00:00:00"\n'
    )
    clocks = Clocks(MAR_31_2027_END - 86_400 + 1)  # 2027-03-31 00:00:01 UTC
    caplog.set_level(logging.WARNING, "packetclip.allowlist")
    allowlist = follow(path, clocks)
    assert [e.reason for e in allowlist.current().entries] == ["pentest", "until noon", "last"]
    clocks.wall = MAR_31_2027_END - 86_400 + 10 * 3600  # 10:00 UTC is noon at +02:00
    assert [e.reason for e in allowlist.current().entries] == ["pentest", "last"]
    clocks.wall = MAR_31_2027_END - 1  # the date's entry holds through its last second
    assert [e.reason for e in allowlist.current().entries] == ["pentest", "last"]
    clocks.wall = MAR_31_2027_END
    assert [e.reason for e in allowlist.current().entries] == ["last"]
    for _ in range(3):
        allowlist.current()
    assert allowlist.counts.expired == 2
    said = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
    assert len(said) == 2 and "entry 2 ('until noon') expired at 2027-03-31 10:00:00 UTC" in said[0]
    assert "entry 1 ('pentest') expired at 2027-04-01 00:00:00 UTC" in said[1]
    # an edit that keeps the expired entries does not say them again; one loaded expired is said once
    write(path, path.read_text() + '\n[[allow]]\nreason = "old"\nnets = "10.0.0.9"\nexpires = 2026-01-01\n')
    clocks.mono += 2.0
    assert [e.reason for e in allowlist.current().entries] == ["last"]
    assert allowlist.counts.expired == 3 and allowlist.counts.reloads == 1


def test_an_edit_is_taken_and_a_broken_one_keeps_the_list_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "allow.toml"
    path.write_text('[[allow]]\nreason = "one"\nnets = "10.0.0.1"\n')
    clocks = Clocks(1_800_000_000.0)
    allowlist = follow(path, clocks)
    assert [e.reason for e in allowlist.current().entries] == ["one"]

    write(path, '[[allow]]\nreason = "two"\nnets = "10.0.0.2"\n')
    assert [e.reason for e in allowlist.current().entries] == ["one"]  # not looked at before check_every
    clocks.mono += 2.0
    assert [e.reason for e in allowlist.current().entries] == ["two"]
    assert allowlist.counts.reloads == 1

    caplog.set_level(logging.ERROR, "packetclip.allowlist")
    write(path, '[[allow]]\nreason = "three"\nnets = "10.0.0.300"\n')
    for _ in range(3):  # the same broken version: refused once
        clocks.mono += 2.0
        assert [e.reason for e in allowlist.current().entries] == ["two"]
    assert allowlist.counts.reload_errors == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the 1 entries before the edit stay in force" in errors[0]
    assert "entry 1 ('three'): nets: '10.0.0.300'" in errors[0]

    path.unlink()  # a deleted file is a broken edit too
    clocks.mono += 2.0
    assert [e.reason for e in allowlist.current().entries] == ["two"] and allowlist.counts.reload_errors == 2
    write(path, '[[allow]]\nreason = "four"\nnets = "10.0.0.4"\n')
    clocks.mono += 2.0
    assert [e.reason for e in allowlist.current().entries] == ["four"] and allowlist.counts.reloads == 2

    # the same bytes written again (a touch, a copy) are no reload
    write(path, path.read_text())
    clocks.mono += 2.0
    allowlist.current()
    assert allowlist.counts.reloads == 2


def test_marking_keeps_label_attack_and_scores(tmp_path: Path) -> None:
    path = tmp_path / "allow.toml"
    path.write_text('[[allow]]\nreason = "the scanner"\norig_nets = "10.0.0.1"\nclasses = "recon"\n')
    allowlist = AllowlistFile(path)

    class Conn:
        service = "http"

    verdicts = [
        make_verdict(),
        make_verdict(orig_h="10.0.0.9"),
        make_verdict(label="dos", attack="syn_flood"),
    ]
    before = [(v.label, v.attack, v.score, dict(v.scores)) for v in verdicts]
    assert allowlist.mark(verdicts, [Conn(), Conn(), Conn()]) == 1  # type: ignore[list-item]
    assert [(v.label, v.attack, v.score, dict(v.scores)) for v in verdicts] == before
    assert [v.allowed for v in verdicts] == [True, False, False]
    assert verdicts[0].allow_reason == "the scanner" and verdicts[1].allow_reason == ""
    assert verdicts[0].explanation == "TCP to port 80. Allowed: the scanner."
    assert verdicts[1].explanation == "TCP to port 80." and allowlist.counts.allowed == 1


def make_verdict(**changes: Any) -> Verdict:
    values: dict[str, Any] = {
        "ts": 1700000000.5,
        "uid": "CAbc",
        "orig_h": "10.0.0.1",
        "orig_p": 40000,
        "resp_h": "10.0.0.2",
        "resp_p": 80,
        "proto": "tcp",
        "community_id": "1:xyz=",
        "label": "recon",
        "attack": "port_scan",
        "score": 0.75,
        "scores": {"benign": 0.1, "dos": 0.1, "recon": 0.75, "bruteforce": 0.05},
        "fine_scores": {},
        "explanation": "TCP to port 80.",
        "model": "2026.11.27-1",
    }
    values.update(changes)
    return Verdict(**values)


# --- records ----------------------------------------------------------------------------------------------------


def test_records_carry_the_flag_and_the_reason() -> None:
    from packetclip.suricata.eve import EvePacket
    from packetclip.suricata.flows import FlowFrames
    from packetclip.suricata.verdicts import eve_record

    plain = make_verdict(missions={"ntp_flood": 0.5})
    allowed = make_verdict(allowed=True, allow_reason="the scanner", missions={"ntp_flood": 0.5})
    assert verdict_record(plain)["allowed"] is False and "allow_reason" not in verdict_record(plain)
    record = verdict_record(allowed)
    assert record["allowed"] is True and record["allow_reason"] == "the scanner"
    assert list(record)[-4:] == ["model", "allowed", "allow_reason", "missions"]

    first = EvePacket(7, 1.0, "10.0.0.1", 40000, "10.0.0.2", 80, "TCP", 1, b"", "")
    flow = FlowFrames(7, 1, first, [1.0], [b""])
    assert eve_record(plain, flow, 1)["packetclip"]["allowed"] is False
    assert "allow_reason" not in eve_record(plain, flow, 1)["packetclip"]
    assert eve_record(allowed, flow, 1)["packetclip"]["allow_reason"] == "the scanner"

    out = io.StringIO()
    writer = ZeekWriter(out, clock=lambda: 0.0)
    writer.write(plain)
    writer.write(allowed)
    rows = [line.split("\t") for line in out.getvalue().splitlines() if not line.startswith("#")]
    assert ZEEK_FIELDS[-1] == ("allowed", "bool")
    assert [row[-1] for row in rows] == ["F", "T"]  # Zeek's ASCII writer's bool


def test_allowed_verdicts_add_nothing_to_suricatas_datasets() -> None:
    from packetclip.suricata.datasets import DatasetFeedback

    class Control:
        generation = 1

        def __init__(self) -> None:
            self.sent: list[tuple[str, str]] = []

        def command(self, name: str, arguments: dict[str, str] | None = None) -> None:
            if arguments is not None:
                self.sent.append((name, arguments["datavalue"]))

    control = Control()
    feedback = DatasetFeedback(control, threshold=0.5, ttl=60.0, clock=lambda: 0.0)  # type: ignore[arg-type]
    feedback.observe(
        [
            make_verdict(orig_h="10.0.0.1", allowed=True, allow_reason="scanner"),
            make_verdict(orig_h="10.0.0.2"),
            make_verdict(orig_h="2001:db8::3", allowed=True, allow_reason="scanner"),
            make_verdict(orig_h="10.0.0.4", allowed=True, allow_reason="x", label="benign", attack="benign"),
        ]
    )
    assert control.sent == [("dataset-add", "10.0.0.2")]
    assert set(feedback.expires) == {"10.0.0.2"}
    assert feedback.counts.allowed == 2 and feedback.counts.flagging_verdicts == 1


# --- the offline path, end to end ---------------------------------------------------------------------------------


def run_classify(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def sample_reason(record: dict[str, Any]) -> str | None:
    """What samples/allowlist.toml says of a record, written out independently of the module: att3's recon, then
    UDP to the NTP server's port 123 (whose service is ntp); the dated entry names addresses the sample lacks."""
    if record["id.orig_h"] == SCANNER and record["label"] == "recon":
        return "att3 is the security team's scanner: its scans are scheduled"
    if record["id.resp_h"] == NTP_SERVER and record["id.resp_p"] == 123 and record["proto"] == "udp":
        return "the NTP server is load-tested by operations"
    return None


def test_classify_marks_exactly_the_connections_the_sample_names(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, allowed = tmp_path / "plain.jsonl", tmp_path / "allowed.jsonl"
    common = ["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "--format", "json"]
    assert run_classify([*common, "-o", str(plain)], capsys)[0] == 0
    code, err = run_classify([*common, "-o", str(allowed), "--allowlist", str(SAMPLE_ALLOWLIST)], capsys)
    assert code == 0
    reference = {r["uid"]: r for r in map(json.loads, plain.read_text().splitlines())}
    records = [json.loads(line) for line in allowed.read_text().splitlines()]
    assert len(records) == len(reference) > 300
    marked = 0
    for record in records:
        before = reference[record["uid"]]
        assert before["allowed"] is False and "allow_reason" not in before
        for key in ("label", "attack", "score", "scores", "model"):
            assert record[key] == before[key], key
        reason = sample_reason(before)
        assert record["allowed"] is (reason is not None), record
        if reason is None:
            assert record["explanation"] == before["explanation"] and "allow_reason" not in record
        else:
            assert record["allow_reason"] == reason
            assert record["explanation"] == f"{before['explanation']} Allowed: {reason}."
            marked += 1
    # both entries matched something, and among what they allow are verdicts that would alert
    assert {sample_reason(r) for r in records} > {None} and len({sample_reason(r) for r in records}) == 3
    assert any(r["allowed"] and r["label"] == "dos" for r in records)
    assert f"allowed: {marked} by {SAMPLE_ALLOWLIST}" in err

    # the Zeek layout carries the flag in its last column
    zeek = tmp_path / "allowed.log"
    zeek_args = ["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "-o", str(zeek)]
    assert run_classify([*zeek_args, "--allowlist", str(SAMPLE_ALLOWLIST)], capsys)[0] == 0
    rows = [line.split("\t") for line in zeek.read_text().splitlines() if not line.startswith("#")]
    assert sum(row[-1] == "T" for row in rows) == marked and {row[-1] for row in rows} == {"T", "F"}


def test_an_unusable_allowlist_stops_each_command_with_one_line(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "allow.toml"
    bad.write_text('[[allow]]\nreason = "scanner"\norig_nets = "10.0.0.300"\n')
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.delenv("PACKETCLIP_ALLOWLIST", raising=False)
    out = str(tmp_path / "out")
    commands: list[list[str]] = [
        ["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "-o", out, "--allowlist", str(bad)],
        [
            "suricata",
            "run",
            "--eve",
            str(tmp_path / "eve.json"),
            "--model",
            str(bundle_path),
            "--verdicts",
            out,
            "--allowlist",
            str(bad),
        ],
        [
            "serve",
            "--model",
            str(bundle_path),
            "--zeek",
            "ws://127.0.0.1:9/v1/messages/json",
            "--allowlist",
            str(bad),
        ],
    ]
    for args in commands:
        code, err = run_classify(args, capsys)
        assert code == 1, args
        lines = err.strip().splitlines()
        assert lines == [
            f"Error: {bad}: entry 1 ('scanner'): orig_nets: '10.0.0.300' is not an IPv4 or IPv6 "
            "address or network"
        ], args
    monkeypatch.setenv("PACKETCLIP_ALLOWLIST", str(bad))
    code, err = run_classify(commands[0][:-2], capsys)
    assert (
        code == 1
        and err.strip().endswith("(named by PACKETCLIP_ALLOWLIST)")
        and len(err.strip().splitlines()) == 1
    )


def test_flag_environment_and_config_file_reach_every_commands_engine(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packetclip.commands.serve import open_serving_engine
    from packetclip.pipeline import open_engine

    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text('[[allow]]\nreason = "first"\nnets = "10.0.0.1"\n')
    second.write_text('[[allow]]\nreason = "second"\nnets = "10.0.0.2"\n')
    config = tmp_path / "config.toml"
    config.write_text('allowlist = "second.toml"\n')  # relative to the config file's folder
    monkeypatch.delenv("PACKETCLIP_ALLOWLIST", raising=False)
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(tmp_path / "empty.toml"))
    (tmp_path / "empty.toml").write_text("")
    model = str(bundle_path)

    def reasons(engine: Engine) -> list[str] | None:
        allowlist = engine.allowlist
        return None if allowlist is None else [e.reason for e in allowlist.current().entries]

    openers: list[Callable[..., Engine]] = [
        lambda allowlist=None: open_engine(model, None, None, allowlist=allowlist),
        lambda allowlist=None, config=None: open_serving_engine(model, config, None, 16, allowlist=allowlist)[
            0
        ],
    ]
    for opener in openers:
        assert reasons(opener()) is None  # nothing set: no allowlist, no work per verdict
        assert reasons(opener(allowlist=str(first))) == ["first"]
    monkeypatch.setenv("PACKETCLIP_ALLOWLIST", str(first))
    assert reasons(openers[0]()) == ["first"] and reasons(openers[1]()) == ["first"]
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(config))
    monkeypatch.delenv("PACKETCLIP_ALLOWLIST")
    assert reasons(openers[0]()) == ["second"] and reasons(openers[1](config=str(config))) == ["second"]
    monkeypatch.setenv("PACKETCLIP_ALLOWLIST", str(first))  # environment over file
    assert reasons(openers[0]()) == ["first"]
    assert reasons(openers[0](allowlist=str(second))) == ["second"]  # flag over environment


def test_the_engine_marks_the_same_verdicts_whatever_the_batches(bundle_path: Path, tmp_path: Path) -> None:
    """The engine marks every micro-batch (here of 7 connections and of 256) by the same entries; an engine
    without an allowlist gives the same verdicts, none marked."""
    path = tmp_path / "allow.toml"
    path.write_text(SAMPLE_ALLOWLIST.read_text())
    connections = list(featurize_pcap(LAB_CAPTURE))
    plain = {v.uid: v for v in Engine(bundle_path).classify(connections, "capture.pcap")}
    for batch_size in (7, 256):
        engine = Engine(bundle_path, batch_size=batch_size, allowlist=AllowlistFile(path))
        verdicts = engine.classify(connections, "capture.pcap")
        for verdict in verdicts:
            reference = plain[verdict.uid]
            assert not reference.allowed
            if batch_size == 256:  # the plain engine's batches (the default): bit for bit the same verdict
                assert (verdict.label, verdict.attack, verdict.score) == (
                    reference.label,
                    reference.attack,
                    reference.score,
                )
            assert verdict.allowed == (sample_reason(verdict_record(verdict)) is not None)
        assert engine.allowlist is not None
        assert engine.allowlist.counts.allowed == sum(v.allowed for v in verdicts) > 40
