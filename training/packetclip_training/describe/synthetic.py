"""Plausible Zeek-conn-like facts per fine class, for figures and tests when no dataset is at hand.

Owns one generator per fine class, shaped after what the lab's tools produce (a SYN flood: one SYN per source
port, S0 or REJ; a dictionary attack: many short completed SSH/FTP/HTTP logins ...). These facts never train a
model: descriptions for training come from the dataset's real facts.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Facts = dict[str, object]


def _tcp(
    rng: random.Random, port: int, service: str, state: str, history: str, **counts: int | float
) -> Facts:
    return {
        "proto": "tcp",
        "resp_p": port,
        "service": service,
        "conn_state": state,
        "history": history,
        **counts,
    }


def _syn_flood(rng: random.Random) -> Facts:
    port, service = rng.choice(((80, "http"), (443, "ssl"), (22, "ssh"), (8080, "http")))
    answered = rng.random() < 0.4
    return _tcp(
        rng,
        port,
        service,
        "REJ" if answered else "S0",
        "Sr" if answered else "S",
        duration=rng.uniform(0, 0.002) if answered else 0.0,
        orig_pkts=1,
        resp_pkts=int(answered),
        orig_bytes=0,
        resp_bytes=0,
    )


def _icmp_flood(rng: random.Random) -> Facts:
    n = rng.randint(500, 20000)
    answered = rng.random() < 0.7
    size = rng.choice((0, 56, 512, 1200))
    return {
        "proto": "icmp",
        "resp_p": 0,
        "service": "",
        "conn_state": "SF" if answered else "S0",
        "history": "",
        "duration": n / rng.uniform(500, 3000),
        "orig_pkts": n,
        "resp_pkts": n if answered else 0,
        "orig_bytes": n * size,
        "resp_bytes": n * size if answered else 0,
    }


def _udp_flood(rng: random.Random) -> Facts:
    port, service = rng.choice(((123, "ntp"), (1900, "ssdp"), (rng.randint(1024, 65535), "")))
    n = rng.choice((1, 1, rng.randint(100, 20000)))
    size = rng.choice((48, 512, 1024))
    return {
        "proto": "udp",
        "resp_p": port,
        "service": service,
        "conn_state": "S0",
        "history": "D",
        "duration": 0.0 if n == 1 else n / rng.uniform(1000, 3000),
        "orig_pkts": n,
        "resp_pkts": 0,
        "orig_bytes": n * size,
        "resp_bytes": 0,
    }


def _dns_flood(rng: random.Random) -> Facts:
    n = rng.choice((1, rng.randint(2, 4000)))
    return {
        "proto": "udp",
        "resp_p": 53,
        "service": "dns",
        "conn_state": "SF",
        "history": "Dd",
        "duration": rng.uniform(0.0002, 0.01) if n == 1 else n / rng.uniform(500, 2000),
        "orig_pkts": n,
        "resp_pkts": n,
        "orig_bytes": n * rng.randint(28, 60),
        "resp_bytes": n * rng.randint(60, 180),
    }


def _slowloris(rng: random.Random) -> Facts:
    port, service = rng.choice(((80, "http"), (443, "ssl"), (8080, "http")))
    n = rng.randint(3, 12)
    return _tcp(
        rng,
        port,
        service,
        rng.choice(("S1", "RSTR", "SF")),
        "ShAD",
        duration=rng.uniform(20, 240),
        orig_pkts=n + 3,
        resp_pkts=n + 1,
        orig_bytes=rng.randint(100, 600),
        resp_bytes=rng.choice((0, 0, 300)),
    )


def _port_scan(rng: random.Random) -> Facts:
    port = rng.randint(1, 1024)
    state = rng.choice(("REJ", "REJ", "S0", "RSTOS0", "OTH"))
    return _tcp(
        rng,
        port,
        "",
        state,
        {"REJ": "Sr", "S0": "S", "RSTOS0": "SR", "OTH": "F"}[state],
        duration=rng.choice((0.0, rng.uniform(0, 0.01))),
        orig_pkts=rng.choice((1, 2)),
        resp_pkts=int(state == "REJ"),
        orig_bytes=0,
        resp_bytes=0,
    )


def _os_scan(rng: random.Random) -> Facts:
    port = rng.choice((22, 80, 443, rng.randint(1, 65535)))
    return _tcp(
        rng,
        port,
        "",
        rng.choice(("REJ", "RSTOS0", "OTH", "SH")),
        rng.choice(("Sr", "SR", "F", "SF")),
        duration=rng.uniform(0, 0.2),
        orig_pkts=rng.randint(1, 3),
        resp_pkts=rng.randint(0, 2),
        orig_bytes=0,
        resp_bytes=0,
    )


def _vulnerability_scan(rng: random.Random) -> Facts:
    port, service = rng.choice(((80, "http"), (443, "ssl"), (22, "ssh"), (21, "ftp")))
    return _tcp(
        rng,
        port,
        service,
        rng.choice(("SF", "RSTO", "RSTR")),
        "ShADadFf",
        duration=rng.uniform(0.005, 3),
        orig_pkts=rng.randint(4, 12),
        resp_pkts=rng.randint(3, 12),
        orig_bytes=rng.randint(80, 900),
        resp_bytes=rng.randint(0, 20000),
    )


def _ping_sweep(rng: random.Random) -> Facts:
    if rng.random() < 0.7:
        answered = rng.random() < 0.5
        return {
            "proto": "icmp",
            "resp_p": 0,
            "service": "",
            "conn_state": "SF" if answered else "S0",
            "history": "",
            "duration": rng.uniform(0, 0.002) if answered else 0.0,
            "orig_pkts": 1,
            "resp_pkts": int(answered),
            "orig_bytes": 0,
            "resp_bytes": 0,
        }
    return _tcp(
        rng,
        rng.choice((80, 443)),
        "",
        "REJ",
        "Sr",
        duration=rng.uniform(0, 0.002),
        orig_pkts=1,
        resp_pkts=1,
        orig_bytes=0,
        resp_bytes=0,
    )


def _dictionary_attack(rng: random.Random) -> Facts:
    port, service = rng.choice(((22, "ssh"), (21, "ftp"), (80, "http"), (8080, "http")))
    return _tcp(
        rng,
        port,
        service,
        rng.choice(("SF", "RSTO", "SF")),
        "ShAdDaFf",
        duration=rng.uniform(0.01, 4),
        orig_pkts=rng.randint(6, 30),
        resp_pkts=rng.randint(5, 30),
        orig_bytes=rng.randint(40, 2500),
        resp_bytes=rng.randint(60, 3500),
    )


def _benign(rng: random.Random) -> Facts:
    kind = rng.random()
    if kind < 0.3:
        return {
            "proto": "udp",
            "resp_p": 53,
            "service": "dns",
            "conn_state": "SF",
            "history": "Dd",
            "duration": rng.uniform(0.0005, 0.05),
            "orig_pkts": 1,
            "resp_pkts": 1,
            "orig_bytes": rng.randint(28, 60),
            "resp_bytes": rng.randint(44, 300),
        }
    port, service = rng.choice(
        ((443, "ssl"), (80, "http"), (22, "ssh"), (21, "ftp"), (1883, "mqtt"), (25, "smtp"))
    )
    n = rng.randint(6, 400)
    return _tcp(
        rng,
        port,
        service,
        rng.choice(("SF", "SF", "S1", "RSTO")),
        "ShADadfF",
        duration=rng.uniform(0.01, 60),
        orig_pkts=n,
        resp_pkts=rng.randint(max(1, n // 2), n * 2),
        orig_bytes=rng.randint(100, 50000),
        resp_bytes=rng.randint(100, 5_000_000),
    )


GENERATORS: dict[str, Callable[[random.Random], Facts]] = {
    "benign": _benign,
    "icmp_flood": _icmp_flood,
    "syn_flood": _syn_flood,
    "udp_flood": _udp_flood,
    "dns_flood": _dns_flood,
    "slowloris": _slowloris,
    "port_scan": _port_scan,
    "os_scan": _os_scan,
    "vulnerability_scan": _vulnerability_scan,
    "ping_sweep": _ping_sweep,
    "dictionary_attack": _dictionary_attack,
}


def synthetic_facts(fine: str, rng: random.Random) -> Facts:
    """One plausible facts dict (with proto and resp_p) for a fine class."""
    facts = GENERATORS[fine](rng)
    facts["n_packets"] = int(facts["orig_pkts"]) + int(facts["resp_pkts"])  # type: ignore[call-overload]
    return facts
