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
import operator
import socket
from collections.abc import Iterable, Sequence

import numpy as np

from packetclip.featurizer import tcp_state
from packetclip.featurizer.community_id import flow_community_id
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
from packetclip.featurizer.masking import masked_packet
from packetclip.featurizer.services import is_likely_server, service_name
from packetclip.featurizer.stats import ParseStats
from packetclip.featurizer.tcp_state import ACK, CLOSED, RST, SYN, tcp_history_letters, tcp_transition
from packetclip.ordering import OpenStarts

log = logging.getLogger(__name__)

_ICMP_REPLY_TYPES = {ICMP: frozenset((0, 14, 16, 18)), ICMP6: frozenset((129,))}
_PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp"}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Two base62 digits per division (least significant first, as the uid spells them): halves the big-int divisions
_BASE62_PAIRS = tuple(low + high for high in _BASE62 for low in _BASE62)
_ADDRESS_CACHE_SIZE = 1 << 16  # scans and floods repeat a few addresses; bounded so memory stays flat
_address_cache: dict[bytes, str] = {}
_SYN_ACK = SYN | ACK
_LAST_TS = operator.attrgetter("last_ts")
_UID_HASH = hashlib.blake2b(digest_size=12)
_NEVER = float("inf")  # close_at of a connection that has not closed
# dtype objects made once: numpy resolves a dtype given as a type on every call, a per-connection cost
_FLOAT64, _INT8, _INT32, _UINT8 = (
    np.dtype(np.float64),
    np.dtype(np.int8),
    np.dtype(np.int32),
    np.dtype(np.uint8),
)


class _Tracked:
    """A connection while it is open: counters, TCP endpoints and the first packets' masked bytes."""

    __slots__ = (
        "close_at",
        "dport",
        "dst",
        "finished",
        "first_ts",
        "history",
        "ip_version",
        "key",
        "last_ts",
        "orig_ep",
        "orig_ip_bytes",
        "orig_payload",
        "orig_pkts",
        "pkt_bytes",
        "pkt_dir",
        "pkt_len",
        "pkt_ts",
        "proto",
        "released",
        "resp_ep",
        "resp_ip_bytes",
        "resp_payload",
        "resp_pkts",
        "sport",
        "src",
        "vlan",
    )

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
        if self.proto == TCP:
            self.orig_ep: tcp_state.Endpoint | None = tcp_state.Endpoint()
            self.resp_ep: tcp_state.Endpoint | None = tcp_state.Endpoint()
        else:
            self.orig_ep = self.resp_ep = None
        self.close_at = _NEVER
        self.finished = False
        self.released = False  # handed out early, at max_packets (the tracker's release_full mode)
        self.pkt_ts: list[float] = []
        self.pkt_dir = bytearray()  # 1/0 per kept packet: becomes the int8 array without a conversion
        self.pkt_len: list[int] = []
        self.pkt_bytes = bytearray()  # the kept packets' masked bytes back to back, snaplen each


