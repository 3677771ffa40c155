"""Frame parsing: link layer, IPv4/IPv6 (options, extension headers, fragments) and the TCP/UDP/ICMP header fields
that connection tracking needs.

Owns `parse_frame` and the link-type and protocol constants. It reads headers with `struct.unpack_from` straight
from the captured bytes, allocates nothing but the result tuple, and never raises on damaged input: a frame it
cannot use comes back as a (category, reason) pair that the tracker counts. It does not mask anything
(`masking.py`) and keeps no state (`conntrack.py`).

Link types: Ethernet (1) with 802.1Q/802.1ad/QinQ tags and PPPoE sessions, Linux SLL (113) and SLL2 (276), raw IP
(101, 12, 14, 228, 229), BSD NULL (0, host byte order) and LOOP (108, network byte order), PPP (9, 50) and Cisco
HDLC (104). IP protocols other than TCP, UDP, ICMP and ICMPv6 (tunnels, GRE, SCTP, ...) are counted as skipped.
"""

from __future__ import annotations

import struct

# The (category, reason) pair returned for a frame that is not tracked; categories match ParseStats buckets.
NON_IP = "non_ip"
MALFORMED = "malformed"
SKIPPED = "skipped"

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58

# Index of each field in the tuple that `parse_frame` returns for a usable packet.
P_IP_OFF, P_VERSION, P_PROTO, P_SRC, P_DST, P_SPORT, P_DPORT = 0, 1, 2, 3, 4, 5, 6
P_FLAGS, P_SEQ, P_ACK, P_WINDOW, P_PAYLOAD, P_IP_LEN, P_VLAN, P_FRAG, P_FRAG_KEY, P_TRUNCATED = range(7, 17)

# P_FRAG values: a whole datagram, the first fragment (carries the L4 header), a later fragment (no L4 header).
NOT_FRAGMENT, FIRST_FRAGMENT, LATER_FRAGMENT = 0, 1, 2

_VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))
_RAW_IP_LINKS = frozenset((101, 12, 14, 228, 229))
_AF_INET = 2
_AF_INET6 = frozenset((10, 24, 28, 30))  # Linux, NetBSD/OpenBSD/BSDi, FreeBSD, Darwin
_PPP_TO_ETHERTYPE = {0x0021: 0x0800, 0x0057: 0x86DD}
_IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60))  # hop-by-hop, routing, fragment, AH, destination options
_MAX_IPV6_EXTENSIONS = 8  # more than any sane packet carries; a loop guard against crafted chains

# ICMP "ports" as Zeek and the Community ID spec define them: request and reply types are each other's counterpart,
# so both directions of an exchange land on one connection; other types are one-way with the code as "port".
ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 17: 18, 18: 17}
ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130}
ICMP6_COUNTERPART.update({139: 140, 140: 139, 144: 145, 145: 144})

_u16 = struct.Struct("!H").unpack_from
_u16_le = struct.Struct("<H").unpack_from
_u32_both = struct.Struct("<I").unpack_from
_ipv4_fields = struct.Struct("!BxHHHBB").unpack_from  # vihl, total length, id, flags+offset, ttl, proto
_ipv6_fields = struct.Struct("!4xHB").unpack_from  # payload length, next header
_tcp_fields = struct.Struct("!HHIIHH").unpack_from  # ports, seq, ack, offset+flags, window
_udp_fields = struct.Struct("!HHH").unpack_from  # ports, length
_u32 = struct.Struct("!I").unpack_from

Parsed = tuple  # the 17-field tuple described by the P_* indices, or a (category, reason) pair


