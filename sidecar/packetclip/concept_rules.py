"""Which mission concepts a connection's facts allow an explanation to name.

Owns `FACT_TESTS` (named yes/no questions about one connection, its originator's recent activity and its
responder's inbound connections), `CONCEPT_RULES` (per concept name, the fact tests that must all pass before an
explanation may name it; a leading "!" asks for the test to fail) and `ConceptRules`, which evaluates both for a
micro-batch at once and adds the class rule: a concept a mission lists under some of its fine classes (`classes:`)
describes only those classes. It does not rank concepts or write sentences (`packetclip.explain` does).

The table is keyed by concept name, not stored in the mission files: bundles carry their own copies of the
missions, and an old bundle's concepts are then checked as well as a new one's. A concept the table does not know
is never named, since nothing says what it would claim about the packets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from packetclip.missions import Mission, normalise_concept

if TYPE_CHECKING:
    from packetclip.context import ResponderSummary
    from packetclip.explain import Activity
    from packetclip.featurizer import Connection

# Responder ports (TCP unless said otherwise) whose service a concept names; `Connection.service` (the port guess
# or the sensor's protocol detection) counts too.
DNS_PORTS = frozenset({53, 5353, 5355})  # TCP or UDP
WEB_PORTS = frozenset({80, 443, 3000, 8000, 8008, 8080, 8443, 8888, 9200})
TLS_PORTS = frozenset({443, 465, 636, 853, 993, 995, 8443, 8883})
MAIL_PORTS = frozenset({25, 110, 143, 465, 587, 993, 995})
SHELL_PORTS = frozenset({22, 23, 3389, 5900})
TELEMETRY_PORTS = frozenset({161, 162, 502, 1883, 2404, 5683, 8883, 20000})  # TCP or UDP
# services that ask for a login: the targets of password guessing
LOGIN_PORTS = (
    WEB_PORTS | MAIL_PORTS | SHELL_PORTS | {21, 139, 389, 445, 636, 1433, 1883, 3306, 5432, 6379, 8883}
)
LOGIN_SERVICES = frozenset(
    {
        "ftp",
        "ssh",
        "telnet",
        "http",
        "smtp",
        "pop3",
        "imap",
        "rdp",
        "rfb",
        "smb",
        "ldap",
        "mysql",
        "tds",
        "postgresql",
        "redis",
        "mqtt",
    }
)

LONG_SECONDS = 10.0  # a connection held this long is long-lived: slow attacks hold theirs for minutes
SHORT_SECONDS = 1.0  # a connection over within this is short-lived
MANY = 3  # "many" ports, hosts or connections: at least this many in the originator's window
HIGH_RATE = 100.0  # packets per second from which a rate is high
THOUSANDS_RATE = 1000.0

ESTABLISHED_STATES = frozenset({"S1", "S2", "S3", "SF"})
REFUSED_STATES = frozenset({"REJ", "RSTRH"})
TARGET_RESET_STATES = frozenset({"REJ", "RSTR", "RSTRH"})
UNANSWERED_SYN_STATES = frozenset({"S0", "RSTOS0", "SH"})
NO_SYN_STATES = frozenset({"OTH", "RSTRH", "SHR"})  # the originator's SYN was not seen
# Zeek history letters the tests read: the originator's SYN, ACK and data; the responder's SYN-ACK and reset
HISTORY_LETTERS = "SADhr"


@dataclass(frozen=True)
class _Facts:
    """A micro-batch's facts as arrays (n,), in the terms the fact tests ask about."""

    tcp: np.ndarray
    udp: np.ndarray
    icmp: np.ndarray
    port: np.ndarray  # responder port; for ICMP the code
    icmp_type: np.ndarray  # for ICMP the originator's message type (Zeek's orig_p); -1 otherwise
    ip_version: np.ndarray
    services: list[frozenset[str]]
    orig_pkts: np.ndarray
    resp_pkts: np.ndarray
    orig_bytes: np.ndarray
    resp_bytes: np.ndarray
    duration: np.ndarray
    state: np.ndarray  # conn_state strings
    with_history: np.ndarray  # the sensor recorded a TCP history (hand-made connections may have none)
    letters: dict[
        str, np.ndarray
    ]  # per history letter the tests read (`HISTORY_LETTERS`): whether it is there
    activity_connections: np.ndarray  # 0 where the activity is unknown
    activity_ports: np.ndarray
    activity_responders: np.ndarray
    same_port_connections: np.ndarray  # the originator's connections to this connection's port (0: unknown)
    packet_rate: (
        np.ndarray
    )  # the fastest rate the facts show: the connection's, its originator's or its victim's


