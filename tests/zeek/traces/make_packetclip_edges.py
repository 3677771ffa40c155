"""Writes the three small captures of the btest suite's edge cases (issue 20), with dpkt:

- packetclip-short.pcap: Linux cooked capture (SLL, link type 113), 0.4 s long, shorter than max_wait (5 s):
  an open TCP handshake, a UDP query and answer, an ICMP echo. Every connection is sent at the end of the capture
  (Pcap::file_done), when the packet source is closed and reports link type -1: the requests must still say 113.
- packetclip-fragments.pcap: Ethernet, one UDP flow of three 1200-byte datagrams, each in three IPv4 fragments
  (the third datagram's fragments arrive last-first), and a one-frame answer. Zeek reassembles each datagram and
  hands over the fragment that completed it.
- packetclip-backwards.pcap: Ethernet, three UDP flows whose packet times go backwards (a flow starting 5 s and
  one 6 s before packets already seen). Zeek never moves network time back: times must come from the packets.

Run: python make_packetclip_edges.py OUTDIR (writes the three files there; fixed times, so reruns give the same
bytes).
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

import dpkt

START = 1_700_000_000.0  # fixed, so reruns write the same bytes
MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def ip4(src: str, dst: str, proto: int, payload: bytes | dpkt.Packet, ident: int = 1) -> dpkt.ip.IP:
    """An IPv4 packet; dpkt fills in the lengths and the IP, TCP, UDP and ICMP checksums (Zeek drops packets
    with bad checksums unless run with -C)."""
    return dpkt.ip.IP(
        src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, id=ident, ttl=64, data=payload
    )


def udp(sport: int, dport: int, payload: bytes) -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)


def tcp(sport: int, dport: int, flags: int, seq: int, ack: int = 0) -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, win=64240)


def icmp_echo(kind: int) -> dpkt.icmp.ICMP:
    return dpkt.icmp.ICMP(type=kind, code=0, data=dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"ping"))


def ether(packet: dpkt.ip.IP, forward: bool = True) -> bytes:
    src, dst = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
    return bytes(dpkt.ethernet.Ethernet(src=src, dst=dst, type=dpkt.ethernet.ETH_TYPE_IP, data=bytes(packet)))


def sll(packet: dpkt.ip.IP, outgoing: bool = True) -> bytes:
    # packet type (4 = sent by us, 0 = to us), ARPHRD_ETHER, address length, address (8 bytes), protocol
    header = struct.pack("!HHH8sH", 4 if outgoing else 0, 1, 6, MAC_A + b"\x00\x00", 0x0800)
    return header + bytes(packet)


def short_capture() -> list[tuple[float, bytes]]:
    client, server, resolver = "10.1.0.1", "10.1.0.2", "10.1.0.3"
    return [
        (0.00, sll(ip4(client, server, 6, tcp(40001, 443, dpkt.tcp.TH_SYN, 1000)))),
        (
            0.01,
            sll(
                ip4(server, client, 6, tcp(443, 40001, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, 5000, 1001)), False
            ),
        ),
        (0.02, sll(ip4(client, server, 6, tcp(40001, 443, dpkt.tcp.TH_ACK, 1001, 5001)))),
        (0.10, sll(ip4(client, resolver, 17, udp(33000, 53, b"\x12\x34\x01\x00" + bytes(8))))),
        (0.12, sll(ip4(resolver, client, 17, udp(53, 33000, b"\x12\x34\x81\x80" + bytes(8))), False)),
        (0.30, sll(ip4(client, server, 1, icmp_echo(8)))),
        (0.40, sll(ip4(server, client, 1, icmp_echo(0)), False)),
    ]


def fragments(whole: dpkt.ip.IP, size: int = 512) -> list[dpkt.ip.IP]:
    """The IPv4 fragments of a packet: `size` bytes of its payload (transport header included) each."""
    data = bytes(whole)[whole.hl * 4 :]  # the transport header with its checksum, then the payload
    pieces = []
    for offset in range(0, len(data), size):
        piece = dpkt.ip.IP(src=whole.src, dst=whole.dst, p=whole.p, id=whole.id, ttl=whole.ttl)
        piece.data = data[offset : offset + size]
        piece.mf = int(offset + size < len(data))
        piece.offset = offset // 8  # in 8-byte units
        pieces.append(piece)
    return pieces


def fragment_capture() -> list[tuple[float, bytes]]:
    client, server = "10.2.0.1", "10.2.0.2"
    out = []
    at = 0.0
    for number in range(3):
        datagram = ip4(client, server, 17, udp(5000, 6000, bytes([number + 1]) * 1192), 100 + number)
        pieces = fragments(datagram)  # 1200 bytes of UDP: fragments of 512, 512 and 176
        if number == 2:
            pieces.reverse()  # the last fragment first: the first fragment completes the datagram
        for piece in pieces:
            out.append((at, ether(piece)))
            at += 0.01
    out.append((at, ether(ip4(server, client, 17, udp(6000, 5000, b"ack")), False)))
    return out


def backwards_capture() -> list[tuple[float, bytes]]:
    a, b = "10.3.0.1", "10.3.0.2"
    return [
        (10.00, ether(ip4(a, b, 17, udp(7001, 9001, b"first")))),
        (10.10, ether(ip4(b, a, 17, udp(9001, 7001, b"reply")), False)),
        (5.00, ether(ip4(a, b, 17, udp(7002, 9002, b"five seconds earlier")))),
        (5.05, ether(ip4(b, a, 17, udp(9002, 7002, b"its reply")), False)),
        (10.20, ether(ip4(a, b, 17, udp(7001, 9001, b"later")))),
        (4.00, ether(ip4(a, b, 17, udp(7003, 9003, b"six seconds earlier")))),
    ]


def write(path: Path, frames: list[tuple[float, bytes]], linktype: int) -> None:
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=linktype)
        for at, frame in frames:
            writer.writepkt(frame, ts=START + at)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    write(out / "packetclip-short.pcap", short_capture(), dpkt.pcap.DLT_LINUX_SLL)
    write(out / "packetclip-fragments.pcap", fragment_capture(), dpkt.pcap.DLT_EN10MB)
    write(out / "packetclip-backwards.pcap", backwards_capture(), dpkt.pcap.DLT_EN10MB)
