"""The attack catalogue, checked without root: coverage of every attack class, held-out variants, bounds in
packets and seconds, and that every command line names lab addresses only.

Commands are built against a LabContext with lab addresses and real word lists in a temp dir; nothing runs.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from packetclip.classes import FINE_CLASSES
from packetclip_training.lab.attacks import (
    CATALOGUE,
    DEADLINE_MARGIN_S,
    Variant,
    dictionary_files,
    reflector_block,
    run_reflect,
    run_synflood,
    spoof_block,
    sweep_block,
    syn_packet,
    udp_packet,
)
from packetclip_training.lab.context import LabContext
from packetclip_training.lab.topology import LAB_NETS, REFLECTOR_NET, SPOOF_NET, assert_targets_inside

ATTACK_CLASSES = [fine for fine in FINE_CLASSES if fine != "benign"]
SCALES = (0.02, 0.1, 1.0, 3.0)
SERVERS = {
    "web": "198.18.2.10",
    "web2": "198.18.2.11",
    "ssh": "198.18.2.12",
    "ftp": "198.18.2.13",
    "dns": "198.18.2.14",
    "mqtt": "198.18.2.15",
    "ntp": "198.18.2.16",
    "telnet": "198.18.2.17",
    "mail": "198.18.2.18",
    "db": "198.18.2.19",
}
SWEEP = "198.18.2.0/24"
REFLECTOR = "198.18.3.53"
RIGHT = {
    "ssh": ("deploy", "Summer2024!"),
    "ftp": ("deploy", "Summer2024!"),
    "http_basic": ("admin", "Cookie#77"),
    "http_form": ("alice", "Orange_lab9"),
    "telnet": ("deploy", "Summer2024!"),
    "imap": ("info", "Pepper_77"),
    "pop3": ("info", "Pepper_77"),
    "mysql": ("webapp", "Banana42!"),
    "postgres": ("analytics", "Shadow_lab9"),
}


@pytest.fixture
def lab(tmp_path: Path) -> LabContext:
    words = tmp_path / "words"
    words.mkdir()
    (words / "usernames.txt").write_text(
        "\n".join(["root", "admin", "test", "deploy", "guest", "alice"]) + "\n"
    )
    (words / "passwords.txt").write_text("\n".join(f"guess{i}" for i in range(300)) + "\nSummer2024!\n")
    (words / "dns_queries.txt").write_text("www.lab.internal A\nnas-001x.lab.internal AAAA\n")
    work = tmp_path / "work"
    work.mkdir()
    return LabContext(
        attacker_ip="198.18.3.66",
        servers=dict(SERVERS),
        sweep_cidr=SWEEP,
        dns_zone="lab.internal",
        credentials=dict(RIGHT),
        wordlist_dir=words,
        workdir=work,
        attacker_ips=("198.18.3.66", "198.18.3.67"),
        reflectors={"dns": REFLECTOR, "ntp": REFLECTOR},
    )


def _option(argv: list[str], flag: str) -> str:
    """The value following `flag` in argv; fails the test when the flag is absent."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def _count_lines(path: str) -> int:
    return len([line for line in Path(path).read_text().splitlines() if line.strip()])


def test_every_attack_class_has_at_least_three_variants_and_only_known_classes() -> None:
    counts = Counter(v.fine for v in CATALOGUE)
    assert set(counts) == set(ATTACK_CLASSES)
    assert all(counts[fine] >= 3 for fine in ATTACK_CLASSES), counts


def test_variant_names_are_unique_and_prefixed_by_their_class() -> None:
    names = [v.name for v in CATALOGUE]
    assert len(names) == len(set(names))
    assert all(v.name.startswith(v.fine + "/") for v in CATALOGUE)


@pytest.mark.parametrize("fine", ATTACK_CLASSES)
def test_each_class_holds_out_some_but_not_all_variants(fine: str) -> None:
    variants = [v for v in CATALOGUE if v.fine == fine]
    held = [v for v in variants if v.heldout]
    assert held, f"{fine}: no held-out variant"
    assert len(held) < len(variants) - 1, f"{fine}: fewer than two training variants left"


