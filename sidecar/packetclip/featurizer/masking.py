"""Masking of the fields that identify a capture site rather than the behaviour of a connection.

Owns `mask_packet`: it takes the bytes from the IP header on and returns exactly `snaplen` bytes with the
following zeroed or made relative (the list is the model's contract; bump FEATURIZER_VERSION when it changes):

- IPv4: type of service (DSCP and ECN), the don't-fragment flag, identification, TTL, header checksum, source and
  destination address, option bytes (record-route and timestamp options carry addresses and clocks). The
  reserved flag, more-fragments and the fragment offset stay.
- IPv6: traffic class, flow label, hop limit, source and destination address; hop-by-hop and destination option
  data; routing header addresses; fragment identification; AH SPI, sequence and ICV.
- TCP: checksum; sequence number relative to the sender's initial sequence number (the first SYN is 0);
  acknowledgement number relative to the peer's (zero when the ACK flag is clear or the peer is not yet known);
  SACK block edges relative to the peer's; timestamp option TSval and TSecr.
- UDP, ICMP, ICMPv6: checksum. ICMP redirect gateway. ICMP/ICMPv6 errors: the quoted IP header is masked as above
  and the quoted TCP sequence numbers are zeroed (the quoted connection's initial numbers are unknown here).
  ICMPv6 neighbour discovery and MLD: target, group and option data (addresses and MAC addresses).

Type of service, DF, TTL and the IP identification are what an operating system or a packet tool stamps on
everything it sends, whatever the traffic does: a model that reads them learns "this tool" instead of
"this behaviour" (the lab's t50 sets TOS 0x40 and DF on every packet of every attack it crafts).

It does not parse link layers (its input starts at the IP header) and keeps no state: the tracker passes the
initial sequence numbers. Reads past the end of the input see zero padding, so a truncated capture is masked
exactly like a complete one cut at the same length.
"""

from __future__ import annotations

import struct

_pack_u32 = struct.Struct("!I").pack_into
_u32 = struct.Struct("!I").unpack_from
_u16 = struct.Struct("!H").unpack_from
_u32_pair = struct.Struct("!II").unpack_from
_pack_u32_pair = struct.Struct("!II").pack_into
_ZERO_8 = bytes(8)
_ZERO_10 = bytes(10)

_ICMP4_ERRORS = frozenset((3, 4, 5, 11, 12))
_ICMP6_ERRORS = frozenset((1, 2, 3, 4))
_TCP_ACK_FLAG = 0x10
_NOT_DF = 0xBF  # clears the don't-fragment bit of the IPv4 flags byte


def mask_packet(
    ip_bytes: bytes, snaplen: int, own_isn: int | None = None, peer_isn: int | None = None
) -> bytes:
    """Return `snaplen` bytes: the packet from its IP header on, masked, zero-padded."""
    return bytes(masked_packet(ip_bytes, snaplen, own_isn, peer_isn))


def masked_packet(
    ip_bytes: bytes, snaplen: int, own_isn: int | None = None, peer_isn: int | None = None
) -> bytearray:
    """`mask_packet` as a fresh bytearray, for callers that append it to a buffer of their own."""
    buf = bytearray(ip_bytes[:snaplen])
    count = len(buf)
    if count < snaplen:
        buf += bytes(snaplen - count)
    if count and not _mask_common_ipv4(buf, snaplen, own_isn, peer_isn):
        _mask_ip(buf, 0, own_isn, peer_isn, quoted=False)
    return buf


def reference_masked_packet(
    ip_bytes: bytes, snaplen: int, own_isn: int | None = None, peer_isn: int | None = None
) -> bytes:
    """The general masker alone, without the IPv4 shortcut: the reference that the shortcut is tested against."""
    buf = bytearray(snaplen)
    count = min(len(ip_bytes), snaplen)
    buf[:count] = ip_bytes[:count]
    if count:
        _mask_ip(buf, 0, own_isn, peer_isn, quoted=False)
    return bytes(buf)


