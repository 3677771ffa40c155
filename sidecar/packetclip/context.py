"""What the temporal reasoner sees besides the connection itself: the originator's recent packets, and the
responder's recent inbound connections.

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
- `ResponderActivity` is the victim's side of the same picture. A spoofed or reflected flood arrives from
  thousands of sources, each new, so every originator history is empty and every connection looks alone; the
  attack is visible only at the responder. It keeps, per responder key (sensor and responder address), the
  connections towards it that started in the last `RESPONDER_WINDOW` seconds (at most `RESPONDER_CONNECTIONS`), and
  gives a new connection `RESPONDER_FEATURES`: how many connections and distinct sources reached the responder,
  how fast, the shares unanswered, single-packet, to the same port and protocol, and from the same originator.
  "Responder" means the host the connection's first packet went to (`receiving_side`): a reflected flood's
  answers come from well-known ports, so Zeek's port rules (and the featurizer's) make the victim the originator
  of each connection, and the victim is then the host that received the first packet, not the responder.

Memory is bounded: at most `max_originators` keys (least recently used leave first), each 1.5 × `slots` rows
(`_SPARE_FRACTION`); at most `max_responders` responders of at most `RESPONDER_CONNECTIONS` connections each.
It does not own the model, embeddings or connection tracking.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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


# --- the responder's side -------------------------------------------------------------------------------------

RESPONDER_WINDOW = (
    10.0  # seconds of a responder's inbound connections that a new connection is judged against
)
# the most recent connections kept per responder: a flood fills it well within the window, and the rate then
# comes from how quickly they arrived
RESPONDER_CONNECTIONS = 128
RESPONDER_RATE_SCALE = math.log1p(
    100_000.0
)  # connections per second: log1p(rate) / this stays within [0, 1] below 100k/s
# Per-connection features of the responder's recent inbound activity, in this order (bundles record the list).
# Counts and rates are multiplied by the number of shards a sensor's connections are split over (see
# `ResponderActivity`); shares are left as seen, since a shard sees a sample of every source but its own.
RESPONDER_FEATURES = (
    "victim_log_connections",  # log1p(connections towards the responder in the window) / log1p(kept at most)
    "victim_log_rate",  # log1p(those connections per second) / log1p(100,000)
    "victim_log_sources",  # log1p(distinct originators among them) / log1p(kept at most)
    "victim_source_share",  # distinct originators / connections: near 1 for a spoofed flood, small for one host
    "victim_unanswered",  # share of them in which the responder sent nothing back (among the packets seen)
    "victim_single_packet",  # share of one-packet connections
    "victim_same_port",  # share that went to this connection's responder port
    "victim_log_ports",  # log1p(distinct responder ports among them) / log1p(kept at most)
    "victim_same_protocol",  # share in this connection's protocol
    "victim_same_originator",  # share from this connection's originator
)


def receiving_side(
    first_from_originator: bool, orig_h: str, orig_p: int, resp_h: str, resp_p: int
) -> tuple[str, int, str]:
    """(receiving host, its port, sending host) of a connection by who sent its first packet: the responder and
    the originator as tracked, unless the first packet came from the responder's side (a reflection's answers,
    turned around by port rules), when the originator is the one receiving."""
    if first_from_originator:
        return resp_h, resp_p, orig_h
    return orig_h, orig_p, resp_h


@dataclass
class _Inbound:
    """One responder's recent inbound connections (oldest first) and running counts over them."""

    # (first-packet time, originator, responder port, protocol, answered, packets seen)
    records: deque[tuple[float, str, int, str, bool, int]]
    sources: Counter[str]
    ports: Counter[int]
    protocols: Counter[str]
    unanswered: int = 0
    single: int = 0
    capped: bool = False  # connections of the window were dropped to stay within RESPONDER_CONNECTIONS