@pytest.mark.parametrize(
    "fine", ["icmp_flood", "syn_flood", "udp_flood", "dns_flood", "port_scan", "ping_sweep"]
)
def test_heldout_variant_uses_a_tool_not_seen_in_training_where_one_exists(fine: str) -> None:
    variants = [v for v in CATALOGUE if v.fine == fine]
    training_tools = {v.tool for v in variants if not v.heldout}
    heldout_tools = {v.tool for v in variants if v.heldout}
    # dns_flood's held-out hping3 is a technique unseen for that class, but hping3 floods elsewhere.
    if fine == "dns_flood":
        assert heldout_tools - training_tools
    else:
        assert heldout_tools.isdisjoint(training_tools), (heldout_tools, training_tools)


def test_dictionary_attacks_cover_ssh_ftp_basic_auth_and_a_form(lab: LabContext) -> None:
    joined = [" ".join(v.command(lab, 0.1)) for v in CATALOGUE if v.fine == "dictionary_attack"]
    assert any("ssh://" in c or " -M ssh" in c for c in joined)
    assert any("ftp://" in c or " -M ftp" in c or "ftp_login" in c for c in joined)
    assert any("http-get /admin/" in c for c in joined)
    assert any("http-post-form" in c for c in joined)


# The services added beside SSH, FTP and HTTP: which server each one's guessers must aim at.
LOGIN_SERVICES = {"telnet": "telnet", "pop3": "mail", "imap": "mail", "mysql": "db", "postgres": "db"}


@pytest.mark.parametrize(("service", "server"), LOGIN_SERVICES.items())
def test_hydra_guesses_each_login_service_on_its_server_with_its_right_pair_in_the_lists(
    service: str, server: str, lab: LabContext
) -> None:
    aimed = [
        v
        for v in CATALOGUE
        if v.fine == "dictionary_attack"
        and v.tool == "hydra"
        and f" {service}://" in " ".join(v.command(lab, 1.0))
    ]
    assert aimed, f"no hydra variant guesses {service}"
    for variant in aimed:
        argv = variant.command(lab, 1.0)
        target = next(word for word in argv if word.startswith(f"{service}://"))
        assert target.split("://")[1].split("/")[0] == SERVERS[server], (variant.name, target)
        user, password = RIGHT[service]
        assert user in _lines(_option(argv, "-L")) and password in _lines(_option(argv, "-P")), variant.name


def test_medusa_guesses_postgres_on_the_database_server_and_is_the_one_new_heldout_guesser(
    lab: LabContext,
) -> None:
    variant = next(v for v in CATALOGUE if v.name == "dictionary_attack/medusa-postgres-t2")
    argv = variant.command(lab, 1.0)
    assert _option(argv, "-M") == "postgres" and _option(argv, "-h") == SERVERS["db"]
    assert variant.heldout
    guessers = {v: " ".join(v.command(lab, 1.0)) for v in CATALOGUE if v.fine == "dictionary_attack"}
    new_services = [
        v
        for v, line in guessers.items()
        if any(f"{s}://" in line or f"-M {s}" in line for s in LOGIN_SERVICES)
    ]
    assert [v.name for v in new_services if v.heldout] == [variant.name]
    assert len(new_services) >= 7


def _lines(path: str) -> list[str]:
    return Path(path).read_text().split()


def test_syn_floods_hit_80_443_and_22_and_spray_ports(lab: LabContext) -> None:
    ports = set()
    for v in (v for v in CATALOGUE if v.fine == "syn_flood"):
        argv = v.command(lab, 1.0)
        if "-p" in argv or "--dport" in argv:
            ports.add(_option(argv, "-p") if "-p" in argv else _option(argv, "--dport"))
        elif v.tool == "mausezahn":
            ports.add(re.search(r"dp=([\d-]+)", argv[-1]).group(1))  # type: ignore[union-attr]
        else:
            assert v.tool == "t50"  # t50's destination port is random unless given
            ports.add("random")
    assert {"80", "443", "22"} <= ports
    # Sprayed over destination ports: from one source (hping3 ++, t50's default) and from a spoofed block.
    assert {"++1", "random"} <= ports
    # ... and at line rate, to one port and swept: faster than any scan, as real floods and t50 run
    line_rate = {v.name for v in CATALOGUE if v.fine == "syn_flood" and v.tool == "mausezahn"}
    assert {"syn_flood/mausezahn-80-line-rate", "syn_flood/mausezahn-dport-sweep-line-rate"} <= line_rate


def test_every_tool_is_installed() -> None:
    missing = sorted({v.tool for v in CATALOGUE if shutil.which(v.tool) is None})
    assert not missing, f"not on PATH: {missing}"
    assert shutil.which("timeout")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", CATALOGUE, ids=lambda v: v.name)
