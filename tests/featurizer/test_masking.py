"""Masking: site-identifying fields never reach `pkt_bytes`, behaviour does.

The property test rewrites a real TCP connection (handshake, request, FIN exchange, with TCP timestamps) the way
another site or another packet tool would have produced it — other addresses, type of service, DF flags, IP IDs,
TTLs, checksums, initial sequence numbers and timestamp clocks — and requires identical features; changing TCP flags or a payload byte must change them.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetclip.featurizer import featurize_frames, read_frames
from packetclip.featurizer.masking import mask_packet

from .captures import TCP_WITH_TIMESTAMPS

IP = 14  # the capture is Ethernet without VLAN tags: the IP header starts here

u32 = st.integers(0, 2**32 - 1)


def _tcp_options(frame: bytes, l4: int) -> list[tuple[int, int]]:
    """(kind, offset) of each TCP option."""
    end, pos, found = l4 + (frame[l4 + 12] >> 4) * 4, l4 + 20, []
    while pos < end and frame[pos] != 0:
        if frame[pos] == 1:
            pos += 1
            continue
        found.append((frame[pos], pos))
        pos += frame[pos + 1]
    return found


def _l4(frame: bytes) -> int:
    return IP + (frame[IP] & 0x0F) * 4


def _rewrite(frame: bytes, orig_addr: bytes, new_addrs: dict, shifts: dict, draw) -> bytes:
    out = bytearray(frame)
    l4 = _l4(frame)
    src, dst = bytes(out[IP + 12 : IP + 16]), bytes(out[IP + 16 : IP + 20])
    sent_by_orig = src == orig_addr
    out[IP + 1] = draw(st.integers(0, 255))  # type of service (DSCP, ECN)
    out[IP + 6] = (out[IP + 6] & 0xBF) | draw(st.sampled_from([0, 0x40]))  # don't fragment
    struct.pack_into("!H", out, IP + 4, draw(st.integers(0, 0xFFFF)))  # IP ID
    out[IP + 8] = draw(st.integers(1, 255))  # TTL
    struct.pack_into("!H", out, IP + 10, draw(st.integers(0, 0xFFFF)))  # header checksum
    out[IP + 12 : IP + 16], out[IP + 16 : IP + 20] = new_addrs[src], new_addrs[dst]
    seq, ack = struct.unpack_from("!II", out, l4 + 4)
    own, peer = (shifts["orig"], shifts["resp"]) if sent_by_orig else (shifts["resp"], shifts["orig"])
    struct.pack_into("!I", out, l4 + 4, (seq + own) & 0xFFFFFFFF)
    if out[l4 + 13] & 0x10:
        struct.pack_into("!I", out, l4 + 8, (ack + peer) & 0xFFFFFFFF)
    struct.pack_into("!H", out, l4 + 16, draw(st.integers(0, 0xFFFF)))  # TCP checksum
    for kind, pos in _tcp_options(frame, l4):
        if kind == 8:
            struct.pack_into("!II", out, pos + 2, draw(u32), draw(u32))
    return bytes(out)


def _real_connection(real_data):
    frames = list(read_frames(real_data / TCP_WITH_TIMESTAMPS))
    assert {lt for _, lt, _ in frames} == {1}
    assert {f[12:14] for _, _, f in frames} == {b"\x08\x00"}  # untagged IPv4 only: IP starts at byte 14
    return [ts for ts, _, _ in frames], [f for _, _, f in frames]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_masked_fields_do_not_change_features(real_data, data):
    ts, frames = _real_connection(real_data)
    assert any(k == 8 for f in frames for k, _ in _tcp_options(f, _l4(f))), "capture lost its TS option"
    orig_addr, resp_addr = frames[0][IP + 12 : IP + 16], frames[0][IP + 16 : IP + 20]
    new_orig, new_resp = (
        data.draw(st.binary(min_size=4, max_size=4)),
        data.draw(st.binary(min_size=4, max_size=4)),
    )
    if new_orig == new_resp:
        new_resp = bytes([new_resp[0] ^ 1]) + new_resp[1:]
    new_addrs = {orig_addr: new_orig, resp_addr: new_resp}
    shifts = {"orig": data.draw(u32), "resp": data.draw(u32)}
    rewritten = [_rewrite(f, orig_addr, new_addrs, shifts, data.draw) for f in frames]
    before = featurize_frames(1, ts, frames)
    after = featurize_frames(1, ts, rewritten)
    assert after.orig_h != before.orig_h or new_orig == orig_addr
    np.testing.assert_array_equal(after.pkt_bytes, before.pkt_bytes)
    assert after.facts() == before.facts()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_unmasked_bytes_change_features(real_data, data):
    ts, frames = _real_connection(real_data)
    with_payload = [i for i, f in enumerate(frames) if len(f) > _l4(f) + (f[_l4(f) + 12] >> 4) * 4]
    assert with_payload
    index = data.draw(st.sampled_from(with_payload))
    frame = bytearray(frames[index])
    l4 = _l4(frame)
    payload_at = l4 + (frame[l4 + 12] >> 4) * 4
    if data.draw(st.booleans()):
        frame[l4 + 13] ^= data.draw(st.sampled_from([0x08, 0x20, 0x40, 0x80]))  # PSH, URG, ECE, CWR
    else:
        position = data.draw(st.integers(payload_at, min(len(frame), IP + 128) - 1))  # inside the snaplen
        frame[position] ^= data.draw(st.integers(1, 255))
    changed = [*frames[:index], bytes(frame), *frames[index + 1 :]]
    before = featurize_frames(1, ts, frames)
    after = featurize_frames(1, ts, changed)
    assert not np.array_equal(after.pkt_bytes, before.pkt_bytes)


def test_sequence_numbers_are_relative_and_addresses_zero(real_data):
    ts, frames = _real_connection(real_data)
    conn = featurize_frames(1, ts, frames)
    syn, syn_ack = conn.pkt_bytes[0], conn.pkt_bytes[1]
    tcp = (syn[0] & 0x0F) * 4
    assert struct.unpack_from("!I", syn, tcp + 4)[0] == 0  # first SYN: relative seq 0
    assert struct.unpack_from("!II", syn_ack, tcp + 4) == (0, 1)  # SYN-ACK: seq 0, acknowledges the SYN
    assert not conn.pkt_bytes[:, 12:20].any()  # addresses
    assert not conn.pkt_bytes[:, [1, 4, 5, 8, 10, 11]].any()  # TOS, IP ID, TTL, checksum
    assert not (conn.pkt_bytes[:, 6] & 0x40).any()  # don't fragment


def test_tool_stamps_are_masked_but_fragmentation_stays():
    """TOS and DF (what t50 stamps on all it sends) go; the reserved flag and MF/offset of a fragment stay."""
    header = bytes([0x45, 0x40, 0, 28, 0x12, 0x34, 0x40, 0, 255, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    udp = bytes([0x13, 0x88, 0, 53, 0, 8, 0xAB, 0xCD])
    masked = mask_packet(header + udp, 64)
    assert masked[1] == 0 and masked[6] == 0
    fragment = bytearray(header + udp)
    fragment[6:8] = bytes([0xA0, 0x00])  # reserved + more fragments, offset 0
    assert mask_packet(bytes(fragment), 64)[6:8] == bytes([0xA0, 0x00])
    v6 = bytes([0x6B, 0x8F, 0xFF, 0xFF, 0, 8, 17, 64]) + bytes(32) + udp
    masked6 = mask_packet(v6, 64)
    assert masked6[:4] == bytes([0x60, 0, 0, 0])  # version kept; traffic class and flow label gone


def test_icmp_error_quote_is_masked():
    """An ICMP port-unreachable quoting a UDP packet keeps no address of either header."""
    quoted = bytes([0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0xAB, 0xCD, 10, 0, 0, 1, 10, 0, 0, 2])
    quoted += struct.pack("!HHHH", 5353, 53, 8, 0xBEEF)
    icmp = bytes([3, 3, 0xFF, 0xFF, 0, 0, 0, 0]) + quoted
    outer = (
        bytes([0x45, 0, 0, 20 + len(icmp), 0x55, 0x66, 0, 0, 60, 1, 1, 2, 10, 0, 0, 2, 10, 0, 0, 1]) + icmp
    )
    masked = mask_packet(outer, 128)
    inner = masked[28:]
    assert inner[4:6] == b"\0\0" and inner[8] == 0 and inner[10:20] == bytes(10)
    assert inner[26:28] == b"\0\0"  # quoted UDP checksum
    assert inner[20:24] == struct.pack("!HH", 5353, 53)  # ports are behaviour, kept
