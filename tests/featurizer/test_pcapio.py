"""The capture reader: every container variant yields the same real frames, and damage is contained."""

from __future__ import annotations

import gzip
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetclip.featurizer import ParseStats, PcapError, featurize_pcap, read_frames

from .captures import GZIPPED, IPV6_PCAPNG, SF_HTTP, SLL, write_pcap, write_pcapng


def test_pcap_byte_orders_and_nanoseconds_read_the_same_frames(real_data, tmp_path):
    original = list(read_frames(real_data / SF_HTTP))
    assert len(original) == 8
    link_type = original[0][1]
    for order in ("<", ">"):
        for nanos in (False, True):
            variant = tmp_path / f"v{order == '>'}{nanos}.pcap"
            write_pcap(variant, [(ts, frame) for ts, _, frame in original], link_type, order, nanos)
            again = list(read_frames(variant))
            assert [f for _, _, f in again] == [f for _, _, f in original]
            assert [lt for _, lt, _ in again] == [link_type] * len(original)
            assert [ts for ts, _, _ in again] == pytest.approx([ts for ts, _, _ in original], abs=1e-6)


def test_gzip_is_read_transparently(real_data, tmp_path):
    plain = tmp_path / "plain.pcap"
    with gzip.open(real_data / GZIPPED, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    compressed = list(read_frames(real_data / GZIPPED))
    assert len(compressed) == 500
    assert compressed == list(read_frames(plain))


def test_real_pcapng_reads_with_its_link_type(real_data):
    frames = list(read_frames(real_data / IPV6_PCAPNG))
    assert len(frames) == 20
    assert {lt for _, lt, _ in frames} == {1}
    timestamps = [ts for ts, _, _ in frames]
    assert all(1.5e9 < ts < 2e9 for ts in timestamps)  # plausible epoch seconds: if_tsresol was honoured


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_with_interfaces_of_different_link_types_and_resolutions(real_data, tmp_path, order):
    raw_ip = list(read_frames(real_data / SF_HTTP))  # link type 228: raw IPv4
    cooked = list(read_frames(real_data / SLL))[:10]  # link type 113: Linux cooked
    packets = [(0, ts, f) for ts, _, f in raw_ip] + [(1, ts, f) for ts, _, f in cooked]
    packets.sort(key=lambda p: p[1])
    path = tmp_path / "two-interfaces.pcapng"
    write_pcapng(path, [(228, 6), (113, 9)], packets, order)  # µs on one interface, ns on the other
    frames = list(read_frames(path))
    assert [(lt, f) for _, lt, f in frames] == [({0: 228, 1: 113}[i], f) for i, _, f in packets]
    assert [ts for ts, _, _ in frames] == pytest.approx([ts for _, ts, _ in packets], abs=1e-6)
    stats = ParseStats()
    conns = list(featurize_pcap(path, stats=stats))
    assert stats.parsed == len(packets) and stats.is_balanced()
    assert {c.resp_p for c in conns} == {80, 8554}  # HTTP from one interface, RTSP from the other


def test_unreadable_header_raises_pcap_error_naming_the_file(tmp_path):
    for name, content in (
        ("empty.pcap", b""),
        ("text.pcap", b"hello, this is not a capture"),
        ("short.pcap", b"\xd4\xc3\xb2\xa1\x02"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(PcapError, match=re.escape(name)):
            list(read_frames(path))
    with pytest.raises(PcapError, match=re.escape("missing.pcap")):
        list(read_frames(tmp_path / "missing.pcap"))


def test_truncated_last_record_ends_cleanly_and_is_counted(real_data, tmp_path):
    data = (real_data / SF_HTTP).read_bytes()
    whole = list(read_frames(real_data / SF_HTTP))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    stats = ParseStats()
    frames = list(read_frames(cut, stats))
    assert frames == whole[:-1]
    assert stats.file_errors == {"truncated_record": 1}


def test_truncated_gzip_stream_ends_cleanly_and_is_counted(real_data, tmp_path):
    data = (real_data / GZIPPED).read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) // 2])
    stats = ParseStats()
    frames = list(read_frames(cut, stats))
    assert 0 < len(frames) < 500
    assert sum(stats.file_errors.values()) >= 1


def test_a_decompression_bomb_is_stopped_at_the_ratio_and_counted(real_data, tmp_path, monkeypatch):
    """Identical records inflate ~1,000x; the reader stops at `MAX_GZIP_RATIO` (judged here from 1 MiB on, not
    64 MiB, to keep the file small) and keeps what it read before; a real gzip'd capture reads whole."""
    from packetclip.featurizer import pcapio

    monkeypatch.setattr(pcapio, "_GZIP_RATIO_FROM", 1 << 20)
    (_, link_type, frame), *_ = read_frames(real_data / SF_HTTP)
    plain = tmp_path / "bomb.pcap"
    write_pcap(plain, [(1.0, frame)] * (8 * (1 << 20) // (16 + len(frame))), link_type)
    bomb = tmp_path / "bomb.pcap.gz"
    bomb.write_bytes(gzip.compress(plain.read_bytes(), 9))
    assert plain.stat().st_size > pcapio.MAX_GZIP_RATIO * bomb.stat().st_size
    stats = ParseStats()
    frames = list(read_frames(bomb, stats))
    assert stats.file_errors == {"gzip_ratio_exceeded": 1}
    read = 24 + len(frames) * (16 + len(frame))
    assert 1 << 20 < read <= pcapio.MAX_GZIP_RATIO * bomb.stat().st_size + (1 << 16) < plain.stat().st_size
    assert all(f == (1.0, link_type, frame) for f in frames)

    stats = ParseStats()
    assert len(list(read_frames(real_data / GZIPPED, stats))) == 500
    assert not stats.file_errors


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_captures_never_raise_anything_but_pcap_error(real_data, tmp_path, data):
    """Random truncation and byte flips of a real pcap and pcapng: iteration ends cleanly or PcapError."""
    source = data.draw(st.sampled_from([SF_HTTP, IPV6_PCAPNG]))
    content = bytearray((real_data / source).read_bytes())
    content = content[: data.draw(st.integers(0, len(content)))]
    for _ in range(data.draw(st.integers(0, 6))):
        if content:
            content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(content))
    stats = ParseStats()
    try:
        frames = list(featurize_pcap(path, stats=stats))
    except PcapError as exc:
        assert "damaged.bin" in str(exc)
        return
    assert isinstance(frames, list)
    assert stats.is_balanced()