def test_commands_name_only_the_lab_addresses_of_the_context(
    variant: Variant, scale: float, lab: LabContext
) -> None:
    argv = variant.command(lab, scale)
    # The runner's own check: every dotted quad inside the lab prefixes, and at least one target named.
    named = assert_targets_inside(argv)
    allowed_hosts = set(SERVERS.values()) | {lab.attacker_ip, REFLECTOR}
    sweep = ipaddress.IPv4Network(SWEEP)
    for text in named:
        network = ipaddress.IPv4Network(text, strict=False)
        assert (
            text in allowed_hosts
            or network.subnet_of(sweep)
            or network.subnet_of(SPOOF_NET)
            or network.subnet_of(REFLECTOR_NET)
        ), f"{variant.name}: {text} is not from the context"
    assert "--rand-source" not in argv and "--rand-dest" not in argv
    if variant.tool == "t50":
        # t50 otherwise spoofs random public sources, and silently does so for a CIDR given as --saddr.
        assert _option(argv, "--saddr") == lab.attacker_ip
    if variant.label_source is not None:
        assert_targets_inside([variant.label_source(lab)])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("variant", CATALOGUE, ids=lambda v: v.name)
def test_commands_are_bounded_in_seconds_and_packets(variant: Variant, scale: float, lab: LabContext) -> None:
    argv = variant.command(lab, scale)
    assert argv[:2] == ["timeout", "-s"] and argv[3:5] == ["-k", "1"]
    assert float(argv[5]) <= variant.deadline(scale) - DEADLINE_MARGIN_S + 0.5
    tool_argv = _tool_argv(argv)
    assert Path(tool_argv[0]).name == variant.tool
    assert 0 < variant.max_seconds <= 300
    _assert_packet_bound(variant.tool, tool_argv, scale)


def _tool_argv(argv: list[str]) -> list[str]:
    """The tool's own argv, after the `timeout` wrapper."""
    return argv[6:]


def _assert_packet_bound(tool: str, argv: list[str], scale: float) -> None:
    """Each tool's own limit on how much it sends, with an upper bound that holds at scale 3."""
    limit = 150_000
    if tool == "nping":
        # -c is rounds over every address of the target: a whole reflector block takes -c packets per address.
        assert 1 <= int(_option(argv, "-c")) * ipaddress.IPv4Network(argv[-1]).num_addresses <= limit
    elif tool in ("hping3", "ping"):
        assert 1 <= int(_option(argv, "-c")) <= limit
    elif tool == "t50":
        assert "--flood" not in argv
        assert 1 <= int(_option(argv, "--threshold")) <= limit
    elif tool == "dnsperf":
        assert _option(argv, "-n") == "1" and float(_option(argv, "-l")) > 0
        assert _count_lines(_option(argv, "-d")) <= limit
    elif tool == "dig":
        assert _count_lines(_option(argv, "-f")) <= limit
    elif tool == "slowhttptest":
        assert int(_option(argv, "-c")) <= 2000 and int(_option(argv, "-l")) <= 200
    elif tool == "python3" and ("synflood" in argv or "reflect" in argv):
        assert 1 <= int(_option(argv, "--count")) <= limit and float(_option(argv, "--seconds")) <= 200
        assert float(_option(argv, "--rate")) <= 5000
    elif tool == "python3":
        assert int(_option(argv, "--connections")) <= 2000 and float(_option(argv, "--seconds")) <= 200
    elif tool == "nmap":
        assert _option(argv, "--max-retries") == "1"
        assert re.fullmatch(r"\d+s", _option(argv, "--host-timeout"))
    elif tool == "mausezahn":
        assert _option(argv, "-c") == "1"  # one packet per value of its port range
        low, high = (int(x) for x in re.search(r"[sd]p=(\d+)-(\d+)", argv[-1]).groups())  # type: ignore[union-attr]
        assert 1 <= high - low + 1 <= limit
    elif tool == "masscan":
        assert int(_option(argv, "--rate")) <= 10_000
        assert re.fullmatch(r"1-\d+", _option(argv, "-p"))
    elif tool == "fping":
        assert ipaddress.IPv4Network(_option(argv, "-g")).num_addresses <= 256
    elif tool in ("hydra", "medusa", "ncrack"):
        combos = _count_lines(_option(argv, "-L" if tool == "hydra" else "-U")) * _count_lines(
            _option(argv, "-P")
        )
        assert 1 <= combos <= 10_000
    elif tool == "patator":
        files = [a.split("=", 1)[1] for a in argv if re.match(r"^[01]=", a)]
        assert len(files) == 2 and _count_lines(files[0]) * _count_lines(files[1]) <= 10_000
    else:
        pytest.fail(f"no packet bound known for {tool}")


