"""Writes packetclip-small.pcap, the capture the btest suite replays.

Six connections, each chosen for one path of the Zeek package: a TCP connection that closes (8 frames, both
directions), a UDP query and answer, a half-open SYN (sent by max_wait, never closed), 35 one-way UDP packets
(capped at max_packets = 30), an ICMP echo, and a late UDP packet, 6 s after the first, that moves network time
past every max_wait (5 s by default) and is itself sent at the end of the capture. Run it with scapy installed: python make_packetclip_small.py OUT.pcap
"""

from __future__ import annotations

import sys

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, wrpcap

START = 1_700_000_000.0  # fixed, so reruns write the same bytes


def frame(at: float, packet: Ether) -> Ether:
    packet.time = START + at
    return packet


def ether() -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def tcp_closing(client: str, server: str) -> list[Ether]:
    def c2s(at: float, **fields: object) -> Ether:
        return frame(at, ether() / IP(src=client, dst=server) / TCP(sport=40000, dport=22, **fields))

    def s2c(at: float, **fields: object) -> Ether:
        return frame(at, ether() / IP(src=server, dst=client) / TCP(sport=22, dport=40000, **fields))

    return [
        c2s(0.00, flags="S", seq=100),
        s2c(0.01, flags="SA", seq=500, ack=101),
        c2s(0.02, flags="A", seq=101, ack=501),
        s2c(0.05, flags="PA", seq=501, ack=101) / Raw(b"SSH-2.0-OpenSSH_9.2\r\n"),
        c2s(0.06, flags="PA", seq=101, ack=522) / Raw(b"SSH-2.0-hydra\r\n" + b"x" * 300),
        s2c(0.10, flags="FA", seq=522, ack=416),
        c2s(0.11, flags="FA", seq=416, ack=523),
        s2c(0.12, flags="A", seq=523, ack=417),
    ]


def packets() -> list[Ether]:
    query = b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x03abc\x00\x00\x01\x00\x01"
    answer = b"\x12\x34\x81\x80\x00\x01" + b"\x00" * 6 + b"\x03abc\x00\x00\x01\x00\x01"
    out = tcp_closing("10.0.0.1", "10.0.0.2")
    out.append(
        frame(0.20, ether() / IP(src="10.0.0.1", dst="10.0.0.3") / UDP(sport=33333, dport=53) / Raw(query))
    )
    out.append(
        frame(0.21, ether() / IP(src="10.0.0.3", dst="10.0.0.1") / UDP(sport=53, dport=33333) / Raw(answer))
    )
    out.append(
        frame(0.30, ether() / IP(src="10.0.0.9", dst="10.0.0.2") / TCP(sport=41000, dport=80, flags="S"))
    )
    for i in range(35):
        payload = Raw(bytes([i]) * 4)
        out.append(
            frame(
                0.40 + i * 0.01,
                ether() / IP(src="10.0.0.4", dst="10.0.0.5") / UDP(sport=1000, dport=2000) / payload,
            )
        )
    out.append(
        frame(0.80, ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=1, seq=1) / Raw(b"ping"))
    )
    out.append(
        frame(0.81, ether() / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=1, seq=1) / Raw(b"ping"))
    )
    out.append(
        frame(6.00, ether() / IP(src="10.0.0.7", dst="10.0.0.8") / UDP(sport=3000, dport=4000) / Raw(b"late"))
    )
    return out


if __name__ == "__main__":
    wrpcap(sys.argv[1], packets(), linktype=1)
