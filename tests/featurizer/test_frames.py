"""The frame parser on real link layers, and that random bytes never make it raise."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetclip.featurizer import ParseStats, featurize_pcap, read_frames
from packetclip.featurizer.frames import MALFORMED, NON_IP, P_PROTO, P_SPORT, P_VLAN, SKIPPED, parse_frame

from .captures import FUZZED, IPV6_PCAPNG, NULL_LOOPBACK, NULL_LOOPBACK_V6, SLL, SLL2, SNAPLEN_CUT, VLAN

LINK_TYPES = [0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 228, 229, 276, 147]


@pytest.mark.parametrize(
    ("capture", "link_type", "ip_version"),
    [(SLL, 113, 4), (SLL2, 276, 4), (NULL_LOOPBACK, 0, 4), (NULL_LOOPBACK_V6, 0, 6), (IPV6_PCAPNG, 1, 6)],
)
def test_real_link_layers_parse_every_frame(real_data, capture, link_type, ip_version):
    assert {lt for _, lt, _ in read_frames(real_data / capture)} == {link_type}
    stats = ParseStats()
    conns = list(featurize_pcap(real_data / capture, stats=stats))
    assert stats.parsed == stats.frames > 0
    assert conns and {c.ip_version for c in conns} == {ip_version}


def test_vlan_tags_are_stripped_and_recorded(real_data):
    stats = ParseStats()
    conns = list(featurize_pcap(real_data / VLAN, stats=stats))
    assert stats.parsed == stats.frames == 4
    assert conns and all(c.vlan is not None and 0 < c.vlan < 4095 for c in conns)


def test_qinq_outer_tag_wins_and_inner_is_skipped(real_data):
    """A real tagged frame with a second 802.1ad tag pushed in front parses to the same packet."""
    _, link_type, frame = next(iter(read_frames(real_data / VLAN)))
    single = parse_frame(link_type, frame)
    double = frame[:12] + struct.pack("!HH", 0x88A8, 0x0123) + frame[12:]
    parsed = parse_frame(link_type, double)
    assert parsed[P_VLAN] == 0x123
    assert parsed[P_SPORT:P_VLAN] == single[P_SPORT:P_VLAN]


def test_loop_link_type_uses_network_byte_order(real_data):
    _, _, frame = next(iter(read_frames(real_data / NULL_LOOPBACK)))
    family = struct.unpack_from("<I", frame)[0]
    as_loop = struct.pack("!I", family) + frame[4:]
    assert parse_frame(108, as_loop)[P_PROTO] == parse_frame(0, frame)[P_PROTO]


def test_snaplen_cut_frames_are_parsed_and_counted_as_truncated(real_data):
    stats = ParseStats()
    list(featurize_pcap(real_data / SNAPLEN_CUT, stats=stats))
    assert stats.truncated == 5
    assert stats.parsed == stats.frames


def test_damaged_frames_are_counted_by_reason(real_data):
    stats = ParseStats()
    list(featurize_pcap(real_data / FUZZED, stats=stats))
    assert stats.malformed == {"bad_ip_version": 6, "truncated_tcp_header": 1, "bad_ipv4_header_length": 1}
    assert stats.is_balanced()


@settings(max_examples=1500, deadline=None)
@given(link_type=st.sampled_from(LINK_TYPES), frame=st.binary(max_size=120))
def test_random_bytes_never_raise(link_type, frame):
    parsed = parse_frame(link_type, frame)
    if len(parsed) == 2:
        assert parsed[0] in (NON_IP, MALFORMED, SKIPPED)
    else:
        assert len(parsed) == 17


@settings(max_examples=800, deadline=None)
@given(
    version=st.sampled_from([0x45, 0x46, 0x4F, 0x60]),
    proto=st.sampled_from([0, 1, 6, 17, 43, 44, 51, 58, 60]),
    rest=st.binary(min_size=0, max_size=100),
)
def test_plausible_ip_headers_with_random_bodies_never_raise(version, proto, rest):
    """Random bytes rarely look like IP; these start like IPv4/IPv6 so the deeper parsers get exercised."""
    if version == 0x60:
        frame = bytes([0x60, 0, 0, 0, 0, len(rest) & 0xFF, proto, 64]) + bytes(32) + rest
    else:
        frame = bytes([version, 0, 0, 20 + len(rest), 0, 0, 0, 0, 64, proto, 0, 0]) + bytes(8) + rest
    for link_type in (101, 228, 229):
        parsed = parse_frame(link_type, frame)
        assert len(parsed) in (2, 17)
