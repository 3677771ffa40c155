"""The featurizer's output on real captures is pinned: a speed-up must not change one bit of it.

Each chosen capture is featurized and every field of every `Connection` (identity, facts, and the packet
arrays' dtype, shape and bytes), in the order the connections come out, plus the `ParseStats` counters and
the `pack()` model input, is folded into one SHA-256. The expected digests were computed from the
featurizer before its hot paths were optimised (and recomputed at the version-2 masking change); a digest that moves means the model would see different
input, which needs a FEATURIZER_VERSION bump and new digests, never a silent change.

The hot-path shortcuts are also checked against the general code they stand in for: the IPv4 TCP/UDP masking
shortcut must write exactly what the general field walker writes, on mutated real packets and random bytes.

The captures cover a port scan (one packet per connection), damaged frames with fragments, a gzip'd capture,
UDP, ICMP and TCP in one capture, and the lab sample committed with the project; on the extended corpus also a
large pcap named .pcapng and a capture of few long SMB connections, too large to commit with the tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetclip.featurizer import Connection, FeaturizerConfig, ParseStats, featurize_pcap, pack, read_frames
from packetclip.featurizer.frames import parse_frame
from packetclip.featurizer.masking import mask_packet, masked_packet, reference_masked_packet
from tests.real_captures import EXTENDED, manifest_files

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SAMPLE = REPO_ROOT / "samples" / "lab-quick" / "capture.pcap"

# Real captures (relative to the real-data folder) -> SHA-256 of the canonical serialisation below.
EXPECTED_REAL = {
    "nDPI/tests/cfgs/default/pcap/synscan.pcap": "9105b0ca696cd4912837e36b19c54c8ba14d9badfd9a995973a1399e387b6739",
    "nDPI/tests/cfgs/default/pcap/opera-vpn.pcapng": "5e806c2a917ce2b18bbd9f05076d7dca5a77e22289659fb75744f1c6d86ee578",
    "nDPI/tests/cfgs/default/pcap/fuzz-2006-06-26-2594.pcap": "e3228afe07c9405cf7c5c3993a6b8dc1ceac38fc678c47363c7e137d03e26c92",
    "zeek/testing/btest/Traces/smb/smb_many_open_files_500.pcap.gz": "5ab62698431a07d0ec40d54356290ee88b01ce66d6ed051c99e9c75b69be5680",
    "nDPI/tests/cfgs/default/pcap/nintendo.pcap": "5af9c6f4927089e9a458a18981356f60d353b0e88eb62ce81e3c681091436c40",
    "zeek/testing/btest/Traces/smb/smb3_multichannel.pcap": "1d08070cd9d87878df41ff1973189e8aed6363f4b5ef007b6120d23750071847",
}
# Pinned on the extended corpus only: 1.4 and 2.6 MB, beyond the few MB committed with the tests.
EXTENDED_ONLY = {
    "nDPI/tests/cfgs/default/pcap/opera-vpn.pcapng",
    "zeek/testing/btest/Traces/smb/smb3_multichannel.pcap",
}
PINNED = sorted(name for name in EXPECTED_REAL if EXTENDED or name not in EXTENDED_ONLY)
EXPECTED_LAB_SAMPLE = "00a546664ac92faae1158e1ca0be9e0ca4c72261e3dc9bf5ddf98bd5f1d6a52f"
# Every capture of the manifest in manifest order (connections only, no pack): the exhaustive guard (about a
# second), one digest per corpus, keyed by the first 16 hex digits of the sha256 of its MANIFEST.tsv. A change to a
# corpus moves its key and its digest; recompute both then from a known-good featurizer.
EXPECTED_CORPUS = {
    # tests/data/real, the committed set (digest taken with the featurizer that gives every pin above)
    "68b3d3d1d3b9b01a": "7e1ae87432148719bed8165d32c186fb8aa0e0d194bffdcabe376b26bb6eaf6b",
    # ../shared/data/real, the extended corpus (last: the four public DDoS captures joined the manifest, featurizer
    # unchanged — the 768 captures before them still give 3e2033ab…)
    "ea5562aaa158159e": "d964639511fadf84b838f49cd7d3cdc5ed41e3e16d960979d22441b59ded3e78",
}


def _update_connection(digest: hashlib._Hash, conn: Connection) -> None:
    for field in dataclasses.fields(conn):
        value = getattr(conn, field.name)
        if isinstance(value, np.ndarray):
            digest.update(f"{field.name}:{value.dtype.str}:{value.shape}:".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(f"{field.name}={type(value).__name__}:{value!r};".encode())


def _update_stats(digest: hashlib._Hash, stats: ParseStats) -> None:
    digest.update(json.dumps(stats.as_dict(), sort_keys=True).encode())


def capture_digest(path: Path, with_pack: bool = True) -> str:
    """SHA-256 over every connection of a capture (in output order), its counters and its packed input."""
    digest = hashlib.sha256()
    stats = ParseStats()
    connections = list(featurize_pcap(path, stats=stats))
    digest.update(f"connections={len(connections)};".encode())
    for conn in connections:
        _update_connection(digest, conn)
    _update_stats(digest, stats)
    if with_pack and connections:
        packed = pack(connections, FeaturizerConfig())
        for name in sorted(packed):
            array = packed[name]
            digest.update(f"{name}:{array.dtype.str}:{array.shape}:".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def corpus_digest(real_data: Path) -> str:
    """One SHA-256 over the per-capture digests of every manifest file, in manifest order."""
    digest = hashlib.sha256()
    for name in manifest_files(real_data):
        digest.update(f"{name}:{capture_digest(real_data / name, with_pack=False)};".encode())
    return digest.hexdigest()


def manifest_key(real_data: Path) -> str:
    """Which corpus this is: the first 16 hex digits of the sha256 of its MANIFEST.tsv."""
    return hashlib.sha256((real_data / "MANIFEST.tsv").read_bytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", PINNED)
def test_real_capture_output_is_unchanged(real_data, name):
    assert capture_digest(real_data / name) == EXPECTED_REAL[name]


def test_lab_sample_output_is_unchanged():
    assert capture_digest(LAB_SAMPLE) == EXPECTED_LAB_SAMPLE


def test_digest_sees_a_one_bit_change(real_data):
    """The serialisation is sensitive: flipping one masked byte or one fact changes the digest."""
    path = real_data / "nDPI/tests/cfgs/default/pcap/synscan.pcap"
    connections = list(featurize_pcap(path))
    reference = hashlib.sha256()
    changed_bytes = hashlib.sha256()
    changed_fact = hashlib.sha256()
    for index, conn in enumerate(connections):
        _update_connection(reference, conn)
        if index == 0:
            flipped = conn.pkt_bytes.copy()
            flipped[0, -1] ^= 1
            _update_connection(changed_bytes, dataclasses.replace(conn, pkt_bytes=flipped))
            _update_connection(changed_fact, dataclasses.replace(conn, orig_ip_bytes=conn.orig_ip_bytes + 1))
        else:
            _update_connection(changed_bytes, conn)
            _update_connection(changed_fact, conn)
    assert len({reference.hexdigest(), changed_bytes.hexdigest(), changed_fact.hexdigest()}) == 3


def test_whole_corpus_output_is_unchanged(real_data):
    key = manifest_key(real_data)
    assert key in EXPECTED_CORPUS, f"no digest pinned for the corpus at {real_data} (manifest {key})"
    assert corpus_digest(real_data) == EXPECTED_CORPUS[key]


def _real_ip_packets(real_data: Path) -> list[bytes]:
    """The bytes from the IP header on of real packets: IPv4 and IPv6, TCP with options, UDP, ICMP, damage."""
    packets = []
    for path in (
        LAB_SAMPLE,
        real_data / "nDPI/tests/cfgs/default/pcap/fuzz-2006-06-26-2594.pcap",
        real_data / "nDPI/tests/cfgs/default/pcap/nintendo.pcap",
    ):
        for _ts, link_type, frame in read_frames(path):
            parsed = parse_frame(link_type, frame)
            if len(parsed) == 17:
                packets.append(frame[parsed[0] :])
    return packets


@pytest.fixture(scope="module")
def ip_packets(real_data) -> list[bytes]:
    return _real_ip_packets(real_data)


isn = st.none() | st.integers(0, 2**32 - 1)


@settings(max_examples=1500, deadline=None)
@given(data=st.data(), own_isn=isn, peer_isn=isn, snaplen=st.sampled_from([20, 28, 40, 54, 64, 128, 256]))
def test_fast_masking_equals_the_general_masker(ip_packets, data, own_isn, peer_isn, snaplen):
    """The IPv4 TCP/UDP shortcut of `mask_packet` writes exactly what the general field walker writes, on real
    packets with random header bytes changed (versions, header lengths, fragment bits, TCP offsets, options)."""
    packet = bytearray(data.draw(st.sampled_from(ip_packets)))
    for _ in range(data.draw(st.integers(0, 3))):
        packet[data.draw(st.integers(0, min(len(packet), 80) - 1))] = data.draw(st.integers(0, 255))
    packet = bytes(packet[: data.draw(st.integers(0, len(packet)))])
    expected = reference_masked_packet(packet, snaplen, own_isn, peer_isn)
    assert mask_packet(packet, snaplen, own_isn, peer_isn) == expected
    assert bytes(masked_packet(packet, snaplen, own_isn, peer_isn)) == expected


@settings(max_examples=500, deadline=None)
@given(packet=st.binary(max_size=160), own_isn=isn, peer_isn=isn, snaplen=st.sampled_from([20, 40, 128]))
def test_fast_masking_equals_the_general_masker_on_random_bytes(packet, own_isn, peer_isn, snaplen):
    assert mask_packet(packet, snaplen, own_isn, peer_isn) == reference_masked_packet(
        packet, snaplen, own_isn, peer_isn
    )
