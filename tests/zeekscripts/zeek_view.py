"""What the packetclip Zeek scripts send for a small capture, computed with an independent reader (dpkt).

The btest baselines of the edge-case captures (tests/zeek/traces/make_packetclip_edges.py) are written by
reasoning, not by Zeek: this module states that reasoning once, so that the baselines are recomputed from the
captures (tests/zeekscripts) and the sidecar is fed exactly those requests (tests/zeek_peer).

The rules it follows are Zeek's for these captures: IPv4 over Ethernet or Linux SLL; `new_packet` once per
packet, and once per reassembled fragmented datagram, when its last missing fragment arrives, with that fragment
as the current packet (`get_current_packet()`); a connection's originator is its first packet's sender (true for
these captures: a SYN, or a client port); each frame's time is the packet's own timestamp, and so is the
connection's start; every connection is sent at the end of the capture (all of them are shorter than max_wait
and none closes), with the capture's link type. It does not model TCP state, timeouts or Zeek's port heuristics.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

MAX_PACKETS = 30
SNAPLEN = 192
ICMP_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13}
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}
IP_OFFSET = {1: 14, 113: 16}  # where the IP header starts, per link type of these captures


@dataclass
class ZeekRequest:
    """One PacketCLIP::request as the scripts publish it."""

    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    link_type: int
    start: float  # the connection's start_time: its first packet's timestamp
    ts: list[float] = field(default_factory=list)
    is_orig: list[bool] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)

    def btest_line(self) -> str:
        """The line tests/zeek/scripts/print-requests.zeek prints for this request."""
        ip_off = IP_OFFSET[self.link_type]
        kinds = "".join(fragment_kind(frame, ip_off) for frame in self.frames)
        directions = "".join("T" if d else "F" for d in self.is_orig)
        times = ",".join(f"{t:.6f}" for t in self.ts)
        return (
            f"{self.orig_h}:{self.orig_p}/{self.proto} -> {self.resp_h}:{self.resp_p}/{self.proto} "
            f"link={self.link_type} n={len(self.frames)} dirs={directions} frags={kinds} ts={times}"
        )


def fragment_kind(frame: bytes, ip_off: int) -> str:
    """N: a whole datagram, F: a first fragment, L: a later fragment (no transport header)."""
    (field_,) = struct.unpack_from("!H", frame, ip_off + 6)
    if field_ & 0x1FFF:
        return "L"
    return "F" if field_ & 0x2000 else "N"


def zeek_packets(capture: Path) -> list[tuple[float, bytes, dpkt.ip.IP]]:
    """(time, frame, whole IP datagram) for every packet Zeek raises new_packet for, in capture order."""
    out = []
    partial: dict[tuple, dict[int, bytes]] = {}
    ends: dict[tuple, int] = {}
    with capture.open("rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        ip_off = IP_OFFSET[reader.datalink()]
        for ts, frame in reader:
            ip = dpkt.ip.IP(frame[ip_off:])
            if not ip.mf and not ip.offset:
                out.append((ts, frame, ip))
                continue
            key = (ip.src, ip.dst, ip.id, ip.p)
            pieces = partial.setdefault(key, {})
            pieces[ip.offset * 8] = bytes(ip.data)
            if not ip.mf:
                ends[key] = ip.offset * 8 + len(ip.data)
            if key in ends and _complete(pieces, ends[key]):
                data = b"".join(pieces[offset] for offset in sorted(pieces))
                whole = dpkt.ip.IP(src=ip.src, dst=ip.dst, p=ip.p, id=ip.id, data=data)
                whole.data = dpkt.udp.UDP(data) if ip.p == 17 else dpkt.tcp.TCP(data)
                out.append((ts, frame, whole))
                del partial[key], ends[key]
    return out


def _complete(pieces: dict[int, bytes], end: int) -> bool:
    covered = 0
    for offset in sorted(pieces):
        if offset > covered:
            return False
        covered = max(covered, offset + len(pieces[offset]))
    return covered >= end


def zeek_requests(capture: Path) -> list[ZeekRequest]:
    """The requests of a capture, one per connection, in order of first packet."""
    with capture.open("rb") as handle:
        link_type = dpkt.pcap.Reader(handle).datalink()
    requests: dict[tuple, ZeekRequest] = {}
    for ts, frame, ip in zeek_packets(capture):
        src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
        if ip.p == 1:
            sport, dport = ip.data.type, ICMP_COUNTERPART.get(ip.data.type, ip.data.code)
            key = (frozenset((src, dst)), 1, frozenset((sport, dport)))
        else:
            sport, dport = ip.data.sport, ip.data.dport
            key = (frozenset(((src, sport), (dst, dport))), ip.p)
        request = requests.get(key)
        if request is None:
            request = requests[key] = ZeekRequest(src, sport, dst, dport, PROTO_NAMES[ip.p], link_type, ts)
        if len(request.frames) < MAX_PACKETS:
            request.ts.append(ts)
            request.is_orig.append(src == request.orig_h and sport == request.orig_p)
            request.frames.append(frame[:SNAPLEN])
    return list(requests.values())
