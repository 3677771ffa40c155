"""`packet_facts`: what a context slot says the packet was (protocol, TCP flags, payload size), read from the
masked bytes the sensor keeps, checked against dpkt's decoding of the same real packets."""

from __future__ import annotations

import math
from pathlib import Path

import dpkt
import numpy as np
import pytest

from packetclip.context import PACKET_FACTS, packet_facts
from packetclip.featurizer import read_frames
from packetclip.featurizer.frames import parse_frame
from packetclip.featurizer.masking import mask_packet

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPLEN = 128
CAPTURES = (
    REPO_ROOT / "samples" / "lab-quick" / "capture.pcap",
    "nDPI/tests/cfgs/default/pcap/http_ipv6.pcap",  # IPv6 TCP
    "nDPI/tests/cfgs/default/pcap/nintendo.pcap",  # UDP, ICMP
    "nDPI/tests/cfgs/default/pcap/synscan.pcap",  # SYN, RST
    "nDPI/tests/cfgs/default/pcap/googledns_android10.pcap",  # IPv6 UDP and ICMPv6
)
_FLAGS = {
    "syn": dpkt.tcp.TH_SYN,
    "ack": dpkt.tcp.TH_ACK,
    "fin": dpkt.tcp.TH_FIN,
    "rst": dpkt.tcp.TH_RST,
    "psh": dpkt.tcp.TH_PUSH,
}


def _expected(ip_bytes: bytes) -> dict[str, float] | None:
    """The facts dpkt reads from a whole, unfragmented packet (None where it cannot)."""
    try:
        ip = dpkt.ip.IP(ip_bytes) if ip_bytes[0] >> 4 == 4 else dpkt.ip6.IP6(ip_bytes)
    except (dpkt.UnpackError, IndexError):
        return None
    if isinstance(ip, dpkt.ip.IP) and (ip.offset or ip.mf):
        return None
    transport = ip.data
    facts = dict.fromkeys(PACKET_FACTS, 0.0)
    if isinstance(transport, dpkt.tcp.TCP):
        facts["tcp"] = 1.0
        facts.update({name: float(bool(transport.flags & bit)) for name, bit in _FLAGS.items()})
    elif isinstance(transport, dpkt.udp.UDP):
        facts["udp"] = 1.0
    elif isinstance(transport, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        facts["icmp"] = 1.0
    else:
        return None
    payload = len(transport.data) if not isinstance(transport, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)) else None
    if payload is None:  # dpkt nests ICMP bodies; the transport header is 8 bytes as for UDP
        payload = len(bytes(transport)) - 8
    facts["log_payload"] = math.log1p(payload) / math.log1p(65535)
    return facts


def _real_packets(real_data: Path) -> list[tuple[bytes, int]]:
    packets = []
    for capture in CAPTURES:
        path = capture if isinstance(capture, Path) else real_data / capture
        for _ts, link_type, frame in read_frames(path):
            parsed = parse_frame(link_type, frame)
            if len(parsed) == 17 and len(frame) - parsed[0] >= parsed[12]:  # an IP packet captured whole
                packets.append((bytes(frame[parsed[0] : parsed[0] + parsed[12]]), parsed[12]))
    return packets


def test_facts_match_dpkt_on_real_packets(real_data: Path) -> None:
    packets = _real_packets(real_data)
    masked = np.frombuffer(b"".join(mask_packet(p, SNAPLEN) for p, _ in packets), np.uint8).reshape(
        -1, SNAPLEN
    )
    facts = packet_facts(masked, np.array([length for _, length in packets]))
    checked = {"tcp": 0, "udp": 0, "icmp": 0, "ipv6": 0, "syn": 0, "rst": 0}
    for row, (packet, _) in enumerate(packets):
        expected = _expected(packet)
        if expected is None:
            continue
        assert facts[row].tolist() == pytest.approx(list(expected.values()), abs=1e-6), (row, expected)
        for name in ("tcp", "udp", "icmp", "syn", "rst"):
            checked[name] += int(expected[name])
        checked["ipv6"] += packet[0] >> 4 == 6
    assert min(checked.values()) >= 5, checked  # every kind of packet was really compared


def _ipv6_tcp_behind_a_hop_by_hop_header() -> bytes:
    tcp = dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, data=b"x" * 7)
    hop = bytes([dpkt.ip.IP_PROTO_TCP, 0]) + bytes(6)  # next header TCP, 8 bytes long
    body = hop + bytes(tcp)
    ip6 = dpkt.ip6.IP6(nxt=dpkt.ip.IP_PROTO_HOPOPTS, hlim=64, src=bytes(16), dst=bytes(16), plen=len(body))
    return bytes(ip6.pack_hdr()) + body


def test_extension_headers_fragments_and_cut_headers() -> None:
    v6 = _ipv6_tcp_behind_a_hop_by_hop_header()
    tcp = dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_RST, data=b"")
    v4 = bytes(dpkt.ip.IP(p=dpkt.ip.IP_PROTO_TCP, src=bytes(4), dst=bytes(4), data=tcp, len=40))
    later = bytearray(
        bytes(dpkt.ip.IP(p=dpkt.ip.IP_PROTO_UDP, src=bytes(4), dst=bytes(4), data=b"y" * 30, len=50))
    )
    later[6:8] = (185).to_bytes(2, "big")  # fragment offset 185 * 8: a later fragment, no UDP header in it
    rows = [
        mask_packet(v6, SNAPLEN),
        mask_packet(v4, SNAPLEN),
        mask_packet(bytes(later), SNAPLEN),
        mask_packet(v4, 20) + bytes(SNAPLEN - 20),
        bytes(SNAPLEN),
    ]
    facts = packet_facts(
        np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), SNAPLEN),
        np.array([len(v6), 40, 50, 40, 0]),
    )
    named = [dict(zip(PACKET_FACTS, row.tolist(), strict=True)) for row in facts]
    assert named[0]["tcp"] == named[0]["syn"] == named[0]["ack"] == 1.0 and named[0]["rst"] == 0.0
    assert named[0]["log_payload"] == pytest.approx(math.log1p(7) / math.log1p(65535))
    assert named[1]["tcp"] == named[1]["rst"] == 1.0 and named[1]["log_payload"] == 0.0
    assert named[2]["udp"] == 1.0 and named[2]["log_payload"] == pytest.approx(
        math.log1p(30) / math.log1p(65535)
    )
    assert named[3]["tcp"] == 1.0 and named[3]["rst"] == 0.0  # the flags were cut off: none claimed
    assert not facts[4].any()  # padding


def test_facts_keep_the_leading_shape() -> None:
    assert packet_facts(np.zeros((3, 4, SNAPLEN), np.uint8), np.zeros((3, 4))).shape == (
        3,
        4,
        len(PACKET_FACTS),
    )
    assert packet_facts(np.zeros((0, SNAPLEN), np.uint8), np.zeros(0)).shape == (0, len(PACKET_FACTS))
