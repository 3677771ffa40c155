"""Connection tracking with Zeek-like semantics over a stream of frames.

Owns `ConnectionTracker` (the streaming table) and `featurize_frames` (one connection from an explicit list of
frames). Semantics, as in Zeek:

- A connection is keyed by protocol and both endpoints; the originator is the sender of the first packet, except
  that a first TCP SYN-ACK, a first packet *from* a well-known service port to an ephemeral one, or a first ICMP
  echo/timestamp/info/mask reply flips the direction (history then starts with '^').
- ICMP "ports" are type and counterpart type (echo request and reply share a connection) or type and code for
  one-way messages. An ICMP error is its own ICMP connection between the reporting host and the sender; it never
  creates or touches the quoted connection.
- A connection ends after inactivity (tcp 300 s, udp/icmp 60 s by default) measured in packet time, or
  `tcp_close_delay` after both sides sent FIN or either sent RST.
- Only the first `max_packets` packets keep bytes (masked); everything after is counted, so memory per connection
  is bounded.
- Fragments: the first fragment is tracked like a whole packet; later fragments (no transport header) are
  attached to the connection of their first fragment when it was seen, otherwise counted as skipped.

It does not read files (`pcapio.py`), parse headers (`frames.py`) or mask bytes (`masking.py`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import socket
from collections.abc import Iterable, Sequence

import numpy as np

from packetclip.featurizer import tcp_state
from packetclip.featurizer.community_id import community_id
from packetclip.featurizer.config import FeaturizerConfig
from packetclip.featurizer.connection import Connection
from packetclip.featurizer.frames import (
    ICMP,
    ICMP6,
    LATER_FRAGMENT,
    MALFORMED,
    NON_IP,
    NOT_FRAGMENT,
    TCP,
    UDP,
    parse_frame,
)
from packetclip.featurizer.masking import mask_packet
from packetclip.featurizer.services import is_likely_server, service_name
from packetclip.featurizer.stats import ParseStats

log = logging.getLogger(__name__)

_ICMP_REPLY_TYPES = {ICMP: frozenset((0, 14, 16, 18)), ICMP6: frozenset((129,))}
_PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp"}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SYN_ACK = tcp_state.SYN | tcp_state.ACK


class _Tracked:
    """A connection while it is open: counters, TCP endpoints and the first packets' masked bytes."""

    __slots__ = (
        "close_at", "dport", "dst", "finished", "first_ts", "history", "ip_version", "key", "last_ts", "orig_ep",
        "orig_ip_bytes", "orig_payload", "orig_pkts", "pkt_bytes", "pkt_dir", "pkt_len", "pkt_ts", "proto",
        "resp_ep", "resp_ip_bytes", "resp_payload", "resp_pkts", "sport", "src", "vlan",
    )  # fmt: skip

    def __init__(self, key: tuple, ts: float, ip_version: int, vlan: int | None, flipped: bool) -> None:
        self.key = key
        self.proto, self.src, self.dst, self.sport, self.dport = key  # src/sport: the originator
        self.first_ts = ts
        self.last_ts = ts
        self.ip_version = ip_version
        self.vlan = vlan
        self.history = "^" if flipped else ""
        self.orig_pkts = self.resp_pkts = 0
        self.orig_ip_bytes = self.resp_ip_bytes = 0
        self.orig_payload = self.resp_payload = 0  # UDP/ICMP payload; TCP's comes from sequence numbers
        self.orig_ep = tcp_state.Endpoint() if self.proto == TCP else None
        self.resp_ep = tcp_state.Endpoint() if self.proto == TCP else None
        self.close_at = float("inf")
        self.finished = False
        self.pkt_ts: list[float] = []
        self.pkt_dir: list[int] = []
        self.pkt_len: list[int] = []
        self.pkt_bytes: list[bytes] = []


