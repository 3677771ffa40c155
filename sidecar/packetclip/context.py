"""What the temporal reasoner sees besides the connection itself: the originator's recent packets.

Scans, floods and brute force are many small connections from one source; one connection alone rarely tells them
from benign traffic, its neighbours in time do. This module owns that memory and the exact features derived from
it, so that training (which replays a dataset in time order) and the sensor (which classifies connections as they
finish) build the same input:

- `OriginatorHistory` keeps, per originator key (the sensor's choice: the originator address, qualified by sensor
  or capture file when several are mixed), the last `slots` packets of the connections already classified, with
  their time, direction, the connection's responder address and port, and a payload row per packet (the packet's
  embedding at run time; training stores an index into its embedding table instead).
- `context()` returns, for a new connection, the payload rows of those packets, most recent first, a per-slot
  feature matrix (`CONTEXT_FEATURES`: where and when the packet went, then what it was — `PACKET_FACTS`, read from
  its masked header bytes by `packet_facts`) and a validity mask. Nothing of the new connection itself is in its
  context: the reasoner sees the connection through its own embedding.

Memory is bounded: at most `max_originators` keys (least recently used leave first), each 1.5 × `slots` rows
(`_SPARE_FRACTION`).
It does not own the model, embeddings or connection tracking.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

CONTEXT_SLOTS = 30  # A: packets of the originator's recent activity the temporal model attends over
# Per-slot features, in this order; changing them changes the reasoner's input, so bundles record the list
# (and the engine feeds a bundle the ones it names).
_WHERE_AND_WHEN = (
    "log_age",  # log1p of seconds from the packet to the new connection's first packet (negative: after it)
    "same_responder",  # 1 when the packet's connection went to the new connection's responder address
    "same_port",  # 1 when it went to the same responder port
    "from_originator",  # 1 when the originator sent the packet, 0 for the responder's replies
    "log_connections_back",  # log1p of how many connections ago (0: the latest classified connection)
)
# What the packet itself was, from its masked bytes (`packet_facts`): which protocol, which TCP flags, how much
# payload. Protocol and flags tell a SYN flood from a UDP flood when the timing alone says only "flood".
PACKET_FACTS = (
    "tcp",
    "udp",
    "icmp",  # ICMP or ICMPv6
    "syn",
    "ack",
    "fin",
    "rst",
    "psh",
    "log_payload",  # log1p of the transport payload bytes, / log1p(65535)
)
CONTEXT_FEATURES = (*_WHERE_AND_WHEN, *PACKET_FACTS)
_CONNECTIONS_SCALE = math.log1p(CONTEXT_SLOTS)  # keeps log_connections_back within [0, 1]
_PAYLOAD_SCALE = math.log1p(65535)
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: (length + 1) * 8 bytes
_IPV6_FRAGMENT = 44  # 8 bytes
_FLAG_BITS = (0x02, 0x10, 0x01, 0x04, 0x08)  # syn, ack, fin, rst, psh: PACKET_FACTS' order


def packet_facts(packet_bytes: np.ndarray, length: np.ndarray) -> np.ndarray:
    """`PACKET_FACTS` (…, 9) float32 of packets given as masked bytes from the IP header on (…, S) uint8 and IP
    total lengths (…). Masking keeps protocol numbers, header lengths and TCP flags, so these are the packet's
    own. Zero rows (padding) give zero facts; a later fragment or a header cut by the snap length gives its
    protocol without flags, and its whole IP payload as payload."""
    shape = packet_bytes.shape[:-1]
    data = packet_bytes.reshape(-1, packet_bytes.shape[-1])
    snaplen = data.shape[1]
    total = np.asarray(length, np.int64).reshape(-1)
    count = len(data)
    facts = np.zeros((count, len(PACKET_FACTS)), np.float32)
    if not count:
        return facts.reshape(*shape, len(PACKET_FACTS))
    rows = np.arange(count)

    def at(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The byte at a per-row offset (0 past the snap length), and whether it was captured."""
        inside = offset < snaplen
        return data[rows, np.minimum(offset, snaplen - 1)].astype(np.int64) * inside, inside

    version = data[:, 0] >> 4
    ipv4, ipv6 = version == 4, version == 6
    offset = np.where(ipv4, (data[:, 0] & 0x0F).astype(np.int64) * 4, 40)
    protocol = np.where(ipv4, data[:, 9], np.where(ipv6, data[:, 6], 0)).astype(np.int64)
    later_fragment = ipv4 & (((data[:, 6].astype(np.int64) & 0x1F) << 8 | data[:, 7]) > 0)
    for _ in range(3):  # IPv6 extension headers before the transport header (three cover real traffic)
        extension = ipv6 & np.isin(protocol, _IPV6_EXTENSIONS)
        fragment = ipv6 & (protocol == _IPV6_FRAGMENT)
        following, captured = at(offset)
        size, _ = at(offset + 1)
        later_fragment |= fragment & (((at(offset + 2)[0] << 8 | at(offset + 3)[0]) & 0xFFF8) > 0)
        protocol = np.where(
            (extension | fragment) & captured, following, np.where(extension | fragment, -1, protocol)
        )
        offset = offset + np.where(extension, (size + 1) * 8, 0) + np.where(fragment, 8, 0)
    tcp, udp = protocol == _TCP, protocol == _UDP
    icmp = (protocol == _ICMP) | (protocol == _ICMP6)
    flags, flags_captured = at(offset + 13)
    flags = np.where(tcp & ~later_fragment & flags_captured, flags, 0)
    data_offset, data_captured = at(offset + 12)
    tcp_header = np.where(data_captured, (data_offset >> 4) * 4, 20)
    header = np.where(later_fragment, 0, np.where(tcp, tcp_header, np.where(udp | icmp, 8, 0)))
    payload = np.clip(total - offset - header, 0, 65535)
    facts[:, 0], facts[:, 1], facts[:, 2] = tcp, udp, icmp
    for column, bit in enumerate(_FLAG_BITS, start=3):
        facts[:, column] = (flags & bit) > 0
    facts[:, 8] = np.log1p(payload) / _PAYLOAD_SCALE
    facts[~(ipv4 | ipv6)] = 0.0  # padding rows (and anything that is not IP)
    return facts.reshape(*shape, len(PACKET_FACTS))