class ConnectionTracker:
    """Streaming connection table: feed frames in time order, get connections as they end."""

    def __init__(
        self,
        config: FeaturizerConfig | None = None,
        stats: ParseStats | None = None,
        release_full: bool = False,
    ) -> None:
        """`release_full`: hand a connection out as soon as its first `max_packets` packets are in (a sensor
        wants a flood's verdict now, not at its inactivity timeout). Its record's facts then cover those packets
        only; the table keeps following the connection without its bytes and never returns it a second time.
        """
        self.config = config or FeaturizerConfig()
        self.release_full = release_full
        self.released_early = 0  # connections handed out at max_packets
        self.evicted = 0  # connections ended early to stay within config.max_open
        self._ready: list[Connection] = []  # released by the frame being added
        self.stats = stats if stats is not None else ParseStats()
        self._table: dict[tuple, _Tracked] = {}
        self._deadlines: list[tuple[float, int, _Tracked]] = []  # heap of (deadline, tiebreak, connection)
        self._starts: OpenStarts[_Tracked] = OpenStarts(_record_is_out)
        self._tiebreak = itertools.count()
        self._fragments: dict[tuple, tuple[_Tracked, bool]] = {}  # first fragment's key -> (conn, is_orig)
        self._now = float("-inf")
        # the config is frozen: its per-packet values are read once here rather than on every packet
        self._max_packets = self.config.max_packets
        self._max_open = self.config.max_open
        self._snaplen = self.config.snaplen
        self._window = _NEVER if self.config.window is None else self.config.window
        # release_full with a window: (window end, tiebreak, connection), so a connection is handed out when packet
        # time passes its window even if none of its own packets comes later (Zeek's max_wait timer does the same)
        self._window_ends: list[tuple[float, int, _Tracked]] = []
        self._track_windows = release_full and self.config.window is not None
        self._inactivity = {proto: self.config.inactivity(proto) for proto in _PROTO_NAMES}

    def __len__(self) -> int:
        return len(self._table)

    def add(self, ts: float, link_type: int, frame: bytes) -> list[Connection]:
        """Account one frame; returns the connections that ended by this frame's time."""
        stats = self.stats
        stats.frames += 1
        if ts > self._now:
            self._now = ts
        deadlines = self._deadlines
        finished = self._expire(self._now) if deadlines and deadlines[0][0] <= self._now else []
        windows = self._window_ends
        if windows and windows[0][0] <= self._now:
            self._close_windows(self._now)
            finished.extend(self._ready)
            self._ready.clear()
        packet = parse_frame(link_type, frame)
        if len(packet) == 2:
            self._count_unusable(packet)
            return finished
        fragment = packet[14]
        if fragment == LATER_FRAGMENT:
            attached = self._fragments.get(packet[15])
            if attached is None or attached[0].finished:
                stats.count_skipped("fragment_without_first")
                return finished
            conn, is_orig = attached
        else:
            # packet[2:7] is (proto, src, dst, sport, dport); most packets belong to a flow already seen this way
            known = self._table.get(packet[2:7])
            if known is not None:
                conn, is_orig = known, True
            else:
                conn, is_orig = self._lookup(ts, packet)
            if fragment != NOT_FRAGMENT:
                self._remember_fragment(packet[15], conn, is_orig)
        stats.parsed += 1
        if packet[16]:
            stats.truncated += 1
        self._update(conn, is_orig, ts, frame, packet)
        if self._ready:
            finished.extend(self._ready)
            self._ready.clear()
        return finished

    def oldest_open_ts(self) -> float:
        """First-packet time of the oldest connection whose record is not out yet (+inf when there is none):
        every connection that started earlier has been returned already."""
        return self._starts.oldest()

    def flush(self) -> list[Connection]:
        """End every open connection (end of input), in order of their last packet."""
        open_conns = sorted(self._table.values(), key=_LAST_TS)
        self._table.clear()
        self._deadlines.clear()
        self._window_ends.clear()
        self._starts.clear()
        self._fragments.clear()
        return [record for record in map(self._finish, open_conns) if record is not None]

    def _count_unusable(self, outcome: tuple) -> None:
        category, reason = outcome
        if category == NON_IP:
            self.stats.non_ip += 1
        elif category == MALFORMED:
            self.stats.count_malformed(reason)
        else:
            self.stats.count_skipped(reason)

    def _lookup(self, ts: float, packet: tuple) -> tuple[_Tracked, bool]:
        """The connection of a packet whose forward key is not in the table: the reverse one, or a new one."""
        proto, src, dst, sport, dport = packet[2:7]
        reverse = (proto, dst, src, dport, sport)
        conn = self._table.get(reverse)
        if conn is not None:
            return conn, False
        if len(self._table) >= self._max_open:
            # room is made before the new connection is in the table: it could otherwise be the idlest itself (a
            # new UDP connection times out before older TCP ones) and be ended before its first packet is counted
            self._evict_idlest()
        flipped = _should_flip(proto, sport, dport, packet[7])
        conn = _Tracked(reverse if flipped else packet[2:7], ts, packet[1], packet[13], flipped)
        self._table[conn.key] = conn
        self._push(ts + self._inactivity[proto], conn)
        if self._track_windows:
            heapq.heappush(self._window_ends, (ts + self._window, next(self._tiebreak), conn))
        self._starts.add(ts, conn, len(self._table))
        return conn, not flipped

    def _evict_idlest(self) -> None:
        """End the open connection that would time out first (the one idle longest, a flood's oldest half-open
        one) to stay within `max_open`; its record, if not out yet, leaves with the frame being added."""
        deadlines = self._deadlines
        while deadlines:
            _, _, conn = heapq.heappop(deadlines)
            if conn.finished:
                continue
            deadline = self._deadline(conn)
            if deadlines and deadline > deadlines[0][0]:
                self._push(deadline, conn)  # active since it was queued: the next entry may be idler
                continue
            if self._table.get(conn.key) is conn:
                del self._table[conn.key]
            record = self._finish(conn)
            if record is not None:
                self._ready.append(record)
            self.evicted += 1
            return

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
        own_isn = peer_isn = None
        if proto == TCP:
            sender, peer = (conn.orig_ep, conn.resp_ep) if is_orig else (conn.resp_ep, conn.orig_ep)
            assert sender is not None and peer is not None  # a TCP connection has both endpoints from birth
            if not later_fragment:
                self._update_tcp(conn, sender, peer, is_orig, ts, packet)
            own_isn, peer_isn = sender.isn, peer.isn  # after the update: a first SYN's own number is its base
        elif not later_fragment:
            if is_orig:
                conn.orig_payload += packet[11]
            else:
                conn.resp_payload += packet[11]
            if proto == UDP and packet[11] > 0:
                letter = "D" if is_orig else "d"
                if letter not in conn.history:
                    conn.history += letter
        if conn.released:
            return
        # the window's end itself is past it, as a Zeek timer due at that time fires before the packet is processed
        if ts >= conn.first_ts + self._window:  # past the window: the record is complete without this packet
            if self.release_full:
                self._release(conn)
            return
        if len(conn.pkt_ts) < self._max_packets:  # keep the packet: its time, direction, length, masked bytes
            conn.pkt_ts.append(ts)
            conn.pkt_dir.append(1 if is_orig else 0)
            conn.pkt_len.append(ip_len)
            ip_off = packet[0]
            snaplen = self._snaplen
            conn.pkt_bytes += masked_packet(frame[ip_off : ip_off + snaplen], snaplen, own_isn, peer_isn)
            if self.release_full and len(conn.pkt_ts) == self._max_packets:
                self._release(conn)

    def _close_windows(self, now: float) -> None:
        """Release (into `_ready`) the connections whose window ended by `now`, in order of their start."""
        windows = self._window_ends
        while windows and windows[0][0] <= now:
            conn = heapq.heappop(windows)[2]
            if not conn.released and not conn.finished:
                self._release(conn)

    def _release(self, conn: _Tracked) -> None:
        """Hand the record out now (release_full): its packets are all in, by count or by the window."""
        self._ready.append(build_connection(conn, self._snaplen))
        conn.released = True
        conn.pkt_bytes = bytearray()  # the record holds them now; the table keeps counters only
        self.released_early += 1

    def _update_tcp(self, conn: _Tracked, sender, peer, is_orig: bool, ts: float, packet: tuple) -> None:
        flags, seq = packet[7], packet[8]
        if sender.isn is None:
            sender.isn = seq
            sender.syn_seen = bool(flags & SYN)
        letters = tcp_history_letters(sender, flags, seq, packet[10], packet[11], conn.history, is_orig)
        if letters:
            conn.history += letters
        tcp_transition(sender, peer, flags)
        if conn.close_at == _NEVER and (flags & RST or (sender.state == CLOSED and peer.state == CLOSED)):
            conn.close_at = ts + self.config.tcp_close_delay
            self._push(conn.close_at, conn)

    def _push(self, deadline: float, conn: _Tracked) -> None:
        heapq.heappush(self._deadlines, (deadline, next(self._tiebreak), conn))

    def _deadline(self, conn: _Tracked) -> float:
        return min(conn.last_ts + self._inactivity[conn.proto], conn.close_at)

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
                record = self._finish(conn)
                if record is not None:
                    finished.append(record)
            else:
                self._push(deadline, conn)  # activity since this entry was queued: look again later
        return finished

    def _finish(self, conn: _Tracked) -> Connection | None:
        """The connection's record, or None when it was released early (its record is out already)."""
        conn.finished = True
        return None if conn.released else build_connection(conn, self.config.snaplen)