class ConnectionTracker:
    """Streaming connection table: feed frames in time order, get connections as they end."""

    def __init__(self, config: FeaturizerConfig | None = None, stats: ParseStats | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.stats = stats if stats is not None else ParseStats()
        self._table: dict[tuple, _Tracked] = {}
        self._deadlines: list[tuple[float, int, _Tracked]] = []  # heap of (deadline, tiebreak, connection)
        self._tiebreak = itertools.count()
        self._fragments: dict[tuple, tuple[_Tracked, bool]] = {}  # first fragment's key -> (conn, is_orig)
        self._now = float("-inf")

    def __len__(self) -> int:
        return len(self._table)

    def add(self, ts: float, link_type: int, frame: bytes) -> list[Connection]:
        """Account one frame; returns the connections that ended by this frame's time."""
        stats = self.stats
        stats.frames += 1
        if ts > self._now:
            self._now = ts
        finished = self._expire(self._now) if self._deadlines and self._deadlines[0][0] <= self._now else []
        packet = parse_frame(link_type, frame)
        if len(packet) == 2:
            self._count_unusable(packet)
            return finished
        if packet[14] == LATER_FRAGMENT:
            attached = self._fragments.get(packet[15])
            if attached is None or attached[0].finished:
                stats.count_skipped("fragment_without_first")
                return finished
            conn, is_orig = attached
        else:
            conn, is_orig = self._lookup(ts, packet)
            if packet[14] != NOT_FRAGMENT:
                self._remember_fragment(packet[15], conn, is_orig)
        stats.parsed += 1
        if packet[16]:
            stats.truncated += 1
        self._update(conn, is_orig, ts, frame, packet)
        return finished

    def flush(self) -> list[Connection]:
        """End every open connection (end of input), in order of their last packet."""
        open_conns = sorted(self._table.values(), key=lambda conn: conn.last_ts)
        self._table.clear()
        self._deadlines.clear()
        self._fragments.clear()
        return [self._finish(conn) for conn in open_conns]

    def _count_unusable(self, outcome: tuple) -> None:
        category, reason = outcome
        if category == NON_IP:
            self.stats.non_ip += 1
        elif category == MALFORMED:
            self.stats.count_malformed(reason)
        else:
            self.stats.count_skipped(reason)

    def _lookup(self, ts: float, packet: tuple) -> tuple[_Tracked, bool]:
        proto, src, dst, sport, dport = packet[2], packet[3], packet[4], packet[5], packet[6]
        key = (proto, src, dst, sport, dport)
        conn = self._table.get(key)
        if conn is not None:
            return conn, True
        reverse = (proto, dst, src, dport, sport)
        conn = self._table.get(reverse)
        if conn is not None:
            return conn, False
        flipped = _should_flip(proto, sport, dport, packet[7])
        conn = _Tracked(reverse if flipped else key, ts, packet[1], packet[13], flipped)
        self._table[conn.key] = conn
        self._push(ts + self.config.inactivity(proto), conn)
        return conn, not flipped

    def _remember_fragment(self, frag_key: tuple, conn: _Tracked, is_orig: bool) -> None:
        fragments = self._fragments
        fragments[frag_key] = (conn, is_orig)
        if len(fragments) > self.config.max_pending_fragments:
            del fragments[next(iter(fragments))]  # the oldest: its later fragments are long overdue

    def _update(self, conn: _Tracked, is_orig: bool, ts: float, frame: bytes, packet: tuple) -> None:
        conn.last_ts = ts
        ip_len = packet[12]
        later_fragment = packet[14] == LATER_FRAGMENT
        if is_orig:
            conn.orig_pkts += 1
            conn.orig_ip_bytes += ip_len
        else:
            conn.resp_pkts += 1
            conn.resp_ip_bytes += ip_len
        proto = conn.proto
        if proto == TCP and not later_fragment:
            sender, peer = (conn.orig_ep, conn.resp_ep) if is_orig else (conn.resp_ep, conn.orig_ep)
            self._update_tcp(conn, sender, peer, is_orig, ts, packet)
        elif not later_fragment:
            if is_orig:
                conn.orig_payload += packet[11]
            else:
                conn.resp_payload += packet[11]
            if proto == UDP and packet[11] > 0:
                letter = "D" if is_orig else "d"
                if letter not in conn.history:
                    conn.history += letter
        if len(conn.pkt_ts) < self.config.max_packets:
            self._keep_packet(conn, is_orig, ts, frame, packet)

    def _update_tcp(self, conn: _Tracked, sender, peer, is_orig: bool, ts: float, packet: tuple) -> None:
        flags, seq = packet[7], packet[8]
        if sender.isn is None:
            sender.isn = seq
            sender.syn_seen = bool(flags & tcp_state.SYN)
        letters = tcp_state.tcp_history_letters(
            sender, flags, seq, packet[10], packet[11], conn.history, is_orig
        )
        if letters:
            conn.history += letters
        tcp_state.tcp_transition(sender, peer, flags)
        if conn.close_at == float("inf") and (
            flags & tcp_state.RST or (sender.state == tcp_state.CLOSED and peer.state == tcp_state.CLOSED)
        ):
            conn.close_at = ts + self.config.tcp_close_delay
            self._push(conn.close_at, conn)

    def _keep_packet(self, conn: _Tracked, is_orig: bool, ts: float, frame: bytes, packet: tuple) -> None:
        ip_off = packet[0]
        snaplen = self.config.snaplen
        own_isn = peer_isn = None
        if conn.proto == TCP:
            sender, peer = (conn.orig_ep, conn.resp_ep) if is_orig else (conn.resp_ep, conn.orig_ep)
            assert sender is not None and peer is not None  # a TCP connection has both endpoints from birth
            own_isn, peer_isn = sender.isn, peer.isn
        conn.pkt_ts.append(ts)
        conn.pkt_dir.append(1 if is_orig else 0)
        conn.pkt_len.append(packet[12])
        conn.pkt_bytes.append(mask_packet(frame[ip_off : ip_off + snaplen], snaplen, own_isn, peer_isn))

    def _push(self, deadline: float, conn: _Tracked) -> None:
        heapq.heappush(self._deadlines, (deadline, next(self._tiebreak), conn))

    def _deadline(self, conn: _Tracked) -> float:
        return min(conn.last_ts + self.config.inactivity(conn.proto), conn.close_at)

    def _expire(self, now: float) -> list[Connection]:
        finished = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, conn = heapq.heappop(deadlines)
            if conn.finished:
                continue
            deadline = self._deadline(conn)
            if deadline <= now:
                if self._table.get(conn.key) is conn:
                    del self._table[conn.key]
                finished.append(self._finish(conn))
            else:
                self._push(deadline, conn)  # activity since this entry was queued: look again later
        return finished

    def _finish(self, conn: _Tracked) -> Connection:
        conn.finished = True
        return build_connection(conn, self.config.snaplen)


def _should_flip(proto: int, sport: int, dport: int, flags: int) -> bool:
    """Zeek's refinements of "the first sender is the originator"."""
    if proto == TCP:
        if flags & _SYN_ACK == _SYN_ACK:
            return True
        if flags & tcp_state.SYN:
            return False
        return is_likely_server(proto, sport) and not is_likely_server(proto, dport)
    if proto == UDP:
        return is_likely_server(proto, sport) and not is_likely_server(proto, dport)
    return sport in _ICMP_REPLY_TYPES[proto]


def _address_text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


def make_uid(proto: int, orig_h: str, orig_p: int, resp_h: str, resp_p: int, ts: float) -> str:
    """A Zeek-looking uid ("C" + 17 base62 digits), deterministic from the 5-tuple and first timestamp."""
    digest = hashlib.blake2b(f"{proto}|{orig_h}|{orig_p}|{resp_h}|{resp_p}|{ts:.6f}".encode(), digest_size=12)
    number = int.from_bytes(digest.digest(), "big")
    digits = []
    for _ in range(17):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "C" + "".join(digits)


def build_connection(conn: _Tracked, snaplen: int) -> Connection:
    """Freeze an open connection into a `Connection` with numpy arrays and facts."""
    orig_h, resp_h = _address_text(conn.src), _address_text(conn.dst)
    proto = conn.proto
    n = len(conn.pkt_ts)
    if proto == TCP:
        assert conn.orig_ep is not None and conn.resp_ep is not None  # a TCP connection has both endpoints
        orig_bytes, resp_bytes = conn.orig_ep.payload_bytes(), conn.resp_ep.payload_bytes()
    else:
        orig_bytes, resp_bytes = conn.orig_payload, conn.resp_payload
    state = tcp_state.conn_state(
        proto, conn.orig_ep, conn.resp_ep, conn.orig_pkts, conn.resp_pkts, conn.history
    )
    return Connection(
        uid=make_uid(proto, orig_h, conn.sport, resp_h, conn.dport, conn.first_ts),
        ts=conn.first_ts,
        last_ts=conn.last_ts,
        proto=_PROTO_NAMES[proto],
        orig_h=orig_h,
        orig_p=conn.sport,
        resp_h=resp_h,
        resp_p=conn.dport,
        ip_version=conn.ip_version,
        vlan=conn.vlan,
        community_id=community_id(proto, conn.src, conn.dst, conn.sport, conn.dport),
        pkt_ts=np.array(conn.pkt_ts, dtype=np.float64),
        pkt_dir=np.array(conn.pkt_dir, dtype=np.int8),
        pkt_len=np.array(conn.pkt_len, dtype=np.int32),
        pkt_bytes=np.frombuffer(b"".join(conn.pkt_bytes), dtype=np.uint8).reshape(n, snaplen).copy(),
        duration=conn.last_ts - conn.first_ts,
        orig_pkts=conn.orig_pkts,
        resp_pkts=conn.resp_pkts,
        orig_bytes=orig_bytes,
        resp_bytes=resp_bytes,
        orig_ip_bytes=conn.orig_ip_bytes,
        resp_ip_bytes=conn.resp_ip_bytes,
        conn_state=state,
        history=conn.history,
        service=service_name(proto, conn.dport),
        n_packets=conn.orig_pkts + conn.resp_pkts,
    )


def featurize_frames(
    link_type: int,
    ts_list: Sequence[float],
    frames: Sequence[bytes],
    is_orig: Sequence[bool] | None = None,
    config: FeaturizerConfig | None = None,
    stats: ParseStats | None = None,
) -> Connection | None:
    """One connection from the frames a sensor attributed to it (no timeouts, no splitting).

    The first usable frame fixes the connection's endpoints. Directions come from `is_orig` when given (the
    sensor's verdict wins), otherwise from the addresses and ports. Frames that do not parse, or that belong to
    another flow when `is_orig` is not given, are counted in `stats` and left out. Returns None when no frame
    is usable.
    """
    if len(ts_list) != len(frames) or (is_orig is not None and len(is_orig) != len(frames)):
        raise ValueError("ts_list, frames and is_orig must have the same length")
    tracker = ConnectionTracker(config, stats)
    conn: _Tracked | None = None
    for index, (ts, frame) in enumerate(zip(ts_list, frames, strict=False)):
        tracker.stats.frames += 1
        packet = parse_frame(link_type, frame)
        if len(packet) == 2:
            tracker._count_unusable(packet)
            continue
        if packet[14] == LATER_FRAGMENT:
            tracker.stats.count_skipped("fragment_in_explicit_connection")
            continue
        forward = (packet[2], packet[3], packet[4], packet[5], packet[6])
        if conn is None:
            given = None if is_orig is None else bool(is_orig[index])
            flipped = _should_flip(packet[2], packet[5], packet[6], packet[7]) if given is None else not given
            reverse = (packet[2], packet[4], packet[3], packet[6], packet[5])
            conn = _Tracked(
                reverse if flipped else forward, ts, packet[1], packet[13], flipped and given is None
            )
        if is_orig is not None:
            direction = bool(is_orig[index])
        elif forward == conn.key:
            direction = True
        elif forward == (conn.proto, conn.dst, conn.src, conn.dport, conn.sport):
            direction = False
        else:
            tracker.stats.count_skipped("frame_of_another_flow")
            continue
        tracker.stats.parsed += 1
        if packet[16]:
            tracker.stats.truncated += 1
        tracker._update(conn, direction, ts, frame, packet)
    return None if conn is None else tracker._finish(conn)


def track_frames(
    frames: Iterable[tuple[float, int, bytes]],
    config: FeaturizerConfig | None = None,
    stats: ParseStats | None = None,
):
    """Run a tracker over (ts, link_type, frame) tuples; yields connections in order of their end."""
    tracker = ConnectionTracker(config, stats)
    add = tracker.add
    for ts, link_type, frame in frames:
        finished = add(ts, link_type, frame)
        if finished:
            yield from finished
    yield from tracker.flush()
