"""Fuzzing the featurizer's input side: damaged frames and damaged capture files never crash it.

What is proved, on real frames and real files mutated at random (hypothesis) or cut at every byte:
- `parse_frame`, for every supported link type, returns either a well-formed packet tuple (offsets inside the
  frame, addresses of the right size, ports in range, the truncation flag true to the frame) or a
  (category, reason) pair that `ParseStats` counts; it never raises.
- `ConnectionTracker.add` and `featurize_frames` on streams of mutated frames never raise, account for every
  frame exactly once, and every connection they emit is internally consistent (array shapes and dtypes,
  packets kept = min(packets seen, max_packets), facts that add up).
- `read_frames` on a capture cut at any byte, with a damaged header, an absurd record length, a wrong magic or
  gzip garbage either iterates cleanly over the intact prefix with the damage counted and logged with the file
  name and record index, or raises `PcapError` naming the file; never another exception, never a hang, and
  never a read of the absurd length into memory.

The `slow` variants run the same properties with ten times the examples.
"""

from __future__ import annotations

import gzip
import logging
import re
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetclip.featurizer import (
    Connection,
    ConnectionTracker,
    FeaturizerConfig,
    ParseStats,
    PcapError,
    featurize_frames,
    read_frames,
)
from packetclip.featurizer.frames import (
    FIRST_FRAGMENT,
    LATER_FRAGMENT,
    MALFORMED,
    NON_IP,
    NOT_FRAGMENT,
    SKIPPED,
    parse_frame,
)

from .captures import FUZZED, GZIPPED, IPV6_PCAPNG, NULL_LOOPBACK_V6, SF_HTTP, SLL, SLL2, TCP_SCAN, VLAN

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SAMPLE = REPO_ROOT / "samples" / "lab-quick" / "capture.pcap"