def test_larger_scale_sends_more(lab: LabContext) -> None:
    """Scale sizes an episode: packet counts, list sizes and sweep blocks grow with it."""
    for v in CATALOGUE:
        assert v.deadline(2.0) >= v.deadline(0.05)
        small_size = _episode_size(v, lab, 0.05)
        large_size = _episode_size(v, lab, 2.0)
        assert large_size >= small_size, v.name
        if v.tool in ("hping3", "t50", "hydra", "medusa", "ncrack", "patator", "dnsperf", "dig") or {
            "synflood",
            "reflect",
        } & set(v.command(lab, 1.0)):
            assert large_size > small_size, v.name


def _episode_size(v: Variant, lab: LabContext, scale: float) -> int:
    """A number that sizes the episode: packets, word-list combinations, queries, ports or addresses."""
    argv = v.command(lab, scale)
    if v.tool in ("hping3", "ping"):
        return int(_option(argv, "-c"))
    if v.tool == "nping":  # rounds over every address of the target (one host, a sweep block, reflectors)
        return int(_option(argv, "-c")) * ipaddress.IPv4Network(argv[-1]).num_addresses
    if v.tool == "t50":
        return int(_option(argv, "--threshold"))
    if v.tool in ("hydra", "medusa", "ncrack"):
        return _count_lines(_option(argv, "-L" if v.tool == "hydra" else "-U")) * _count_lines(
            _option(argv, "-P")
        )
    if v.tool == "patator":
        files = [a.split("=", 1)[1] for a in argv if re.match(r"^[01]=", a)]
        return _count_lines(files[0]) * _count_lines(files[1])
    if v.tool in ("dnsperf", "dig"):
        return _count_lines(_option(argv, "-d" if v.tool == "dnsperf" else "-f"))
    if "synflood" in argv or "reflect" in argv:
        return int(_option(argv, "--count"))
    if v.tool in ("slowhttptest", "python3"):
        return int(_option(argv, "-c" if v.tool == "slowhttptest" else "--connections"))
    if v.tool == "fping" or (v.tool == "nmap" and "-sn" in argv):
        block = next(a for a in argv if "/" in a and a[0].isdigit())
        return ipaddress.IPv4Network(block).num_addresses
    return int(v.deadline(scale))


def test_scale_outside_range_is_refused(lab: LabContext) -> None:
    with pytest.raises(ValueError):
        CATALOGUE[0].command(lab, 0)


def test_dictionary_files_hold_the_right_credentials_late(lab: LabContext) -> None:
    users_path, passwords_path = dictionary_files(lab, "ssh", 5, 40, "t")
    users = users_path.read_text().split()
    passwords = passwords_path.read_text().split()
    assert len(users) == 5 and len(passwords) == 40
    assert "deploy" in users and passwords.index("Summer2024!") >= 30
    assert len(set(passwords)) == len(passwords)


def test_dictionary_files_fill_up_when_the_lab_lists_are_short(lab: LabContext) -> None:
    _, passwords_path = dictionary_files(lab, "http_form", 3, 500, "t")
    passwords = passwords_path.read_text().split()
    assert len(passwords) == 500 and "Orange_lab9" in passwords


@pytest.mark.parametrize(
    ("scale", "expected"), [(0.01, "198.18.2.0/28"), (0.5, "198.18.2.0/25"), (3.0, SWEEP)]
)
def test_sweep_block_scales_inside_the_sweep_cidr(scale: float, expected: str) -> None:
    assert sweep_block(SWEEP, scale) == expected


