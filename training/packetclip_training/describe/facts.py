"""Connection facts to sentences that are true of them.

Owns checking a Zeek-conn-like facts dict (`Connection.facts()`, optionally with `proto`, `orig_p` and `resp_p`
from `Connection.record()` or a dataset row) and rendering its numbers and states as clauses, each in several
wordings. Every number a clause prints comes from the facts through `format_seconds` or `str(int)`, so a
description never states a number the connection does not have. Class wording is `phrases.py`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# the dataset columns a description reads (`Facts` from a dataset row)
FACT_COLUMNS = (
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "history",
    "service",
    "proto",
    "resp_p",
)


class FactsError(ValueError):
    """A facts record that cannot be described (missing or malformed fields); callers count and skip it."""


@dataclass(frozen=True)
class Facts:
    """The facts a description may state."""

    duration: float
    orig_pkts: int
    resp_pkts: int
    orig_bytes: int
    resp_bytes: int
    conn_state: str
    history: str
    service: str
    proto: str  # "tcp" | "udp" | "icmp" | "" when not given
    resp_p: int | None  # None when not given (facts() alone carries no ports)


def parse_facts(raw: Mapping[str, object]) -> Facts:
    """`Facts` from a dict; `FactsError` names the first bad field."""
    try:
        duration = float(raw.get("duration") or 0.0)  # type: ignore[arg-type]
        counts = {k: int(raw.get(k) or 0) for k in ("orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes")}  # type: ignore[call-overload]
        resp_p = raw.get("resp_p")
        port = None if resp_p is None or (isinstance(resp_p, float) and math.isnan(resp_p)) else int(resp_p)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise FactsError(f"malformed facts: {exc}") from exc
    if not math.isfinite(duration) or duration < 0 or any(v < 0 for v in counts.values()):
        raise FactsError(f"impossible facts: duration {duration}, counts {counts}")
    if counts["orig_pkts"] + counts["resp_pkts"] == 0:
        raise FactsError("a connection without packets")
    return Facts(
        duration=duration,
        conn_state=str(raw.get("conn_state") or "OTH"),
        history=str(raw.get("history") or ""),
        service=str(raw.get("service") or ""),
        proto=str(raw.get("proto") or "").lower(),
        resp_p=port,
        **counts,
    )


def format_seconds(seconds: float) -> str:
    """A duration as printed in descriptions (the precision a reader needs, never more)."""
    if seconds >= 10:
        return f"{seconds:.0f} seconds"
    if seconds >= 1:
        return f"{seconds:.1f} seconds"
    if seconds >= 0.001:
        return f"{seconds * 1000:.0f} milliseconds"
    return "under a millisecond"


def count(n: int, noun: str) -> str:
    """'1 packet', '3 packets'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# Zeek service names as analysts say them
SERVICE_NAMES = {
    "ssl": "TLS",
    "quic": "QUIC",
    "dns": "DNS",
    "ssh": "SSH",
    "ftp": "FTP",
    "ftp-data": "FTP data",
    "http": "HTTP",
    "ntp": "NTP",
    "smtp": "SMTP",
    "imap": "IMAP",
    "pop3": "POP3",
    "mqtt": "MQTT",
    "ssdp": "SSDP",
    "snmp": "SNMP",
}

CONNECTION_WORDS = ("connection", "flow", "session", "conversation")

PROTO_NAMES = {"tcp": ("TCP",), "udp": ("UDP",), "icmp": ("ICMP",), "": ("",)}

# Zeek conn_state -> wordings; TCP states describe the handshake, the others replies.
STATE_PHRASES: dict[str, tuple[str, ...]] = {
    "S0": ("the responder never answered", "no reply came back", "the request went unanswered"),
    "S1": ("the handshake completed but the connection was never closed", "it was established and left open"),
    "SF": ("it was set up and closed normally", "it ended cleanly", "both sides finished it normally"),
    "REJ": (
        "the responder rejected it with a reset",
        "it was refused with a reset",
        "the target answered with a reset",
    ),
    "S2": ("it was established and only the originator tried to close it",),
    "S3": ("it was established and only the responder tried to close it",),
    "RSTO": ("the originator aborted it with a reset", "the originator reset it"),
    "RSTR": ("the responder aborted it with a reset", "the responder reset it"),
    "RSTOS0": ("the originator sent a SYN and then a reset, with no answer in between",),
    "RSTRH": ("the responder sent a SYN-ACK and then a reset, with no SYN seen",),
    "SH": ("the originator sent a SYN and a FIN and got no answer", "a SYN and a FIN went unanswered"),
    "SHR": ("the responder sent a SYN-ACK and a FIN, with no SYN seen",),
    "OTH": ("no handshake was seen", "it was seen without its start"),
}
NON_TCP_STATES: dict[str, tuple[str, ...]] = {
    "S0": ("no reply came back", "nothing answered", "it was one-sided"),
    "SF": ("replies came back", "the responder answered", "traffic flowed both ways"),
}