def _mask_common_ipv4(buf: bytearray, snaplen: int, own_isn: int | None, peer_isn: int | None) -> bool:
    """Mask the common case (an unfragmented IPv4 TCP or UDP packet whose transport header lies inside the
    snaplen) with straight-line slice writes; returns False, having changed nothing, for anything else.

    Most packets of every capture take this path, so it avoids the general walker's per-field calls and bound
    checks: every offset it writes is inside `buf` by the conditions tested first. Its output is exactly the
    general masker's (a property test compares the two on random and real packets).
    """
    vihl = buf[0]
    header_len = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or header_len < 20 or buf[7] or buf[6] & 0x1F:
        return False  # not IPv4, a bogus header length, or a fragment other than the first
    proto = buf[9]
    if proto == 6:
        if header_len + 20 > snaplen:
            return False
    elif proto != 17 or header_len + 8 > snaplen:
        return False
    buf[1] = buf[4] = buf[5] = buf[8] = 0  # type of service, identification, TTL
    buf[6] &= _NOT_DF
    buf[10:20] = _ZERO_10  # checksum, source, destination
    if header_len > 20:
        buf[20:header_len] = bytes(header_len - 20)  # options (inside the snaplen: tested above)
    l4 = header_len
    if proto == 17:
        buf[l4 + 6] = buf[l4 + 7] = 0  # checksum
        return True
    seq, ack = _u32_pair(buf, l4 + 4)
    # relative to the initial sequence numbers; zero when unknown (and the ack when the ACK flag is clear)
    seq = 0 if own_isn is None else (seq - own_isn) & 0xFFFFFFFF
    acked = peer_isn is not None and buf[l4 + 13] & _TCP_ACK_FLAG
    ack = (ack - peer_isn) & 0xFFFFFFFF if acked else 0
    _pack_u32_pair(buf, l4 + 4, seq, ack)
    buf[l4 + 16] = buf[l4 + 17] = 0  # checksum
    data_off = (buf[l4 + 12] >> 4) * 4
    if data_off > 20:
        _mask_tcp_options(buf, l4 + 20, l4 + data_off, peer_isn)
    return True


def _zero(buf: bytearray, start: int, end: int) -> None:
    end = min(end, len(buf))
    if start < end:
        buf[start:end] = bytes(end - start)


def _byte(buf: bytearray, index: int) -> int:
    return buf[index] if index < len(buf) else 0


def _relative(buf: bytearray, offset: int, base: int | None) -> None:
    """Rewrite the 32-bit number at offset as (value - base) mod 2**32, or zero it when base is unknown."""
    if base is None or offset + 4 > len(buf):
        _zero(buf, offset, offset + 4)
        return
    _pack_u32(buf, offset, (_u32(buf, offset)[0] - base) & 0xFFFFFFFF)


def _mask_ip(buf: bytearray, ip: int, own_isn: int | None, peer_isn: int | None, quoted: bool) -> None:
    version = _byte(buf, ip) >> 4
    if version == 4:
        header_len = (_byte(buf, ip) & 0x0F) * 4
        proto = _byte(buf, ip + 9)
        later_fragment = ip + 8 <= len(buf) and _u16(buf, ip + 6)[0] & 0x1FFF
        _zero(buf, ip + 1, ip + 2)  # type of service
        _zero(buf, ip + 4, ip + 6)  # identification
        if ip + 6 < len(buf):
            buf[ip + 6] &= _NOT_DF
        _zero(buf, ip + 8, ip + 9)  # TTL
        _zero(buf, ip + 10, ip + 20)  # checksum, source, destination
        if header_len < 20:
            return
        _zero(buf, ip + 20, ip + header_len)  # options
        if later_fragment:
            return
        l4 = ip + header_len
    elif version == 6:
        buf[ip] &= 0xF0  # version stays; the traffic class's top nibble goes
        _zero(buf, ip + 1, ip + 4)  # the traffic class's low nibble and the flow label
        _zero(buf, ip + 7, ip + 40)  # hop limit, source, destination
        next_proto, l4 = _mask_ipv6_extensions(buf, ip + 40, _byte(buf, ip + 6))
        if next_proto is None:
            return
        proto = next_proto
    else:
        return
    _mask_transport(buf, l4, proto, own_isn, peer_isn, quoted)