def _facts(
    connections: Sequence[Connection],
    activities: Sequence[Activity | None],
    responders: Sequence[ResponderSummary | None],
) -> _Facts:
    proto = np.asarray([c.proto for c in connections])
    port = np.asarray([c.resp_p for c in connections], dtype=np.int64)
    orig_pkts = np.asarray([c.orig_pkts for c in connections], dtype=np.int64)
    resp_pkts = np.asarray([c.resp_pkts for c in connections], dtype=np.int64)
    duration = np.asarray([c.duration for c in connections], dtype=np.float64)
    # a connection's own rate is only read over a measurable duration (one packet has none)
    own_rate = np.where(duration >= 0.001, (orig_pkts + resp_pkts) / np.maximum(duration, 0.001), 0.0)
    origin_rate = np.asarray(
        [a.rate * a.packets / a.connections if a is not None and a.connections else 0.0 for a in activities]
    )
    victim_rate = np.asarray([r.rate if r is not None else 0.0 for r in responders])  # >= 1 packet each
    return _Facts(
        tcp=proto == "tcp",
        udp=proto == "udp",
        icmp=proto == "icmp",
        port=port,
        icmp_type=np.where(proto == "icmp", [c.orig_p for c in connections], -1),
        ip_version=np.asarray([c.ip_version for c in connections]),
        services=[frozenset(filter(None, str(c.service).lower().split(","))) for c in connections],
        orig_pkts=orig_pkts,
        resp_pkts=resp_pkts,
        orig_bytes=np.asarray([c.orig_bytes for c in connections], dtype=np.int64),
        resp_bytes=np.asarray([c.resp_bytes for c in connections], dtype=np.int64),
        duration=duration,
        state=np.asarray([c.conn_state for c in connections]),
        with_history=np.asarray([bool(c.history) for c in connections], dtype=bool),
        letters={
            letter: np.asarray([letter in (c.history or "") for c in connections], dtype=bool)
            for letter in HISTORY_LETTERS
        },
        activity_connections=np.asarray([a.connections if a is not None else 0 for a in activities]),
        activity_ports=np.asarray([a.ports if a is not None else 0 for a in activities]),
        activity_responders=np.asarray([a.responders if a is not None else 0 for a in activities]),
        same_port_connections=np.asarray(
            [
                dict(a.top_ports).get(c.resp_p, 0) if a is not None and c.proto != "icmp" else 0
                for c, a in zip(connections, activities, strict=True)
            ]
        ),
        packet_rate=np.maximum(np.maximum(own_rate, origin_rate), victim_rate),
    )


def _service(f: _Facts, ports: frozenset[int], names: frozenset[str], protos: np.ndarray) -> np.ndarray:
    named = np.asarray([bool(s & names) for s in f.services], dtype=bool)
    return protos & (np.isin(f.port, list(ports)) | named)


def _history_has(f: _Facts, letters: str) -> np.ndarray:
    """Whether any of `letters` is in the connection's history."""
    return np.logical_or.reduce([f.letters[letter] for letter in letters])


