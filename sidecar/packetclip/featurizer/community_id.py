"""Community ID v1 flow hashes (the corelight community-id spec), so verdicts join Zeek and Suricata logs.

Owns `community_id`. Input is one flow tuple; addresses as text or packed bytes. For ICMP and ICMPv6 the ports are
the type and code: types with a request/reply counterpart hash as (type, counterpart) in canonical order, so both
directions share an ID; other types are one-way and hash as (type, code) in the given order.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import struct

from packetclip.featurizer.frames import ICMP4_COUNTERPART, ICMP6_COUNTERPART

_PORTED_PROTOCOLS = frozenset((1, 6, 17, 58, 132))  # ICMP, TCP, UDP, ICMPv6, SCTP
_SEED = struct.Struct("!H")
_SEED_0 = _SEED.pack(0)
_PROTO = struct.Struct("!BB")  # protocol number and a zero pad byte
_PORTS = struct.Struct("!HH")


def _packed(address: str | bytes) -> bytes:
    if isinstance(address, bytes):
        return address
    return ipaddress.ip_address(address).packed


def community_id(
    proto_num: int,
    saddr: str | bytes,
    daddr: str | bytes,
    sport: int | None = None,
    dport: int | None = None,
    seed: int = 0,
) -> str:
    """The v1 Community ID ("1:" + base64 SHA-1) of a flow; sport/dport are type/code for ICMP."""
    src, dst = _packed(saddr), _packed(daddr)
    has_ports = proto_num in _PORTED_PROTOCOLS and sport is not None and dport is not None
    one_way = False
    if has_ports and sport is not None and proto_num in (1, 58):
        counterpart = (ICMP4_COUNTERPART if proto_num == 1 else ICMP6_COUNTERPART).get(sport)
        if counterpart is None:
            one_way = True
        else:
            dport = counterpart
    src_port, dst_port = (sport or 0, dport or 0) if has_ports else (0, 0)
    if not one_way and (src > dst or (src == dst and src_port > dst_port)):
        src, dst, src_port, dst_port = dst, src, dst_port, src_port
    ports = _PORTS.pack(src_port, dst_port) if has_ports else b""
    return _encode(_SEED.pack(seed), src, dst, _PROTO.pack(proto_num, 0), ports)


def flow_community_id(proto_num: int, src: bytes, dst: bytes, sport: int, dport: int) -> str:
    """`community_id` with seed 0 for a tracked flow: packed addresses and integer ports (type/code for ICMP).

    The connection tracker calls this once per connection, so it skips the general function's conversions.
    """
    if proto_num == 1 or proto_num == 58:
        counterpart = (ICMP4_COUNTERPART if proto_num == 1 else ICMP6_COUNTERPART).get(sport)
        if counterpart is None:  # one-way ICMP: hashed in the given order
            return _encode(_SEED_0, src, dst, _PROTO.pack(proto_num, 0), _PORTS.pack(sport, dport))
        dport = counterpart
    if src > dst or (src == dst and sport > dport):
        src, dst, sport, dport = dst, src, dport, sport
    return _encode(_SEED_0, src, dst, _PROTO.pack(proto_num, 0), _PORTS.pack(sport, dport))


def _encode(seed: bytes, src: bytes, dst: bytes, proto: bytes, ports: bytes) -> str:
    digest = hashlib.sha1(b"".join((seed, src, dst, proto, ports))).digest()
    return "1:" + binascii.b2a_base64(digest, newline=False).decode("ascii")