def parse_frame(link_type: int, frame: bytes) -> Parsed:
    """Parse one captured frame; never raises. Returns the packet tuple or (category, reason)."""
    size = len(frame)
    vlan = None
    if link_type == 1:
        if size < 14:
            return (MALFORMED, "truncated_ethernet")
        ethertype = _u16(frame, 12)[0]
        offset = 14
    elif link_type == 113:
        if size < 16:
            return (MALFORMED, "truncated_sll")
        ethertype = _u16(frame, 14)[0]
        offset = 16
    elif link_type == 276:
        if size < 20:
            return (MALFORMED, "truncated_sll2")
        ethertype = _u16(frame, 0)[0]
        offset = 20
    elif link_type in _RAW_IP_LINKS:
        if not size:
            return (MALFORMED, "empty_frame")
        return _parse_ip(frame, 0, frame[0] >> 4, None)
    elif link_type == 0 or link_type == 108:
        if size < 4:
            return (MALFORMED, "truncated_loopback")
        family = _u32_both(frame, 0)[0]
        if link_type == 108 or family > 0xFFFF:  # LOOP is always network order; NULL is the writer's order
            family = _u32(frame, 0)[0]
        if family == _AF_INET:
            return _parse_ip(frame, 4, 4, None)
        if family in _AF_INET6:
            return _parse_ip(frame, 4, 6, None)
        return (NON_IP, "")
    elif link_type == 9 or link_type == 50:
        offset = 2 if frame[:2] == b"\xff\x03" else 0
        if size < offset + 2:
            return (MALFORMED, "truncated_ppp")
        ethertype = _PPP_TO_ETHERTYPE.get(_u16(frame, offset)[0], 0)
        offset += 2
    elif link_type == 104:
        if size < 4:
            return (MALFORMED, "truncated_cisco_hdlc")
        ethertype = _u16(frame, 2)[0]
        offset = 4
    else:
        return (SKIPPED, f"link_type_{link_type}")

    while ethertype in _VLAN_ETHERTYPES:
        if size < offset + 4:
            return (MALFORMED, "truncated_vlan_tag")
        if vlan is None:  # Zeek's `vlan` is the outer tag
            vlan = _u16(frame, offset)[0] & 0x0FFF
        ethertype = _u16(frame, offset + 2)[0]
        offset += 4
    if ethertype == 0x8864:  # PPPoE session: 6-byte header, then the PPP protocol
        if size < offset + 8:
            return (MALFORMED, "truncated_pppoe")
        ethertype = _PPP_TO_ETHERTYPE.get(_u16(frame, offset + 6)[0], 0)
        offset += 8
    if ethertype == 0x0800:
        return _parse_ip(frame, offset, 4, vlan)
    if ethertype == 0x86DD:
        return _parse_ip(frame, offset, 6, vlan)
    return (NON_IP, "")