def _established(f: _Facts) -> np.ndarray:
    """The three-way handshake completed: a state that says so, or a reset after the originator's ACK."""
    after_reset = np.isin(f.state, ["RSTO", "RSTR"]) & _history_has(f, "h") & _history_has(f, "AD")
    return f.tcp & (np.isin(f.state, list(ESTABLISHED_STATES)) | after_reset)


def _syn_sent(f: _Facts) -> np.ndarray:
    return f.tcp & np.where(f.with_history, _history_has(f, "S"), ~np.isin(f.state, list(NO_SYN_STATES)))


def _port_unreachable(f: _Facts) -> np.ndarray:
    v4 = (f.ip_version != 6) & (f.icmp_type == 3) & (f.port == 3)
    v6 = (f.ip_version == 6) & (f.icmp_type == 1) & (f.port == 4)
    return f.icmp & (v4 | v6)


def _refused(f: _Facts) -> np.ndarray:
    return f.tcp & np.isin(f.state, list(REFUSED_STATES))


def _echo_request(f: _Facts) -> np.ndarray:
    return f.icmp & np.isin(f.icmp_type, [8, 128])


# Each test answers one question for every row of a micro-batch.
FACT_TESTS: dict[str, Callable[[_Facts], np.ndarray]] = {
    "tcp": lambda f: f.tcp,
    "udp": lambda f: f.udp,
    "icmp": lambda f: f.icmp,
    "ports": lambda f: f.tcp | f.udp,  # has ports at all
    "dns": lambda f: _service(f, DNS_PORTS, frozenset({"dns"}), f.tcp | f.udp),
    "web": lambda f: _service(f, WEB_PORTS, frozenset({"http"}), f.tcp),
    "tls": lambda f: _service(f, TLS_PORTS, frozenset({"ssl", "tls"}), f.tcp),
    "ssh": lambda f: _service(f, frozenset({22}), frozenset({"ssh"}), f.tcp),
    "ftp": lambda f: _service(f, frozenset({21}), frozenset({"ftp"}), f.tcp),
    "mail": lambda f: _service(f, MAIL_PORTS, frozenset({"smtp", "pop3", "imap"}), f.tcp),
    "shell": lambda f: _service(f, SHELL_PORTS, frozenset({"ssh", "telnet", "rdp", "rfb"}), f.tcp),
    "login": lambda f: _service(f, LOGIN_PORTS, LOGIN_SERVICES, f.tcp),
    "ntp": lambda f: _service(f, frozenset({123}), frozenset({"ntp"}), f.udp),
    "telemetry": lambda f: _service(f, TELEMETRY_PORTS, frozenset({"mqtt", "snmp", "modbus"}), f.tcp | f.udp),
    "echo request": _echo_request,
    "icmp timestamp": lambda f: f.icmp & np.isin(f.icmp_type, [13, 14]),
    "icmp port unreachable": _port_unreachable,
    "answered": lambda f: f.resp_pkts > 0,
    "sent payload": lambda f: f.orig_bytes > 0,
    "got payload": lambda f: f.resp_bytes > 0,
    "any payload": lambda f: (f.orig_bytes > 0) | (f.resp_bytes > 0),
    "more back than sent": lambda f: f.resp_bytes > f.orig_bytes,
    "one packet out": lambda f: f.orig_pkts == 1,
    "short": lambda f: f.duration < SHORT_SECONDS,
    "long": lambda f: f.duration >= LONG_SECONDS,
    "established": _established,
    "still open": lambda f: f.tcp & (f.state == "S1"),
    "syn sent": _syn_sent,
    "unanswered syn": lambda f: f.tcp & np.isin(f.state, list(UNANSWERED_SYN_STATES)),
    "ack without syn": lambda f: f.tcp & _history_has(f, "A") & ~_history_has(f, "S"),
    "syn-ack seen": lambda f: f.tcp & (_history_has(f, "h") | _established(f)),
    "refused": _refused,
    "reset by target": lambda f: f.tcp & (np.isin(f.state, list(TARGET_RESET_STATES)) | _history_has(f, "r")),
    # evidence of a closed port: a TCP refusal or an ICMP port unreachable (silence may be a filter)
    "closed port": lambda f: _refused(f) | _port_unreachable(f),
    "open port": lambda f: (f.tcp & (_history_has(f, "h") | _established(f))) | (f.udp & (f.resp_bytes > 0)),
    "repeated": lambda f: f.activity_connections >= MANY,
    "many ports": lambda f: f.activity_ports >= MANY,
    "many hosts": lambda f: f.activity_responders >= MANY,
    "same port again": lambda f: f.same_port_connections >= 2,
    "high rate": lambda f: f.packet_rate >= HIGH_RATE,
    "thousands per second": lambda f: f.packet_rate >= THOUSANDS_RATE,
}

