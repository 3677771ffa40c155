"""Labelling rules: which label a connection gets from the source that describes it.

Owns the three rules (lab episodes, the real-capture MANIFEST, CICFlowMeter flow labels mapped to fine classes)
and the reasons a connection is dropped instead. Does not read files (see `sources`) nor featurize packets.

A rule returns either a `Label` or a `Drop` naming why the connection has no trustworthy label; the build counts
drops by reason so that nothing disappears silently.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from packetclip.classes import FINE_CLASSES, coarse_of

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionKey(Protocol):
    """The part of a featurized connection that labelling looks at."""

    ts: float
    proto: str
    orig_h: str
    resp_h: str
    orig_p: int
    resp_p: int


@dataclass(frozen=True)
class Label:
    """The labels stored with a connection."""

    coarse: str
    fine: str
    variant: str  # the attack variant (lab scenario variant, real file, CSV label); "" for benign
    heldout: bool  # a held-out variant never enters train or val
    episode: str  # lab episode id / real file; "" where the source has none

    @classmethod
    def of_fine(cls, fine: str, variant: str = "", heldout: bool = False, episode: str = "") -> Label:
        return cls(coarse=coarse_of(fine), fine=fine, variant=variant, heldout=heldout, episode=episode)


BENIGN = Label.of_fine("benign")


@dataclass(frozen=True)
class Drop:
    """A connection left out of the dataset, and why."""

    reason: str


def parse_network(text: str) -> IpNetwork:
    """An address or a CIDR as a network (a bare address is a /32 or /128)."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_networks(text: str) -> list[IpNetwork]:
    """Addresses or CIDRs separated by commas or spaces; an empty field gives an empty list."""
    return [parse_network(part) for part in text.replace(",", " ").split() if part]