def _parse_ip(frame: bytes, ip_off: int, expected_version: int, vlan: int | None) -> Parsed:
    size = len(frame)
    if expected_version == 4:
        if size < ip_off + 20:
            return (MALFORMED, "truncated_ipv4_header")
        vihl, ip_len, ident, frag_field, _ttl, proto = _ipv4_fields(frame, ip_off)
        if vihl >> 4 != 4:
            return (MALFORMED, "bad_ip_version")
        header_len = (vihl & 0x0F) * 4
        if header_len < 20:
            return (MALFORMED, "bad_ipv4_header_length")
        if size < ip_off + header_len:
            return (MALFORMED, "truncated_ipv4_header")
        if ip_len == 0:  # segmentation offload on the capturing host leaves the length unset
            ip_len = size - ip_off
        elif ip_len < header_len:
            return (MALFORMED, "bad_ipv4_total_length")
        src = frame[ip_off + 12 : ip_off + 16]
        dst = frame[ip_off + 16 : ip_off + 20]
        l4_off = ip_off + header_len
        frag = NOT_FRAGMENT
        frag_key = None
        if frag_field & 0x3FFF:  # more-fragments flag or a non-zero offset
            frag_key = (src, dst, ident, proto)
            frag = LATER_FRAGMENT if frag_field & 0x1FFF else FIRST_FRAGMENT
    elif expected_version == 6:
        if size < ip_off + 40:
            return (MALFORMED, "truncated_ipv6_header")
        if frame[ip_off] >> 4 != 6:
            return (MALFORMED, "bad_ip_version")
        payload_len, proto = _ipv6_fields(frame, ip_off)
        ip_len = 40 + payload_len if payload_len else size - ip_off  # 0: jumbogram or offload
        src = frame[ip_off + 8 : ip_off + 24]
        dst = frame[ip_off + 24 : ip_off + 40]
        l4_off = ip_off + 40
        frag = NOT_FRAGMENT
        frag_key = None
        if proto in _IPV6_EXTENSIONS:
            walked = _walk_ipv6_extensions(frame, l4_off, proto)
            if walked[0] is None:
                return (MALFORMED, walked[1])
            proto, l4_off, frag, ident = walked
            if frag != NOT_FRAGMENT:
                frag_key = (src, dst, ident, proto)
        if proto == 59:
            return (SKIPPED, "ipv6_no_next_header")
    else:
        return (MALFORMED, "bad_ip_version")

    l4_len = ip_len - (l4_off - ip_off)
    if l4_len < 0:
        return (MALFORMED, "bad_ip_length")
    truncated = size - ip_off < ip_len
    if frag == LATER_FRAGMENT:
        if proto not in (TCP, UDP, ICMP, ICMP6):
            return (SKIPPED, f"ip_proto_{proto}")
        return (
            ip_off,
            expected_version,
            proto,
            src,
            dst,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            ip_len,
            vlan,
            frag,
            frag_key,
            truncated,
        )

    if proto == TCP:
        if size < l4_off + 20:
            return (MALFORMED, "truncated_tcp_header")
        sport, dport, seq, ack, offset_flags, window = _tcp_fields(frame, l4_off)
        data_off = (offset_flags >> 12) * 4
        if data_off < 20 or (data_off > l4_len and frag == NOT_FRAGMENT):
            return (MALFORMED, "bad_tcp_data_offset")
        payload = max(l4_len - data_off, 0)
        return (ip_off, expected_version, TCP, src, dst, sport, dport, offset_flags & 0xFF, seq, ack, window,
                payload, ip_len, vlan, frag, frag_key, truncated)  # fmt: skip
    if proto == UDP:
        if size < l4_off + 8:
            return (MALFORMED, "truncated_udp_header")
        sport, dport, udp_len = _udp_fields(frame, l4_off)
        if l4_len < 8:
            return (MALFORMED, "bad_udp_length")
        # the UDP length covers the whole datagram, also when this is only its first fragment
        payload = udp_len - 8 if udp_len >= 8 and (udp_len <= l4_len or frag) else l4_len - 8
        return (ip_off, expected_version, UDP, src, dst, sport, dport, 0, 0, 0, 0, payload, ip_len, vlan, frag,
                frag_key, truncated)  # fmt: skip
    if proto in (ICMP, ICMP6):
        if size < l4_off + 4:
            return (MALFORMED, "truncated_icmp_header")
        icmp_type = frame[l4_off]
        counterpart = (ICMP4_COUNTERPART if proto == ICMP else ICMP6_COUNTERPART).get(icmp_type)
        resp_port = frame[l4_off + 1] if counterpart is None else counterpart
        return (ip_off, expected_version, proto, src, dst, icmp_type, resp_port, 0, 0, 0, 0, max(l4_len - 8, 0),
                ip_len, vlan, frag, frag_key, truncated)  # fmt: skip
    return (SKIPPED, f"ip_proto_{proto}")


def _walk_ipv6_extensions(frame: bytes, offset: int, next_header: int) -> tuple:
    """Follow the extension-header chain. Returns (proto, l4 offset, fragment kind, fragment id) or (None, reason)."""
    size = len(frame)
    frag, ident = NOT_FRAGMENT, 0
    for _ in range(_MAX_IPV6_EXTENSIONS):
        if next_header not in _IPV6_EXTENSIONS:
            return next_header, offset, frag, ident
        if size < offset + 8:
            return None, "truncated_ipv6_extension"
        if next_header == 44:
            frag_field = _u16(frame, offset + 2)[0]
            ident = _u32(frame, offset + 4)[0]
            frag = LATER_FRAGMENT if frag_field & 0xFFF8 else FIRST_FRAGMENT
            if not frag_field & 0xFFF9:  # an "atomic" fragment: offset 0 and no more fragments
                frag = NOT_FRAGMENT
            next_header = frame[offset]
            offset += 8
            if frag == LATER_FRAGMENT:
                return next_header, offset, frag, ident
            continue
        length = (frame[offset + 1] + 2) * 4 if next_header == 51 else (frame[offset + 1] + 1) * 8
        next_header = frame[offset]
        offset += length
    if next_header in _IPV6_EXTENSIONS:
        return None, "too_many_ipv6_extensions"
    return next_header, offset, frag, ident