# Small real captures chosen for their link layer, so mutations start from every framing the parser knows.
SEED_CAPTURES = [
    SF_HTTP,  # raw IPv4 (228)
    SLL,  # Linux cooked (113)
    SLL2,  # Linux cooked v2 (276)
    NULL_LOOPBACK_V6,  # BSD loopback (0) carrying IPv6
    VLAN,  # Ethernet with 802.1Q tags (1)
    IPV6_PCAPNG,  # Ethernet, IPv6 UDP, from a pcapng
    FUZZED,  # Ethernet frames already damaged in the wild
    "nDPI/tests/cfgs/default/pcap/BGP_Cisco_hdlc_slarp.pcap",  # PPP (9)
    "nDPI/tests/cfgs/default/pcap/BGP_redist.pcap",  # Cisco HDLC (104)
    "nDPI/tests/cfgs/default/pcap/iqiyi.pcap",  # raw IP (101)
]
SUPPORTED_LINK_TYPES = [0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 228, 229, 276]
FRAMES_PER_SEED = 25
CONN_STATES = {"S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"}
SMALL_PCAPNG = "nDPI/tests/cfgs/default/pcap/bt-http.pcapng"  # 14 packets, little-endian, 2.3 kB
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@pytest.fixture(scope="module")
def seed_frames(real_data) -> list[tuple[int, bytes]]:
    """(link type, frame) of the first frames of each seed capture and of the lab sample."""
    frames: list[tuple[int, bytes]] = []
    for path in [real_data / name for name in SEED_CAPTURES] + [LAB_SAMPLE]:
        for index, (_ts, link_type, frame) in enumerate(read_frames(path)):
            if index == FRAMES_PER_SEED:
                break
            frames.append((link_type, frame))
    assert {link_type for link_type, _ in frames} >= {0, 1, 9, 101, 104, 113, 228, 276}
    return frames


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _mutate(frame: bytes, draw) -> bytes:
    """Byte flips (mostly in the headers), then maybe a cut, an insertion or a deletion."""
    out = bytearray(frame)
    for _ in range(draw(st.integers(0, 4))):
        if out:
            reach = min(len(out), 96) if draw(st.booleans()) else len(out)
            out[draw(st.integers(0, reach - 1))] = draw(st.integers(0, 255))
    edit = draw(st.sampled_from(["none", "cut", "insert", "delete"]))
    if edit == "cut":
        out = out[: draw(st.integers(0, len(out)))]
    elif edit == "insert":
        at = draw(st.integers(0, len(out)))
        out[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif edit == "delete" and out:
        at = draw(st.integers(0, len(out) - 1))
        del out[at : at + draw(st.integers(1, 8))]
    return bytes(out)


def _assert_well_formed(parsed: tuple, frame: bytes) -> None:
    """A parse result is a counted (category, reason) pair or a packet tuple that is true to the frame."""
    if len(parsed) == 2:
        category, reason = parsed
        assert category in (NON_IP, MALFORMED, SKIPPED)
        assert isinstance(reason, str) and (reason or category == NON_IP)
        return
    assert len(parsed) == 17
    ip_off, version, proto, src, dst, sport, dport = parsed[:7]
    flags, seq, ack, window, payload, ip_len, vlan, fragment, frag_key, truncated = parsed[7:]
    assert 0 <= ip_off < len(frame)
    assert version in (4, 6) and proto in (1, 6, 17, 58)
    assert len(src) == len(dst) == (4 if version == 4 else 16)
    assert 0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF
    assert 0 <= flags <= 0xFF and 0 <= seq <= 0xFFFFFFFF and 0 <= ack <= 0xFFFFFFFF and 0 <= window <= 0xFFFF
    assert payload >= 0 and ip_len >= 20
    assert vlan is None or 0 <= vlan <= 0x0FFF
    assert fragment in (NOT_FRAGMENT, FIRST_FRAGMENT, LATER_FRAGMENT)
    assert (frag_key is None) == (fragment == NOT_FRAGMENT)
    assert truncated == (len(frame) - ip_off < ip_len)


def _check_mutated_frame(seed_frames, data) -> None:
    link_type, frame = data.draw(st.sampled_from(seed_frames))
    mutated = _mutate(frame, data.draw)
    _assert_well_formed(parse_frame(link_type, mutated), mutated)
    other = data.draw(st.sampled_from(SUPPORTED_LINK_TYPES))  # the right bytes under the wrong framing
    _assert_well_formed(parse_frame(other, mutated), mutated)


@settings(max_examples=600, **SETTINGS)
@given(data=st.data())
def test_mutated_real_frames_parse_or_are_counted(seed_frames, data):
    _check_mutated_frame(seed_frames, data)


@pytest.mark.slow
@settings(max_examples=6000, **SETTINGS)
@given(data=st.data())
def test_mutated_real_frames_parse_or_are_counted_many(seed_frames, data):
    _check_mutated_frame(seed_frames, data)


def _link_header(link_type: int, ethertype: int) -> bytes:
    """A minimal, valid link-layer header for a link type, announcing IPv4 or IPv6."""
    is_v6 = ethertype == 0x86DD
    if link_type == 1:
        return bytes(12) + struct.pack("!H", ethertype)
    if link_type == 113:
        return bytes(14) + struct.pack("!H", ethertype)
    if link_type == 276:
        return struct.pack("!H", ethertype) + bytes(18)
    if link_type in (0, 108):
        family = 10 if is_v6 else 2
        return struct.pack("!I" if link_type == 108 else "<I", family)
    if link_type in (9, 50):
        return b"\xff\x03" + struct.pack("!H", 0x0057 if is_v6 else 0x0021)
    if link_type == 104:
        return b"\x0f\x00" + struct.pack("!H", ethertype)
    return b""  # raw IP links


@settings(max_examples=800, **SETTINGS)
@given(
    link_type=st.sampled_from(SUPPORTED_LINK_TYPES),
    ethertype=st.sampled_from([0x0800, 0x86DD]),
    first=st.sampled_from([0x45, 0x46, 0x4F, 0x41, 0x60, 0x6F]),
    proto=st.sampled_from([0, 1, 6, 17, 43, 44, 51, 58, 59, 60]),
    frag=st.sampled_from([0, 0x2000, 0x0001, 0x3FFF]),
    rest=st.binary(max_size=90),
)
def test_every_link_type_with_plausible_ip_and_random_body(link_type, ethertype, first, proto, frag, rest):
    """Valid framing and an IP-looking header, so the deeper parsers see the random bytes."""
    if first >> 4 == 6:
        ip = bytes([first, 0, 0, 0]) + struct.pack("!HBB", len(rest), proto, 64) + bytes(32)
    else:
        ip = struct.pack("!BBHHHBBH", first, 0, 20 + len(rest), 1, frag, 64, proto, 0) + bytes(8)
    frame = _link_header(link_type, ethertype) + ip + rest
    _assert_well_formed(parse_frame(link_type, frame), frame)


def _assert_consistent(conn: Connection, config: FeaturizerConfig) -> None:
    n = len(conn.pkt_ts)
    assert n == min(conn.n_packets, config.max_packets) and n >= 1
    assert conn.pkt_ts.dtype == np.float64 and conn.pkt_dir.dtype == np.int8
    assert conn.pkt_len.dtype == np.int32 and conn.pkt_bytes.dtype == np.uint8
    assert conn.pkt_dir.shape == conn.pkt_len.shape == (n,)
    assert conn.pkt_bytes.shape == (n, config.snaplen)
    assert set(conn.pkt_dir.tolist()) <= {0, 1}
    assert int(conn.pkt_dir.sum()) <= conn.orig_pkts and n - int(conn.pkt_dir.sum()) <= conn.resp_pkts
    assert conn.n_packets == conn.orig_pkts + conn.resp_pkts
    assert min(conn.orig_bytes, conn.resp_bytes, conn.orig_ip_bytes, conn.resp_ip_bytes) >= 0
    assert conn.conn_state in CONN_STATES and conn.proto in ("tcp", "udp", "icmp")
    assert re.fullmatch(r"C[0-9A-Za-z]{17}", conn.uid) and conn.community_id.startswith("1:")


def _frame_stream(seed_frames, data) -> list[tuple[float, int, bytes]]:
    """Real frames, some mutated, at times that mostly advance but sometimes jump or go back."""
    stream, ts = [], 1_600_000_000.0
    for _ in range(data.draw(st.integers(1, 40))):
        link_type, frame = data.draw(st.sampled_from(seed_frames))
        if data.draw(st.booleans()):
            frame = _mutate(frame, data.draw)
        ts += data.draw(st.sampled_from([0.0, 0.001, 0.5, 7.0, 120.0, 400.0, -3.0]))
        stream.append((ts, link_type, frame))
    return stream


def _check_tracker(seed_frames, data) -> None:
    config = FeaturizerConfig(
        max_packets=data.draw(st.integers(1, 6)),
        snaplen=data.draw(st.sampled_from([20, 40, 64, 128])),
        max_pending_fragments=data.draw(st.integers(1, 8)),
    )
    stream = _frame_stream(seed_frames, data)
    tracker = ConnectionTracker(config)
    connections = []
    for ts, link_type, frame in stream:
        connections += tracker.add(ts, link_type, frame)
    connections += tracker.flush()
    stats = tracker.stats
    assert stats.frames == len(stream) and stats.is_balanced(), stats.as_dict()
    assert sum(c.n_packets for c in connections) == stats.parsed
    for conn in connections:
        _assert_consistent(conn, config)

    chosen = [(ts, frame) for ts, link_type, frame in stream if link_type == stream[0][1]]
    directions = data.draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
    explicit_stats = ParseStats()
    conn = featurize_frames(
        stream[0][1],
        [ts for ts, _ in chosen],
        [frame for _, frame in chosen],
        is_orig=directions if data.draw(st.booleans()) else None,
        config=config,
        stats=explicit_stats,
    )
    assert explicit_stats.frames == len(chosen) and explicit_stats.is_balanced()
    if conn is None:
        assert explicit_stats.parsed == 0
    else:
        assert conn.n_packets == explicit_stats.parsed
        _assert_consistent(conn, config)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_tracker_on_mutated_real_frames_never_crashes_and_counts(seed_frames, data):
    _check_tracker(seed_frames, data)


@pytest.mark.slow
@settings(max_examples=1500, **SETTINGS)
@given(data=st.data())
def test_tracker_on_mutated_real_frames_never_crashes_and_counts_many(seed_frames, data):
    _check_tracker(seed_frames, data)


def _pcap_record_ends(data: bytes) -> list[int]:
    """Byte offsets where each record of a little- or big-endian classic pcap ends."""
    order = "<" if struct.unpack_from("<I", data)[0] == 0xA1B2C3D4 else ">"
    ends, pos = [], 24
    while pos < len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        pos += 16 + caplen
        ends.append(pos)
    assert pos == len(data)
    return ends


def _pcapng_block_ends(data: bytes) -> list[int]:
    ends, pos = [], 0
    while pos < len(data):
        pos += struct.unpack_from("<I", data, pos + 4)[0]
        ends.append(pos)
    assert pos == len(data)
    return ends


def _read(path: Path) -> tuple[list, ParseStats]:
    stats = ParseStats()
    return list(read_frames(path, stats)), stats


def test_pcap_cut_at_every_byte_yields_the_intact_records(real_data, tmp_path):
    data = (real_data / SF_HTTP).read_bytes()
    whole = list(read_frames(real_data / SF_HTTP))
    ends = _pcap_record_ends(data)
    path = tmp_path / "cut.pcap"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < 24:
            with pytest.raises(PcapError, match=re.escape("cut.pcap")):
                _read(path)
            continue
        frames, stats = _read(path)
        intact = sum(1 for end in ends if end <= cut)
        assert frames == whole[:intact], cut
        if cut == 24 or cut in ends:
            assert stats.file_errors == {}, cut
        else:
            assert sum(stats.file_errors.values()) == 1, (cut, stats.file_errors)
        assert set(stats.file_errors) <= {"truncated_record_header", "truncated_record"}


def test_pcapng_cut_at_every_byte_yields_the_intact_packets(real_data, tmp_path):
    data = (real_data / SMALL_PCAPNG).read_bytes()
    assert struct.unpack_from("<I", data, 8)[0] == 0x1A2B3C4D  # little-endian section: _pcapng_block_ends
    whole = list(read_frames(real_data / SMALL_PCAPNG))
    ends = _pcapng_block_ends(data)
    path = tmp_path / "cut.pcapng"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        try:
            frames, stats = _read(path)
        except PcapError as exc:
            assert "cut.pcapng" in str(exc) and cut < 4, (cut, exc)
            continue
        assert frames == whole[: len(frames)], cut  # a prefix of the packets, in order
        if cut in ends:
            assert stats.file_errors == {}, cut
        else:
            assert sum(stats.file_errors.values()) == 1, (cut, stats.file_errors)
    assert len(frames) == len(whole)


def test_gzip_cut_at_sampled_points_yields_a_prefix(real_data, tmp_path):
    data = (real_data / GZIPPED).read_bytes()
    whole = list(read_frames(real_data / GZIPPED))
    path = tmp_path / "cut.pcap.gz"
    for cut in sorted({*range(0, 40), *range(40, len(data), 397), len(data) - 1}):
        path.write_bytes(data[:cut])
        try:
            frames, stats = _read(path)
        except PcapError as exc:
            assert "cut.pcap.gz" in str(exc), exc
            continue
        assert frames == whole[: len(frames)] and len(frames) < len(whole), cut
        assert sum(stats.file_errors.values()) >= 1, cut


def test_damage_inside_a_file_is_logged_with_file_and_record(real_data, tmp_path, caplog):
    data = bytearray((real_data / SF_HTTP).read_bytes())
    ends = _pcap_record_ends(bytes(data))
    struct.pack_into("<I", data, ends[2] + 8, 0xFFFFFFFF)  # record 3 claims a 4 GiB capture length
    path = tmp_path / "absurd.pcap"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="packetclip.featurizer.pcapio"):
        frames, stats = _read(path)
    assert len(frames) == 3 and stats.file_errors == {"corrupt_record_length": 1}
    assert any("absurd.pcap" in r.getMessage() and "record 3" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("caplen", [0xFFFFFFFF, (1 << 24) + 1, 1 << 24, (1 << 24) - 1, 70_000])
def test_absurd_record_lengths_stop_the_file_without_reading_them(real_data, tmp_path, caplen):
    data = bytearray((real_data / SF_HTTP).read_bytes())
    ends = _pcap_record_ends(bytes(data))
    struct.pack_into("<I", data, ends[4] + 8, caplen)  # record 5
    path = tmp_path / "long.pcap"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        frames, stats = _read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 5
    assert stats.file_errors in ({"corrupt_record_length": 1}, {"truncated_record": 1})
    assert peak < 4 << 20  # the claimed length is never allocated: only what the file holds is read


def test_absurd_pcapng_block_lengths_stop_the_file(real_data, tmp_path):
    data = bytearray((real_data / SMALL_PCAPNG).read_bytes())
    ends = _pcapng_block_ends(bytes(data))
    whole = list(read_frames(real_data / SMALL_PCAPNG))
    for block_len in (0, 8, 13, 0xFFFFFFFC, (1 << 24) + 4, len(data) * 2):
        damaged = bytearray(data)
        struct.pack_into("<I", damaged, ends[5] + 4, block_len)
        path = tmp_path / "block.pcapng"
        path.write_bytes(bytes(damaged))
        frames, stats = _read(path)
        assert frames == whole[: len(frames)] and len(frames) < len(whole)
        assert sum(stats.file_errors.values()) == 1, (block_len, stats.file_errors)


def _check_damaged_header(real_data, scratch, data) -> None:
    source = data.draw(st.sampled_from([SF_HTTP, TCP_SCAN, SMALL_PCAPNG, IPV6_PCAPNG]))
    content = bytearray((real_data / source).read_bytes())
    reach = data.draw(st.sampled_from([4, 24, 64]))  # the magic, the file header, the first records
    for _ in range(data.draw(st.integers(1, 6))):
        content[data.draw(st.integers(0, reach - 1))] = data.draw(st.integers(0, 255))
    path = scratch / "header.bin"
    path.write_bytes(bytes(content))
    started = time.monotonic()
    stats = ParseStats()
    try:
        frames = list(read_frames(path, stats))
    except PcapError as exc:
        assert "header.bin" in str(exc)
        return
    finally:
        assert time.monotonic() - started < 5.0  # no hang on a damaged length
    assert sum(len(frame) for _, _, frame in frames) <= len(content)
    for ts, link_type, _frame in frames:
        assert np.isfinite(ts) and 0 <= link_type <= 0xFFFF


@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_damaged_headers_give_pcap_error_or_clean_frames(real_data, scratch, data):
    _check_damaged_header(real_data, scratch, data)


@pytest.mark.slow
@settings(max_examples=3000, **SETTINGS)
@given(data=st.data())
def test_damaged_headers_give_pcap_error_or_clean_frames_many(real_data, scratch, data):
    _check_damaged_header(real_data, scratch, data)


KNOWN_MAGICS = {0xA1B2C3D4, 0xD4C3B2A1, 0xA1B23C4D, 0x4D3CB2A1, 0xA1B2CD34, 0x34CDB2A1, 0x0A0D0D0A}


@settings(max_examples=200, **SETTINGS)
@given(magic=st.integers(0, 0xFFFFFFFF).filter(lambda m: m not in KNOWN_MAGICS), body=st.binary(max_size=64))
def test_wrong_magic_is_a_pcap_error_naming_the_file(scratch, magic, body):
    path = scratch / "magic.pcap"
    content = struct.pack("<I", magic) + body
    if content[:2] == b"\x1f\x8b":
        content = b"\x00" + content[1:]  # the gzip magic would route it to the decompressor instead
    path.write_bytes(content)
    with pytest.raises(PcapError, match=re.escape("magic.pcap")):
        list(read_frames(path))


@settings(max_examples=200, **SETTINGS)
@given(garbage=st.binary(max_size=200), valid_header=st.booleans())
def test_gzip_garbage_gives_pcap_error_or_a_counted_stop(scratch, garbage, valid_header):
    """Bytes behind a gzip magic: a damaged stream header or a damaged deflate body."""
    # a well-formed member header then garbage, or garbage right behind the gzip magic
    content = (gzip.compress(b"")[:10] if valid_header else b"\x1f\x8b") + garbage
    path = scratch / "garbage.pcap.gz"
    path.write_bytes(content)
    stats = ParseStats()
    try:
        frames = list(read_frames(path, stats))
    except PcapError as exc:
        assert "garbage.pcap.gz" in str(exc)
        return
    assert sum(stats.file_errors.values()) >= 1 or frames == []