def _mask_ipv6_extensions(buf: bytearray, offset: int, next_header: int) -> tuple[int | None, int]:
    for _ in range(8):
        if next_header in (0, 60):  # option data: router alert, home address (an address), padding
            length = (_byte(buf, offset + 1) + 1) * 8
            _zero(buf, offset + 2, offset + length)
        elif next_header == 43:  # routing: keep type and segments left, drop the addresses
            length = (_byte(buf, offset + 1) + 1) * 8
            _zero(buf, offset + 4, offset + length)
        elif next_header == 44:
            length = 8
            _zero(buf, offset + 4, offset + 8)  # identification
            if offset + 4 <= len(buf) and _u16(buf, offset + 2)[0] & 0xFFF8:
                return None, offset  # a later fragment: no transport header here
        elif next_header == 51:
            length = (_byte(buf, offset + 1) + 2) * 4
            _zero(buf, offset + 4, offset + length)  # SPI, sequence, ICV
        else:
            return next_header, offset
        next_header = _byte(buf, offset)
        offset += length
    return None, offset


def _mask_transport(
    buf: bytearray, l4: int, proto: int, own_isn: int | None, peer_isn: int | None, quoted: bool
) -> None:
    if proto == 6:
        if quoted:  # an ICMP error quotes another connection's numbers: nothing to make them relative to
            _zero(buf, l4 + 4, l4 + 12)
        else:
            _relative(buf, l4 + 4, own_isn)
            _relative(buf, l4 + 8, peer_isn if _byte(buf, l4 + 13) & _TCP_ACK_FLAG else None)
        _zero(buf, l4 + 16, l4 + 18)  # checksum
        _mask_tcp_options(buf, l4 + 20, l4 + (_byte(buf, l4 + 12) >> 4) * 4, None if quoted else peer_isn)
    elif proto == 17:
        _zero(buf, l4 + 6, l4 + 8)
    elif proto == 1:
        _zero(buf, l4 + 2, l4 + 4)
        icmp_type = _byte(buf, l4)
        if icmp_type == 5:
            _zero(buf, l4 + 4, l4 + 8)  # redirect: the gateway address
        if icmp_type in _ICMP4_ERRORS and not quoted:
            _mask_ip(buf, l4 + 8, None, None, quoted=True)
    elif proto == 58:
        _zero(buf, l4 + 2, l4 + 4)
        _mask_icmp6_body(buf, l4, _byte(buf, l4), quoted)


def _mask_tcp_options(buf: bytearray, start: int, end: int, peer_isn: int | None) -> None:
    size = len(buf)
    if end > size:
        end = size
    pos = start
    while pos < end:
        kind = buf[pos]
        if kind == 0:
            return
        if kind == 1:
            pos += 1
            continue
        length = buf[pos + 1] if pos + 1 < size else 0
        if length < 2:
            return
        if kind == 8:  # timestamps: TSval and TSecr are host clocks
            if pos + 10 <= size:
                buf[pos + 2 : pos + 10] = _ZERO_8
            else:
                _zero(buf, pos + 2, pos + 10)
        elif kind == 5:  # SACK edges are sequence numbers in the peer's space
            for edge in range(pos + 2, pos + length - 3, 4):
                _relative(buf, edge, peer_isn)
        pos += length


def _mask_icmp6_body(buf: bytearray, l4: int, icmp_type: int, quoted: bool) -> None:
    if icmp_type in _ICMP6_ERRORS:
        if not quoted:
            _mask_ip(buf, l4 + 8, None, None, quoted=True)
    elif icmp_type in (130, 131, 132):  # MLD: the multicast group
        _zero(buf, l4 + 8, l4 + 24)
    elif icmp_type == 143:  # MLDv2 report: records of groups and sources
        _zero(buf, l4 + 8, len(buf))
    elif 133 <= icmp_type <= 137:
        # neighbour discovery: target/destination addresses, then options (MAC addresses, prefixes)
        options_at = {133: 8, 134: 16, 135: 24, 136: 24, 137: 40}[icmp_type]
        if icmp_type >= 135:
            _zero(buf, l4 + 8, l4 + options_at)
        pos = l4 + options_at
        while pos + 2 <= len(buf):
            length = buf[pos + 1] * 8
            if length == 0:
                break
            _zero(buf, pos + 2, pos + length)
            pos += length