def state_clause(facts: Facts, rng: random.Random) -> str:
    """What the connection's state means, in one of several wordings."""
    if facts.proto in ("udp", "icmp") and facts.conn_state in NON_TCP_STATES:
        return rng.choice(NON_TCP_STATES[facts.conn_state])
    phrases = STATE_PHRASES.get(facts.conn_state)
    if phrases is None:
        return f"its state was {facts.conn_state}"
    return rng.choice(phrases)


def packets_clause(facts: Facts, rng: random.Random) -> str:
    """Packet counts, in one of several wordings (all numbers from the facts)."""
    o, r = facts.orig_pkts, facts.resp_pkts
    if r == 0:
        return rng.choice(
            (
                f"the originator sent {count(o, 'packet')} and received none",
                f"{count(o, 'packet')} went out and nothing came back",
                f"it carried {count(o, 'packet')}, all from the originator",
            )
        )
    return rng.choice(
        (
            f"the originator sent {count(o, 'packet')} and the responder {count(r, 'packet')}",
            f"{count(o, 'packet')} went out and {count(r, 'packet')} came back",
            f"it carried {count(o + r, 'packet')} in total, {o} from the originator",
            f"{count(r, 'packet')} answered {count(o, 'packet')}",
        )
    )


def bytes_clause(facts: Facts, rng: random.Random) -> str:
    """Payload volume."""
    o, r = facts.orig_bytes, facts.resp_bytes
    if o == 0 and r == 0:
        return rng.choice(
            (
                "no payload was exchanged",
                "it carried no application data",
                "the packets were empty of payload",
            )
        )
    if r == 0:
        return rng.choice(
            (
                f"{count(o, 'byte')} of payload went out and none came back",
                f"the originator sent {count(o, 'byte')} of payload, the responder none",
            )
        )
    return rng.choice(
        (
            f"{count(o, 'byte')} of payload went out and {count(r, 'byte')} came back",
            f"the originator sent {count(o, 'byte')} of data and received {count(r, 'byte')}",
            f"it moved {count(o, 'byte')} upstream and {count(r, 'byte')} downstream",
        )
    )


def duration_clause(facts: Facts, rng: random.Random) -> str:
    """How long it lasted."""
    if facts.duration == 0:
        return rng.choice(("it lasted no measurable time", "all of it happened at one instant"))
    spoken = format_seconds(facts.duration)
    if not spoken[0].isdigit():
        return rng.choice((f"it lasted {spoken}", f"it was over in {spoken}"))
    return rng.choice((f"it lasted {spoken}", f"it was over after {spoken}", f"it stayed open for {spoken}"))


def target_phrase(facts: Facts, rng: random.Random) -> str:
    """'to port 22 (ssh)', 'to the http service', or '' when neither port nor service is known."""
    service = SERVICE_NAMES.get(facts.service, facts.service)
    if facts.resp_p is not None and facts.proto in ("tcp", "udp"):
        if service:
            return rng.choice(
                (f"to port {facts.resp_p} ({service})", f"to the {service} service on port {facts.resp_p}")
            )
        return f"to port {facts.resp_p}"
    if service:
        return rng.choice((f"to the {service} service", f"towards {service}"))
    return ""


def opening(facts: Facts, rng: random.Random) -> str:
    """The subject of a description: 'A short TCP connection to port 80 (HTTP)'."""
    proto = PROTO_NAMES.get(facts.proto, ("",))[0]
    noun = rng.choice(CONNECTION_WORDS)
    size = ""
    if facts.duration < 1 and rng.random() < 0.5:
        size = rng.choice(("short ", "brief ", "short-lived "))
    words = " ".join(w for w in (f"{size}{proto}".strip(), noun) if w)
    # by sound: "an ICMP flow", "a UDP flow", "an open ..."
    article = "An" if words[0].lower() in "aeio" or words.lower().startswith("icmp") else "A"
    target = target_phrase(facts, rng)
    return f"{article} {words} {target}".strip()


FACT_CLAUSES = (packets_clause, bytes_clause, duration_clause, state_clause)