# Concept name -> the fact tests it needs ("!" = must fail). () claims nothing the packets could contradict.
CONCEPT_RULES: dict[str, tuple[str, ...]] = {
    # benign
    "web browsing": ("web", "established"),
    "tls session": ("tls", "established"),
    "file transfer": ("established", "any payload"),
    "dns lookup": ("dns",),
    "remote shell": ("shell", "established"),
    "email": ("mail",),
    "telemetry": ("telemetry",),
    "time synchronisation": ("ntp",),
    "http request": ("web", "sent payload"),
    "page download": ("web", "got payload"),
    "answered request": ("sent payload", "got payload"),
    "encrypted payload": ("any payload", "!icmp"),
    "certificate exchange": ("tls", "got payload"),
    "completed handshake": ("established",),
    "bulk data": ("any payload",),
    "download": ("got payload",),
    "upload": ("sent payload",),
    "single query": ("dns", "one packet out"),
    "single answer": ("dns", "got payload"),
    "name resolution": ("dns",),
    "interactive session": ("shell", "established"),
    "keystroke timing": ("shell", "sent payload"),
    "mail delivery": ("mail",),
    "mailbox check": ("mail",),
    "periodic messages": ("telemetry",),
    "publish and subscribe": ("telemetry",),
    "sensor readings": ("telemetry",),
    "ntp request": ("ntp",),
    "clock offset": ("ntp",),
    # brute force
    "repeated login": ("login", "repeated"),
    "authentication failure": ("login", "got payload"),
    "password guessing": ("login", "sent payload"),
    "credential": ("login", "sent payload"),
    "ssh login": ("ssh", "sent payload"),
    "ftp login": ("ftp", "sent payload"),
    "http login": ("web", "sent payload"),
    "many short connections": ("repeated", "short"),
    "same target port": ("same port again",),
    "parallel login tasks": ("login", "repeated"),
    "login rejected": ("login", "got payload"),
    "access denied": ("login", "got payload"),
    "permission denied response": ("login", "got payload"),
    "dictionary attack": ("login", "sent payload"),
    "wordlist": ("login", "sent payload"),
    "common passwords": ("login", "sent payload"),
    "username": ("login", "sent payload"),
    "password": ("login", "sent payload"),
    "user name list": ("login", "sent payload"),
    "ssh key exchange": ("ssh", "sent payload"),
    "encrypted authentication": ("login", "sent payload", "!ftp"),
    "user and pass commands": ("ftp", "sent payload"),
    "cleartext credentials": ("login", "sent payload", "!tls", "!ssh"),
    "basic authentication": ("web", "sent payload"),
    "login form post": ("web", "sent payload"),
    "unauthorized response": ("web", "got payload"),
    # denial of service
    "flood": (),
    "high packet rate": ("high rate",),
    "half-open connection": ("tcp", "!established"),
    "syn": ("syn sent",),
    "icmp echo": ("echo request",),
    "udp datagram": ("udp",),
    "dns query storm": ("dns", "sent payload"),
    "amplification": ("udp", "more back than sent"),
    "resource exhaustion": (),
    "slow headers": ("web", "sent payload", "long"),
    "incomplete request": ("tcp", "established", "sent payload", "!got payload"),
    "packet storm": ("high rate",),
    "repeated identical packets": ("repeated",),
    "no application payload exchange": ("!any payload",),
    "thousands of packets per second": ("thousands per second",),
    "tiny inter-arrival time": ("high rate",),
    "bandwidth saturation": ("high rate",),
    "unanswered syn": ("unanswered syn",),
    "handshake never completed": ("tcp", "!established"),
    "syn backlog exhaustion": ("syn sent", "!established"),
    "tcp connection request": ("syn sent",),
    "random source port": ("ports",),
    "reset from the target": ("reset by target",),
    "ping flood": ("echo request",),
    "echo request": ("echo request",),
    "echo reply": ("echo request", "answered"),
    "connectionless traffic": ("udp",),
    "closed port": ("closed port",),
    "icmp port unreachable": ("icmp port unreachable",),
    "dns query": ("dns", "sent payload"),
    "random subdomain": ("dns", "sent payload"),
    "nxdomain": ("dns", "got payload"),
    "resolver overload": ("dns",),
    "large response": ("got payload", "more back than sent"),
    "reflected traffic": ("udp", "more back than sent"),
    "server overload": (),
    "connection table exhaustion": ("ports",),
    "worker pool exhaustion": ("tcp", "established"),
    "partial http request": ("web", "established", "sent payload", "!got payload"),
    "keep-alive header trickle": ("web", "sent payload", "long"),
    "long-lived idle connection": ("tcp", "long"),
    "request never finished": ("tcp", "established", "sent payload", "!got payload"),
    "slow post body": ("web", "sent payload", "long"),
    "held-open socket": ("still open",),
    # reconnaissance
    "port scan": ("ports",),
    "probe": (),
    "syn to many ports": ("syn sent", "many ports"),
    "rst responses": ("reset by target",),
    "host discovery": (),
    "icmp echo sweep": ("echo request",),
    "os fingerprint": (),
    "tcp options probes": ("syn sent",),
    "service version banner": ("got payload", "!icmp"),
    "vulnerability script": ("sent payload",),
    "sequential ports": ("many ports",),
    "many destination ports": ("many ports",),
    "open port": ("open port",),
    "single packet connection": ("one packet out",),
    "no payload": ("!any payload",),
    "short-lived connection": ("short",),
    "stealth scan": ("tcp", "!established"),
    "half-open scan": ("syn sent", "!established"),
    "unusual tcp flags": ("tcp", "!established"),
    "rejected connection": ("refused",),
    "connection refused": ("refused",),
    "live host check": (),
    "many target addresses": ("many hosts",),
    "ack ping": ("ack without syn",),
    "icmp timestamp request": ("icmp timestamp",),
    "address range": ("many hosts",),
    "tcp window size": ("tcp",),
    "ip id sequence": (),
    "unusual flag combination": ("tcp", "!established"),
    "window scale option": ("syn sent",),
    "timestamp option": ("syn sent",),
    "odd option order": ("syn sent",),
    "banner grabbing": ("got payload", "!icmp"),
    "protocol handshake probe": ("sent payload", "!icmp"),
    "tls handshake probe": ("tls", "sent payload"),
    "http enumeration": ("web", "sent payload"),
    "known vulnerability check": ("sent payload",),
    "many http requests": ("web", "sent payload", "repeated"),
    "error responses": ("got payload",),
}