def test_dns_query_files_are_dnsperf_format(lab: LabContext) -> None:
    variants = [v for v in CATALOGUE if v.tool in ("dnsperf", "dig")]
    for v in variants:
        argv = v.command(lab, 0.1)
        path = _option(argv, "-d" if v.tool == "dnsperf" else "-f")
        lines = Path(path).read_text().splitlines()
        assert lines and all(re.fullmatch(r"[a-z0-9.-]+\.? [A-Z]+", line) for line in lines), lines[:3]
        assert all(line.split()[0].endswith("lab.internal") for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# Spoofed sources, reflection, slow guessing, single-port version probes


SPOOFING = [v for v in CATALOGUE if v.label_source is not None]


def test_spoofing_variants_exist_for_syn_and_reflection() -> None:
    assert {v.fine for v in SPOOFING} == {"syn_flood", "udp_flood"}
    assert any(v.heldout for v in SPOOFING) and any(not v.heldout for v in SPOOFING)


@pytest.mark.parametrize("variant", [v for v in SPOOFING if v.fine == "syn_flood"], ids=lambda v: v.name)
def test_spoofed_syn_floods_draw_sources_from_their_own_block_of_the_spoof_range(
    variant: Variant, lab: LabContext
) -> None:
    argv = variant.command(lab, 1.0)
    block = ipaddress.IPv4Network(_option(argv, "--source-net"))
    assert block.subnet_of(SPOOF_NET)
    assert not any(block.overlaps(net) for net in LAB_NETS)
    # labels.tsv names exactly the block the episode drew from, and no other spoofing variant shares it.
    assert variant.label_source is not None and variant.label_source(lab) == str(block)
    others = [
        ipaddress.IPv4Network(v.label_source(lab))
        for v in SPOOFING
        if v is not variant and v.fine == "syn_flood"
    ]
    assert not any(block.overlaps(other) for other in others)


def test_spoof_range_is_rfc2544_and_apart_from_the_lab_subnets() -> None:
    assert SPOOF_NET.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
    assert not any(SPOOF_NET.overlaps(net) for net in LAB_NETS)
    assert spoof_block(19, 0) == "198.18.128.0/19" and spoof_block(24, 64) == "198.18.192.0/24"


REFLECTIONS = [v for v in SPOOFING if v.fine == "udp_flood"]


@pytest.mark.parametrize("variant", REFLECTIONS, ids=lambda v: v.name)
def test_reflections_spoof_a_lab_server_towards_the_reflector(variant: Variant, lab: LabContext) -> None:
    argv = _tool_argv(variant.command(lab, 1.0))
    if variant.tool == "python3":
        victim, reflectors, port = (
            argv[argv.index("reflect") + 1],
            _option(argv, "--reflector-net"),
            "--dport",
        )
        payload = Path(_option(argv, "--payload")).read_bytes()
    elif variant.tool == "hping3":
        victim, reflectors, port = _option(argv, "-a"), argv[-1], "-p"
        payload = Path(_option(argv, "-E")).read_bytes()
    else:
        victim, reflectors, port = _option(argv, "-S"), argv[-1], "-p"
        payload = bytes.fromhex(_option(argv, "--data"))
    assert victim in SERVERS.values()
    # Requests go to the reflector or to a block of reflector addresses, never to the victim; labels.tsv names
    # exactly where the answers come from.
    assert reflectors == REFLECTOR or ipaddress.IPv4Network(reflectors).subnet_of(REFLECTOR_NET)
    assert variant.label_source is not None and variant.label_source(lab) == reflectors
    if _option(argv, port) == "53":
        import dns.message

        query = dns.message.from_wire(payload)
        assert query.edns == 0 and query.payload == 4096  # asks for the large answer
        assert str(query.question[0].name) == "mirror.internal."
    else:
        assert len(payload) == 48 and payload[0] & 0x07 == 3  # an NTP client request


def test_reflections_come_through_thousands_of_reflector_addresses_of_their_own_block(
    lab: LabContext,
) -> None:
    """Real reflection floods arrive from thousands of reflectors: DNS and NTP variants through a reflector block
    each, one held out, each block apart from the others, the lab subnets and the spoof range."""
    blocks = {
        v.name: ipaddress.IPv4Network(v.label_source(lab))
        for v in REFLECTIONS
        if v.label_source is not None and v.label_source(lab) != REFLECTOR
    }
    assert blocks == {
        "udp_flood/python-dns-reflect-txt-2k": ipaddress.IPv4Network("198.18.64.0/21"),
        "udp_flood/python-ntp-reflect-1k": ipaddress.IPv4Network("198.18.72.0/22"),
        "udp_flood/nping-dns-reflect-any-4k-port443": ipaddress.IPv4Network("198.18.80.0/20"),
    }
    assert [v.heldout for v in REFLECTIONS if v.name in blocks] == [False, False, True]
    assert all(v.fine == "udp_flood" and v.connections == "many" for v in REFLECTIONS if v.name in blocks)
    for name, block in blocks.items():
        assert block.num_addresses >= 1024
        assert not any(block.overlaps(other) for other_name, other in blocks.items() if other_name != name)
    assert REFLECTOR_NET.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
    assert not any(REFLECTOR_NET.overlaps(net) for net in (*LAB_NETS, SPOOF_NET))
    assert reflector_block(21, 0) == "198.18.64.0/21"


def test_slow_guessers_run_one_task_with_waits(lab: LabContext) -> None:
    slow = [v for v in CATALOGUE if v.fine == "dictionary_attack" and re.search(r"-t1(-|$)", v.name)]
    assert len(slow) >= 3
    for v in slow:
        argv = v.command(lab, 1.0)
        assert _option(argv, "-t") == "1"
        if v.tool == "hydra":
            assert "-c" in argv or "-W" in argv


def test_single_port_version_probes(lab: LabContext) -> None:
    probes = [v for v in CATALOGUE if v.fine == "vulnerability_scan" and "-sV-port" in v.name]
    assert len(probes) >= 2
    for v in probes:
        argv = v.command(lab, 1.0)
        assert "-sV" in argv and "," not in _option(argv, "-p") and "-" not in _option(argv, "-p")


def test_syn_packet_is_a_valid_syn_with_linux_options() -> None:
    import dpkt

    src, dst = ipaddress.IPv4Address("198.18.130.7"), ipaddress.IPv4Address("198.18.2.10")
    raw = syn_packet(src.packed, dst.packed, 40000, 80, 12345, 57, 99, 64240, 777)
    ip = dpkt.ip.IP(raw)
    tcp = ip.data
    assert ip.ttl == 57 and ip.p == 6 and (tcp.sport, tcp.dport, tcp.flags) == (40000, 80, dpkt.tcp.TH_SYN)
    assert [kind for kind, _ in dpkt.tcp.parse_opts(tcp.opts)] == [2, 4, 8, 1, 3]
    pseudo = src.packed + dst.packed + bytes([0, 6]) + len(raw[20:]).to_bytes(2, "big")
    words = pseudo + raw[20:]
    total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # the checksum over pseudo-header and segment verifies


@pytest.mark.parametrize(
    ("host", "source_net"),
    [("8.8.8.8", "198.18.128.0/19"), ("198.18.2.10", "10.0.0.0/8"), ("198.18.2.10", "198.18.3.0/24")],
)
def test_synflood_refuses_targets_and_sources_outside_the_lab(host: str, source_net: str) -> None:
    with pytest.raises(ValueError):
        run_synflood(host, 80, source_net, count=1, rate=1, seconds=1)


def test_udp_packet_is_a_valid_datagram() -> None:
    import dpkt

    src, dst = ipaddress.IPv4Address("198.18.2.11"), ipaddress.IPv4Address("198.18.65.9")
    raw = udp_packet(src.packed, dst.packed, 40000, 53, b"query", 64, 7)
    ip = dpkt.ip.IP(raw)
    udp = ip.data
    assert (ip.src, ip.dst, ip.p, ip.len) == (src.packed, dst.packed, 17, len(raw))
    assert (udp.sport, udp.dport, udp.ulen, udp.data) == (40000, 53, 13, b"query")
    pseudo = src.packed + dst.packed + bytes([0, 17]) + udp.ulen.to_bytes(2, "big")
    words = pseudo + raw[20:] + b"\0"
    total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words) - 1, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # the checksum over pseudo-header and datagram verifies


@pytest.mark.parametrize(
    ("victim", "reflector_net", "payload"),
    [
        ("8.8.8.8", "198.18.64.0/21", b"q"),  # a victim outside the lab
        ("198.18.130.1", "198.18.64.0/21", b"q"),  # a spoofed address is no lab host
        ("198.18.65.1", "198.18.64.0/21", b"q"),  # nor is a reflector address
        ("198.18.2.11", "10.0.0.0/8", b"q"),  # reflectors outside the lab
        ("198.18.2.11", "198.18.2.0/24", b"q"),  # lab hosts are no reflector block
        ("198.18.2.11", "198.18.128.0/19", b"q"),  # nor is the spoof range
        ("198.18.2.11", "198.18.0.0/16", b"q"),  # wider than the reflector block
        ("198.18.2.11", "198.18.64.0/21", b""),  # nothing to reflect
        ("198.18.2.11", "198.18.64.0/21", bytes(1500)),  # more than one datagram
    ],
)
def test_reflect_refuses_victims_reflectors_and_requests_outside_its_bounds(
    victim: str, reflector_net: str, payload: bytes
) -> None:
    with pytest.raises(ValueError):
        run_reflect(victim, payload, 53, reflector_net, count=1, rate=1, seconds=1)
