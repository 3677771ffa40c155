"""One finished connection: its identity, its first packets (masked) and Zeek-conn-like facts.

Owns the `Connection` record and its tabular view `facts()`. How a connection is built (tracking, state,
timeouts) lives in `conntrack.py`; how connections become model input lives in `packing.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACT_NAMES = (
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "conn_state",
    "history",
    "service",
    "n_packets",
)


@dataclass
class Connection:
    """A connection as Zeek would log it, plus its first packets for the model."""

    uid: str
    ts: float
    last_ts: float
    proto: str  # "tcp" | "udp" | "icmp" (ICMPv6 is "icmp" with ip_version 6, as in Zeek)
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    ip_version: int
    vlan: int | None
    community_id: str
    pkt_ts: np.ndarray  # float64 (n,)
    pkt_dir: np.ndarray  # int8 (n,), 1 = sent by the originator
    pkt_len: np.ndarray  # int32 (n,), IP total length on the wire
    pkt_bytes: np.ndarray  # uint8 (n, snaplen), masked, zero-padded
    duration: float = 0.0
    orig_pkts: int = 0
    resp_pkts: int = 0
    orig_bytes: int = 0
    resp_bytes: int = 0
    orig_ip_bytes: int = 0
    resp_ip_bytes: int = 0
    conn_state: str = "OTH"
    history: str = ""
    service: str = ""
    n_packets: int = 0

    def facts(self) -> dict[str, object]:
        """The conn.log-like facts over the whole connection, as plain Python values."""
        return {name: getattr(self, name) for name in FACT_NAMES}

    def record(self) -> dict[str, object]:
        """Identity plus facts: one conn.log-like row (no packet arrays)."""
        row: dict[str, object] = {
            "uid": self.uid,
            "ts": self.ts,
            "proto": self.proto,
            "orig_h": self.orig_h,
            "orig_p": self.orig_p,
            "resp_h": self.resp_h,
            "resp_p": self.resp_p,
            "ip_version": self.ip_version,
            "vlan": self.vlan,
            "community_id": self.community_id,
        }
        row.update(self.facts())
        return row