def _record_is_out(conn: _Tracked) -> bool:
    return conn.finished or conn.released


def _should_flip(proto: int, sport: int, dport: int, flags: int) -> bool:
    """Zeek's refinements of "the first sender is the originator"."""
    if proto == TCP:
        if flags & _SYN_ACK == _SYN_ACK:
            return True
        if flags & SYN:
            return False
        return is_likely_server(proto, sport) and not is_likely_server(proto, dport)
    if proto == UDP:
        return is_likely_server(proto, sport) and not is_likely_server(proto, dport)
    return sport in _ICMP_REPLY_TYPES[proto]


def _address_text(address: bytes) -> str:
    text = _address_cache.get(address)
    if text is None:
        if len(_address_cache) >= _ADDRESS_CACHE_SIZE:
            _address_cache.clear()
        text = socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)
        _address_cache[address] = text
    return text


def make_uid(proto: int, orig_h: str, orig_p: int, resp_h: str, resp_p: int, ts: float) -> str:
    """A Zeek-looking uid ("C" + 17 base62 digits), deterministic from the 5-tuple and first timestamp."""
    digest = _UID_HASH.copy()  # copying a keyed-up hash object is cheaper than configuring a new one
    digest.update(f"{proto}|{orig_h}|{orig_p}|{resp_h}|{resp_p}|{ts:.6f}".encode())
    number = int.from_bytes(digest.digest(), "big")
    pairs = _BASE62_PAIRS
    number, d0 = divmod(number, 3844)
    number, d1 = divmod(number, 3844)
    number, d2 = divmod(number, 3844)
    number, d3 = divmod(number, 3844)
    number, d4 = divmod(number, 3844)
    number, d5 = divmod(number, 3844)
    number, d6 = divmod(number, 3844)
    number, d7 = divmod(number, 3844)
    return "".join(
        (
            "C",
            pairs[d0],
            pairs[d1],
            pairs[d2],
            pairs[d3],
            pairs[d4],
            pairs[d5],
            pairs[d6],
            pairs[d7],
            _BASE62[number % 62],
        )
    )


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
        community_id=flow_community_id(proto, conn.src, conn.dst, conn.sport, conn.dport),
        pkt_ts=np.array(conn.pkt_ts, _FLOAT64),
        # the buffers are this connection's alone and never grow again: the arrays take them without a copy
        pkt_dir=np.frombuffer(conn.pkt_dir, _INT8),
        pkt_len=np.array(conn.pkt_len, _INT32),
        pkt_bytes=np.frombuffer(conn.pkt_bytes, _UINT8).reshape(n, snaplen),
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
    ports: tuple[int, int] | None = None,
) -> Connection | None:
    """One connection from the frames a sensor attributed to it (no timeouts, no splitting).

    The first usable frame fixes the connection's endpoints. Directions come from `is_orig` when given (the
    sensor's verdict wins), otherwise from the addresses and ports. Frames that do not parse, or that belong to
    another flow when `is_orig` is not given, are counted in `stats` and left out. Returns None when no frame
    is usable.

    A later IP fragment (no transport header) is a packet of the connection when `is_orig` is given: the sensor
    attributed it, as `ConnectionTracker` attributes a later fragment to its first fragment's connection. Zeek
    hands over one frame per reassembled datagram, the fragment that completed it, so a connection of
    fragmented datagrams may consist of later fragments only: its ports are then `ports` (orig_p, resp_p, as
    the sensor gave them), or 0 without them. Without `is_orig` later fragments are counted and left out.
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
        forward = (packet[2], packet[3], packet[4], packet[5], packet[6])
        if packet[14] == LATER_FRAGMENT:
            if is_orig is None:
                tracker.stats.count_skipped("fragment_in_explicit_connection")
                continue
            orig_p, resp_p = ports if ports is not None else (0, 0)
            sport, dport = (orig_p, resp_p) if is_orig[index] else (resp_p, orig_p)
            forward = (packet[2], packet[3], packet[4], sport, dport)
        if conn is None:
            given = None if is_orig is None else bool(is_orig[index])
            flipped = _should_flip(packet[2], packet[5], packet[6], packet[7]) if given is None else not given
            reverse = (forward[0], forward[2], forward[1], forward[4], forward[3])
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