class ResponderActivity:
    """Bounded per-responder memory of recent inbound connections; see the module docstring.

    The same rule as `OriginatorHistory.step`: a connection's features describe the connections towards its
    responder that were added before it (never itself), then it is added. Connections leave a responder's window
    when they started more than `window` seconds before the connection being judged, or when more than
    `max_connections` are held (the oldest first). Counts are kept as the window moves, so a connection costs a
    few dictionary updates, not a pass over the window.

    `shards`: a Zeek cluster that shards requests by originator hands each sidecar about 1/N of a responder's
    sources; counts and rates are multiplied by N so that a model sees a victim-wide estimate on every shard
    (shares need no correction, except `victim_same_originator`, which a shard sees N times too high).
    """

    def __init__(
        self,
        window: float = RESPONDER_WINDOW,
        max_connections: int = RESPONDER_CONNECTIONS,
        max_responders: int = 10_000,
        shards: int = 1,
    ):
        if window <= 0 or max_connections < 1 or max_responders < 1 or shards < 1:
            raise ValueError("window, max_connections, max_responders and shards must be positive")
        self.window = window
        self.max_connections = max_connections
        self.max_responders = max_responders
        self.shards = shards
        self.evicted = 0  # responders forgotten to stay within max_responders
        self._count_scale = math.log1p(max_connections)
        self._inbound: OrderedDict[str, _Inbound] = OrderedDict()

    def __len__(self) -> int:
        return len(self._inbound)

    def features(
        self, key: str, ts: float, originator: str, port: int, protocol: str, out: np.ndarray | None = None
    ) -> np.ndarray:
        """`RESPONDER_FEATURES` (float32) for a connection starting at `ts` towards the responder `key`; written
        into `out` (a zero-filled row, e.g. of a batch) when given."""
        if out is None:
            out = np.zeros(len(RESPONDER_FEATURES), np.float32)
        inbound = self._inbound.get(key)
        if inbound is None:
            return out
        self._inbound.move_to_end(key)
        self._expire(inbound, ts)
        count = len(inbound.records)
        if not count:
            return out
        shards = self.shards
        oldest = inbound.records[0][0]
        span = max(ts - oldest, 1e-3) if inbound.capped else self.window
        out[0] = math.log1p(count * shards) / self._count_scale
        out[1] = math.log1p(count * shards / span) / RESPONDER_RATE_SCALE
        out[2] = math.log1p(len(inbound.sources) * shards) / self._count_scale
        out[3] = len(inbound.sources) / count
        out[4] = inbound.unanswered / count
        out[5] = inbound.single / count
        out[6] = inbound.ports.get(port, 0) / count
        out[7] = math.log1p(len(inbound.ports)) / self._count_scale
        out[8] = inbound.protocols.get(protocol, 0) / count
        out[9] = inbound.sources.get(originator, 0) / count
        return out

    def add(
        self, key: str, ts: float, originator: str, port: int, protocol: str, answered: bool, packets: int
    ) -> None:
        """Remember a connection towards the responder `key` (`packets` seen, `answered`: any from the
        responder among them)."""
        inbound = self._inbound.get(key)
        if inbound is None:
            while len(self._inbound) >= self.max_responders:
                self._inbound.popitem(last=False)
                self.evicted += 1
            inbound = _Inbound(deque(), Counter(), Counter(), Counter())
            self._inbound[key] = inbound
        else:
            self._inbound.move_to_end(key)
        inbound.records.append((ts, originator, port, protocol, answered, packets))
        inbound.sources[originator] += 1
        inbound.ports[port] += 1
        inbound.protocols[protocol] += 1
        inbound.unanswered += not answered
        inbound.single += packets == 1
        if len(inbound.records) > self.max_connections:
            self._drop_oldest(inbound)
            inbound.capped = True

    def step(
        self,
        key: str,
        ts: float,
        originator: str,
        port: int,
        protocol: str,
        answered: bool,
        packets: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The rule training and the sensor share: the connection's features, THEN it joins the window."""
        before = self.features(key, ts, originator, port, protocol, out)
        self.add(key, ts, originator, port, protocol, answered, packets)
        return before

    def _expire(self, inbound: _Inbound, ts: float) -> None:
        """Drop the connections that started more than `window` seconds before `ts`."""
        horizon = ts - self.window
        records = inbound.records
        while records and records[0][0] < horizon:
            self._drop_oldest(inbound)
        if len(records) < self.max_connections:
            inbound.capped = False

    @staticmethod
    def _drop_oldest(inbound: _Inbound) -> None:
        _, originator, port, protocol, answered, packets = inbound.records.popleft()
        _forget_one(inbound.sources, originator)
        _forget_one(inbound.ports, port)
        _forget_one(inbound.protocols, protocol)
        inbound.unanswered -= not answered
        inbound.single -= packets == 1


def _forget_one(counts: Counter[_T], value: _T) -> None:
    """One fewer `value`; a value that is no longer there leaves the counter (its length counts distinct ones)."""
    left = counts[value] - 1
    if left:
        counts[value] = left
    else:
        del counts[value]


@dataclass(frozen=True)
class ResponderSummary:
    """A responder's recent inbound activity in plain numbers, as one sidecar saw it (for explanations)."""

    connections: int  # towards the responder in the window, before the judged connection
    sources: int  # distinct originators among them
    rate: float  # connections per second
    unanswered_share: float
    window_seconds: float
    complete: bool  # False when the window held more than it keeps (`connections` is then a floor)


def responder_summary(
    row: np.ndarray,
    window: float = RESPONDER_WINDOW,
    max_connections: int = RESPONDER_CONNECTIONS,
    shards: int = 1,
) -> ResponderSummary:
    """The numbers behind one `RESPONDER_FEATURES` row of `ResponderActivity(window, max_connections, shards)`:
    its log-scaled counts undone (exactly, up to float32 rounding) and the shard scaling taken back out."""
    count_scale = math.log1p(max_connections)
    connections = round(math.expm1(float(row[0]) * count_scale) / shards)
    return ResponderSummary(
        connections=connections,
        sources=round(math.expm1(float(row[2]) * count_scale) / shards),
        rate=math.expm1(float(row[1]) * RESPONDER_RATE_SCALE) / shards,
        unanswered_share=float(row[4]),
        window_seconds=window,
        complete=connections < max_connections,
    )