def address_in(address: str, networks: Iterable[IpNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


# ---------------------------------------------------------------------------------------------------------------
# Lab runs


@dataclass(frozen=True)
class Episode:
    """One row of a lab run's labels.tsv."""

    episode: str
    scenario: str
    variant: str
    coarse: str
    fine: str
    attacker: IpNetwork
    target: str
    start_ts: float
    end_ts: float
    tool: str
    heldout: bool

    def covers(self, address: str, ts: float) -> bool:
        return self.start_ts <= ts <= self.end_ts and address_in(address, [self.attacker])

    @property
    def label(self) -> Label:
        return Label(self.coarse, self.fine, self.variant, self.heldout, self.episode)


class LabLabeller:
    """The lab rule (CONTRACTS.md section 2).

    - originator is an attacker address and the first packet lies in one of that attacker's episodes: the
      episode's labels; in none of them: dropped (`attacker_outside_episode`); in several with different classes:
      dropped (`overlapping_episodes`), since no single label is true;
    - an attacker as responder: dropped (`attacker_is_responder`): attackers generate no benign traffic, and a
      connection towards them is neither a clean attack sample nor benign;
    - a reflector (hosts.tsv role `reflector`: an open server that only ever answers requests spoofed in a
      victim's name; its row may be a CIDR, a block of addresses one host answers from) is an attacker, and a
      TCP/UDP connection *to* it gets its episode's labels too: its answers come from a service port to the
      victim's ephemeral one, so the connection tracker (like Zeek) takes the victim for the originator; ICMP
      errors the victim sends back stay `attacker_is_responder`, as for every other flood;
    - both ends lab hosts that are not attackers: benign;
    - an address the run does not list (IPv6 link-local/multicast housekeeping, spoofed sources not covered by an
      episode's attacker CIDR): dropped (`host_not_in_hosts`).
    """

    def __init__(self, episodes: list[Episode], hosts: Mapping[str, str]):
        self.episodes = sorted(episodes, key=lambda e: e.start_ts)
        networks = {parse_network(ip): role for ip, role in hosts.items()}
        self.hosts = {
            net.network_address.compressed: role for net, role in networks.items() if net.num_addresses == 1
        }
        self.reflectors = [net for net, role in networks.items() if role == "reflector"]
        self.attackers: list[IpNetwork] = [e.attacker for e in self.episodes] + self.reflectors
        self.attackers += [net for net, role in networks.items() if role == "attacker"]

    def label(self, conn: ConnectionKey) -> Label | Drop:
        if address_in(conn.orig_h, self.attackers):
            return self._attack_label(conn.orig_h, conn.ts)
        if conn.proto in ("tcp", "udp") and address_in(conn.resp_h, self.reflectors):
            return self._attack_label(conn.resp_h, conn.ts)
        if address_in(conn.resp_h, self.attackers):
            return Drop("attacker_is_responder")
        orig_role = self.hosts.get(ipaddress.ip_address(conn.orig_h).compressed)
        resp_role = self.hosts.get(ipaddress.ip_address(conn.resp_h).compressed)
        if orig_role is None or resp_role is None:
            return Drop("host_not_in_hosts")
        return BENIGN

    def _attack_label(self, source: str, ts: float) -> Label | Drop:
        matches = [e for e in self.episodes if e.covers(source, ts)]
        if not matches:
            return Drop("attacker_outside_episode")
        if len({(e.fine, e.variant, e.heldout) for e in matches}) > 1:
            return Drop("overlapping_episodes")
        return matches[-1].label


# ---------------------------------------------------------------------------------------------------------------
# Real captures (MANIFEST.tsv)


class ManifestLabeller:
    """The rule for one file of the real-capture MANIFEST.

    - a benign file: every connection benign;
    - an attack file with `attacker_ip`: connections originated by the attacker get the file's attack label, the
      others are benign, except connections *to* the attacker, which are dropped (`attacker_is_responder`): in
      these captures they are the attack's own side channels (FTP active data, scanner call-backs), so calling
      them benign would put attack traffic in the benign class;
    - an attack file without `attacker_ip`: every connection gets the file's label (the file is the attack).
    """

    def __init__(self, file: str, coarse: str, fine: str, attacker_ip: str):
        if fine not in FINE_CLASSES:
            raise ValueError(f"{file}: unknown attack class {fine!r}; known: {', '.join(FINE_CLASSES)}")
        if coarse_of(fine) != coarse:
            raise ValueError(
                f"{file}: label {coarse!r} does not match attack {fine!r} (expected {coarse_of(fine)!r})"
            )
        self.file = file
        self.attackers = parse_networks(attacker_ip)
        is_attack = fine != "benign"
        self.attack = Label.of_fine(fine, variant=f"real:{file}", episode=file) if is_attack else None

    def label(self, conn: ConnectionKey) -> Label | Drop:
        if self.attack is None:
            return BENIGN
        if not self.attackers:
            return self.attack
        if address_in(conn.orig_h, self.attackers):
            return self.attack
        if address_in(conn.resp_h, self.attackers):
            return Drop("attacker_is_responder")
        return BENIGN


# ---------------------------------------------------------------------------------------------------------------
# CICFlowMeter label strings

DROP = "drop"  # a mapping value: rows with this label are left out (counted), e.g. a class we do not model

# ACI-IoT-2023's `Label` values (DATA.md). ARP Spoofing is not IP traffic we classify: dropped, counted.
ACI_IOT_2023_LABELS: dict[str, str] = {
    "Benign": "benign",
    "Port Scan": "port_scan",
    "Ping Sweep": "ping_sweep",
    "Vulnerability Scan": "vulnerability_scan",
    "OS Scan": "os_scan",
    "ICMP Flood": "icmp_flood",
    "DNS Flood": "dns_flood",
    "Slowloris": "slowloris",
    "SYN Flood": "syn_flood",
    "UDP Flood": "udp_flood",
    "Dictionary Attack": "dictionary_attack",
    "ARP Spoofing": DROP,
}

BUILTIN_LABEL_MAPS: dict[str, dict[str, str]] = {"aci-iot-2023": ACI_IOT_2023_LABELS}


def normalize_label(text: str) -> str:
    """CSV label strings differ in case and padding between releases ("BENIGN", " Benign")."""
    return " ".join(text.split()).casefold()


class FlowLabelMap:
    """Maps a CSV `Label` string to a fine class, or to `drop`."""

    def __init__(self, mapping: Mapping[str, str], name: str):
        self.name = name
        self.mapping: dict[str, str] = {}
        for raw, fine in mapping.items():
            value = str(fine).strip() if fine is not None else DROP
            if value != DROP and value not in FINE_CLASSES:
                raise ValueError(
                    f"label map {name}: {raw!r} maps to unknown class {value!r}; "
                    f"use one of {', '.join(FINE_CLASSES)} or {DROP!r}"
                )
            self.mapping[normalize_label(str(raw))] = value

    def fine_of(self, raw_label: str) -> str | Drop:
        """The fine class of a CSV label, or a Drop saying why the row has none."""
        value = self.mapping.get(normalize_label(raw_label))
        if value is None:
            return Drop("unmapped_label")
        if value == DROP:
            return Drop("label_mapped_to_drop")
        return value

    def label(self, raw_label: str) -> Label | Drop:
        fine = self.fine_of(raw_label)
        if isinstance(fine, Drop):
            return fine
        variant = "" if fine == "benign" else f"flows:{raw_label.strip()}"
        return Label.of_fine(fine, variant=variant)
