"""Every real capture of the manifest featurizes without an exception and every frame is accounted for."""

from __future__ import annotations

import csv

from packetclip.featurizer import ParseStats, featurize_pcap, pack


def test_every_manifest_capture_featurizes(real_data):
    with open(real_data / "MANIFEST.tsv", newline="") as manifest:
        files = [row["file"] for row in csv.DictReader(manifest, delimiter="\t")]
    assert len(files) > 700
    total = ParseStats()
    connections = 0
    for name in files:
        stats = ParseStats()
        conns = list(featurize_pcap(real_data / name, stats=stats))
        assert stats.is_balanced(), (name, stats.as_dict())
        assert stats.frames > 0, name
        assert sum(c.n_packets for c in conns) == stats.parsed, name
        for conn in conns:
            assert conn.conn_state in {"S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH",
                                       "SH", "SHR", "OTH"}  # fmt: skip
            assert conn.community_id.startswith("1:") and conn.uid.startswith("C") and len(conn.uid) == 18
        if conns:
            assert pack(conns)["valid"].any(axis=1).all(), name
        connections += len(conns)
        total.merge(stats)
    # sanity of the whole corpus: mostly IP traffic that parses, with a small tail of damage and exotica
    assert total.parsed > 0.95 * total.frames
    assert total.malformed_total < 0.001 * total.frames
    assert connections > 5000