def _checked_table() -> tuple[list[str], dict[str, list[tuple[int, bool]]]]:
    """The test names, and per concept its (test index, wanted outcome) pairs; a typo fails at import."""
    names = list(FACT_TESTS)
    index = {name: i for i, name in enumerate(names)}
    table: dict[str, list[tuple[int, bool]]] = {}
    for concept, tests in CONCEPT_RULES.items():
        pairs = []
        for test in tests:
            name = test.removeprefix("!")
            if name not in index:
                raise KeyError(f"concept {concept!r}: unknown fact test {name!r}")
            pairs.append((index[name], not test.startswith("!")))
        table[normalise_concept(concept)] = pairs
    return names, table


_TEST_NAMES, _RULES = _checked_table()


def has_rule(concept: str) -> bool:
    return normalise_concept(concept) in _RULES


class ConceptRules:
    """Per micro-batch, which of a bundle's concepts (columns, in `concepts.json` order) each row may name.

    A concept is allowed for a row when its rule's fact tests hold and it may describe the row's class: the
    mission that maps the class is the concept's mission, and the concept is either in the class's own list or
    in no class list of that mission."""

    def __init__(
        self,
        concepts: Sequence[tuple[str, str]],
        missions: Sequence[Mission],
        mission_of_class: Mapping[str, str],
    ) -> None:
        self.concepts = list(concepts)
        width = len(_TEST_NAMES)
        # (K, 2T): column t asks test t to pass, column T + t asks it to fail; unknown concepts ask the impossible
        self._needs = np.zeros((len(self.concepts), 2 * width), dtype=np.float32)
        self.unknown: list[str] = []
        for column, (_, concept) in enumerate(self.concepts):
            rule = _RULES.get(normalise_concept(concept))
            if rule is None:
                self.unknown.append(concept)
                self._needs[column, :] = 1.0
                continue
            for test, wanted in rule:
                self._needs[column, test if wanted else width + test] = 1.0
        self._class_columns: dict[str, np.ndarray] = {}
        by_name = {m.name: m for m in missions}
        for fine, mission_name in mission_of_class.items():
            mission = by_name.get(mission_name)
            listed = {
                normalise_concept(c) for words in (mission.classes if mission else {}).values() for c in words
            }
            own = {normalise_concept(c) for c in (mission.classes.get(fine, ()) if mission else ())}
            self._class_columns[fine] = np.asarray(
                [
                    m == mission_name and (normalise_concept(c) in own or normalise_concept(c) not in listed)
                    for m, c in self.concepts
                ],
                dtype=bool,
            )

    def allowed(
        self,
        connections: Sequence[Connection],
        activities: Sequence[Activity | None],
        attacks: Sequence[str],
        responders: Sequence[ResponderSummary | None] | None = None,
    ) -> np.ndarray:
        """(n, K) bool: row i may name concept column k (its facts allow it and it may describe the class)."""
        return self.facts_allow(connections, activities, responders) & self.class_allows(attacks)

    def facts_allow(
        self,
        connections: Sequence[Connection],
        activities: Sequence[Activity | None],
        responders: Sequence[ResponderSummary | None] | None = None,
    ) -> np.ndarray:
        """(n, K) bool: the fact tests of concept column k's rule all have the wanted outcome for row i."""
        if not connections:
            return np.zeros((0, len(self.concepts)), dtype=bool)
        facts = _facts(connections, activities, responders or [None] * len(connections))
        passed = np.stack([FACT_TESTS[name](facts) for name in _TEST_NAMES], axis=1)  # (n, T)
        outcomes = np.concatenate([passed, ~passed], axis=1).astype(np.float32)  # (n, 2T)
        # a concept holds when every test it needs has the wanted outcome: count the misses
        missed = (1.0 - outcomes) @ self._needs.T  # (n, K)
        return missed == 0

    def class_allows(self, attacks: Sequence[str]) -> np.ndarray:
        """(n, K) bool: concept column k may describe class attacks[i]."""
        nothing = np.zeros(len(self.concepts), dtype=bool)
        if not attacks:
            return np.zeros((0, len(self.concepts)), dtype=bool)
        return np.stack([self._class_columns.get(attack, nothing) for attack in attacks])