def valid_packet_facts(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """`packet_facts` (P, len(PACKET_FACTS)) of packed connections' valid packets (`pack`'s arrays), row-major:
    the order of training's packet table, and of `arrays["valid"]` as a boolean index."""
    valid = arrays["valid"]
    return packet_facts(arrays["bytes"][valid], arrays["length"][valid])


# a ring holds slots + slots/_SPARE_FRACTION rows: the rows that stay slide to the front once per that many new
# rows (2: 1.5 × the memory of a circular buffer for about 30 % less time per step than its index arithmetic)
_SPARE_FRACTION = 2
# columns of a ring's numeric rows: time, direction, responder port, connection serial, then the packet facts
_TS, _FROM_ORIGINATOR, _PORT, _SERIAL, _FACTS = 0, 1, 2, 3, 4


@dataclass
class _Ring:
    """One originator's last packets, oldest first, in rows [start, end) of buffers a little longer than `slots`
    (`_SPARE_FRACTION`): new rows go after `end`, and only when the buffers are full do the rows that stay slide
    to the front. Reading and writing are then plain slices (views), never index arithmetic."""

    # float64 (R, 4 + len(PACKET_FACTS)): the _TS.._FACTS columns (ports and serials are exact in float64)
    rows: np.ndarray
    responder: list[str]  # per row, its connection's responder address
    payload: np.ndarray  # (R, width)
    start: int = 0
    end: int = 0
    connections: int = 0  # connections added so far


class OriginatorHistory:
    """Bounded per-originator memory of recent packets; see the module docstring."""

    def __init__(
        self,
        payload_width: int,
        payload_dtype: type | np.dtype = np.float32,
        slots: int = CONTEXT_SLOTS,
        max_originators: int = 10_000,
    ):
        if slots < 1 or payload_width < 0 or max_originators < 1:
            raise ValueError("slots and max_originators must be positive, payload_width not negative")
        self.slots = slots
        self.payload_width = payload_width
        self.payload_dtype = np.dtype(payload_dtype)
        self.max_originators = max_originators
        self.evicted = 0  # originators forgotten to stay within max_originators
        self._rings: OrderedDict[str, _Ring] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rings)

    def context(
        self,
        key: str,
        ts: float,
        responder: str,
        port: int,
        out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(payload (slots, width), features (slots, F) float32, valid (slots,) bool), most recent packet first;
        written into `out` (three zero-filled arrays of those shapes, e.g. rows of a batch) when given."""
        if out is None:
            out = (
                np.zeros((self.slots, self.payload_width), self.payload_dtype),
                np.zeros((self.slots, len(CONTEXT_FEATURES)), np.float32),
                np.zeros(self.slots, bool),
            )
        payload, features, valid = out
        ring = self._rings.get(key)
        if ring is None or ring.end == ring.start:
            return payload, features, valid
        self._rings.move_to_end(key)
        first, last = ring.start, ring.end
        count = last - first
        rows = ring.rows[first:last][::-1]  # newest first
        age = ts - rows[:, _TS]
        features[:count, 0] = np.sign(age) * np.log1p(np.abs(age))
        features[:count, 1] = [responder == r for r in reversed(ring.responder[first:last])]
        features[:count, 2] = rows[:, _PORT] == port
        features[:count, 3] = rows[:, _FROM_ORIGINATOR]
        features[:count, 4] = np.log1p((ring.connections - 1) - rows[:, _SERIAL]) / _CONNECTIONS_SCALE
        features[:count, len(_WHERE_AND_WHEN) :] = rows[:, _FACTS:]
        if self.payload_width:
            payload[:count] = ring.payload[first:last][::-1]
        valid[:count] = True
        return payload, features, valid

    def add(
        self,
        key: str,
        responder: str,
        port: int,
        packet_ts: np.ndarray,
        from_originator: np.ndarray,
        payload: np.ndarray,
        facts: np.ndarray,
    ) -> None:
        """Remember a classified connection's packets (time order) with their payload rows and `packet_facts`;
        only the newest `slots` of the key stay."""
        count = len(packet_ts)
        if (
            payload.shape != (count, self.payload_width)
            or len(from_originator) != count
            or facts.shape != (count, len(PACKET_FACTS))
        ):
            raise ValueError(
                f"payload {payload.shape}, {len(from_originator)} directions and facts {facts.shape} do not match "
                f"{count} packets"
            )
        ring = self._rings.get(key)
        if ring is None:
            ring = self._new_ring(key)
        else:
            self._rings.move_to_end(key)
        keep = min(count, self.slots)
        if keep:
            if ring.end + keep > len(ring.rows):  # full: the newest rows that stay slide to the front
                stay = min(ring.end - ring.start, self.slots - keep)
                kept = slice(ring.end - stay, ring.end)
                ring.rows[:stay] = ring.rows[kept]
                ring.responder[:stay] = ring.responder[kept]
                if self.payload_width:
                    ring.payload[:stay] = ring.payload[kept]
                ring.start, ring.end = 0, stay
            new = slice(ring.end, ring.end + keep)
            block = ring.rows[new]
            block[:, _TS] = packet_ts[count - keep :]
            block[:, _FROM_ORIGINATOR] = from_originator[count - keep :]
            block[:, _PORT] = port
            block[:, _SERIAL] = ring.connections
            block[:, _FACTS:] = facts[count - keep :]
            if self.payload_width:
                ring.payload[new] = payload[count - keep :]
            ring.responder[new] = [responder] * keep
            ring.end += keep
            ring.start = max(ring.start, ring.end - self.slots)
        ring.connections += 1

    def step(
        self,
        key: str,
        ts: float,
        responder: str,
        port: int,
        packet_ts: np.ndarray,
        from_originator: np.ndarray,
        payload: np.ndarray,
        facts: np.ndarray,
        out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rule training and the sensor share, for one connection in turn: its context (into `out` when
        given), THEN its own packets join the history (a connection never sees itself)."""
        before = self.context(key, ts, responder, port, out)
        self.add(key, responder, port, packet_ts, from_originator, payload, facts)
        return before

    def _new_ring(self, key: str) -> _Ring:
        while len(self._rings) >= self.max_originators:
            self._rings.popitem(last=False)
            self.evicted += 1
        rows = self.slots + max(1, self.slots // _SPARE_FRACTION)
        ring = _Ring(
            rows=np.zeros((rows, _FACTS + len(PACKET_FACTS)), np.float64),
            responder=[""] * rows,
            payload=np.zeros((rows, self.payload_width), self.payload_dtype),
        )
        self._rings[key] = ring
        return ring
