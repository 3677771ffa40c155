"""Test helpers: named real captures and small writers that re-encode real frames in other container formats.

The writers exist so that format variants (byte order, nanosecond pcap, multi-interface pcapng) are tested with
real packets: the packets come from the real captures, only the container around them is rewritten.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

# Real captures (relative to the real-data folder) chosen for what they contain; see the tests that use them.
SF_HTTP = "zeek/testing/btest/Traces/http/261/variant-03-cl_negative.pcap"  # handshake, GET, FIN both ways
REJ_AND_RSTR = "zeek/testing/btest/Traces/redis/almost-resp.pcap"  # IPv6 SYN answered by RST; a reset session
S0_SYNS = "nDPI/tests/cfgs/default/pcap/custom_rules_same-ip_multiple_ports.pcapng"  # SYNs never answered
TCP_SCAN = "nDPI/tests/cfgs/default/pcap/tcp_scan.pcapng"  # SYN/FIN/NULL probes of open and closed ports
SLL = "nDPI/tests/cfgs/default/pcap/rtsp.pcap"  # Linux cooked capture (113)
SLL2 = "zeek/testing/btest/Traces/tls/openjdk-25.0.2-zeek.org.pcap"  # Linux cooked v2 (276)
NULL_LOOPBACK = "nDPI/tests/cfgs/default/pcap/nats.pcap"  # BSD loopback (0)
NULL_LOOPBACK_V6 = "zeek/testing/btest/Traces/ssh/ssh-over-udp.pcap"  # BSD loopback carrying IPv6
VLAN = "nDPI/tests/cfgs/default/pcap/hsrp0.pcap"  # 802.1Q-tagged frames
IPV6_PCAPNG = "nDPI/tests/cfgs/default/pcap/doq.pcapng"  # pcapng with IPv6 UDP
SNAPLEN_CUT = "nDPI/tests/cfgs/default/pcap/telnet.pcap"  # captured with a snaplen shorter than some packets
FUZZED = "nDPI/tests/cfgs/default/pcap/fuzz-2006-06-26-2594.pcap"  # damaged frames of several kinds
GZIPPED = "zeek/testing/btest/Traces/smb/smb_many_open_files_500.pcap.gz"


def write_pcap(
    path: Path, frames: Iterable[tuple[float, bytes]], link_type: int, order: str = "<", nanos: bool = False
) -> None:
    """A classic pcap in the given byte order and time resolution."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    scale = 1_000_000_000 if nanos else 1_000_000
    with open(path, "wb") as out:
        out.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, link_type))
        for ts, frame in frames:
            ticks = round(ts * scale)
            sec, frac = divmod(ticks, scale)
            out.write(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)))
            out.write(frame)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def write_pcapng(
    path: Path,
    interfaces: list[tuple[int, int]],
    packets: Iterable[tuple[int, float, bytes]],
    order: str = "<",
) -> None:
    """A pcapng with one section; interfaces are (link type, if_tsresol exponent of 10); packets (if, ts, frame)."""
    out = bytearray()
    out += _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    for link_type, exponent in interfaces:
        options = struct.pack(order + "HHB3x", 9, 1, exponent) + struct.pack(order + "HH", 0, 0)
        out += _block(order, 1, struct.pack(order + "HHI", link_type, 0, 0) + options)
    for if_id, ts, frame in packets:
        ticks = round(ts * 10 ** interfaces[if_id][1])
        body = (
            struct.pack(order + "IIIII", if_id, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
            + frame
        )
        out += _block(order, 6, body)
    path.write_bytes(bytes(out))


TCP_WITH_TIMESTAMPS = "zeek/testing/btest/Traces/finger/verbose.pcap"  # Ethernet, IPv4, TCP timestamps, SF
