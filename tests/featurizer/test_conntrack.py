"""Connection tracking on real captures: Zeek's conn_state/history, ICMP keying, timeouts, bounded memory."""

from __future__ import annotations

import numpy as np

from packetclip.featurizer import (
    ConnectionTracker,
    FeaturizerConfig,
    ParseStats,
    featurize_frames,
    featurize_pcap,
    pack,
    read_frames,
)

from .captures import IPV6_PCAPNG, REJ_AND_RSTR, S0_SYNS, SF_HTTP, TCP_SCAN

NTP_ONE_PACKET = "nDPI/tests/cfgs/default/pcap/NTPv4.pcap"
PING = "nDPI/tests/cfgs/default/pcap/googledns_android10.pcap"


def _states(real_data, capture):
    return [(c.resp_p, c.conn_state, c.history) for c in featurize_pcap(real_data / capture)]


def test_handshake_and_fin_exchange_is_sf(real_data):
    (conn,) = featurize_pcap(real_data / SF_HTTP)
    assert (conn.conn_state, conn.history, conn.service) == ("SF", "ShADaFf", "http")
    assert (conn.orig_pkts, conn.resp_pkts, conn.n_packets) == (5, 3, 8)
    assert conn.orig_h == "192.168.1.100" and conn.resp_p == 80
    assert conn.orig_ip_bytes + conn.resp_ip_bytes == int(conn.pkt_len.sum())
    assert conn.orig_bytes > 0 and conn.duration == conn.last_ts - conn.ts  # this trace has one timestamp


def test_unanswered_syns_are_s0(real_data):
    states = _states(real_data, S0_SYNS)
    assert len(states) == 3 and all(state == "S0" and history == "S" for _, state, history in states)


def test_syn_answered_by_rst_is_rej_and_reset_session_is_rstr(real_data):
    assert sorted(_states(real_data, REJ_AND_RSTR)) == [(6379, "REJ", "Sr"), (6379, "RSTR", "ShAaDdr")]


def test_port_scan_probes(real_data):
    states = dict((port, (state, history)) for port, state, history in _states(real_data, TCP_SCAN))
    assert states[80] == ("RSTO", "ShAR")  # open port: handshake, then the scanner resets
    assert states[445] == ("REJ", "Sr")  # closed port
    assert states[3390] == ("RSTR", "Fr")  # FIN probe answered by RST


def test_echo_request_and_reply_share_one_connection(real_data):
    pings = [c for c in featurize_pcap(real_data / PING) if c.proto == "icmp" and c.orig_p == 8]
    assert pings and all(c.resp_p == 0 for c in pings)
    assert any(c.orig_pkts and c.resp_pkts for c in pings)
    assert all(set(c.pkt_dir.tolist()) <= {0, 1} for c in pings)


def test_icmp_errors_stay_on_their_own_connection(real_data):
    """Port-unreachable errors quoting a UDP flow are one ICMP connection; the UDP flow is not touched."""
    frames = list(read_frames(real_data / IPV6_PCAPNG))
    conns = {c.proto: c for c in featurize_pcap(real_data / IPV6_PCAPNG)}
    assert set(conns) == {"udp", "icmp"}
    icmp = conns["icmp"]
    assert (icmp.orig_p, icmp.resp_p, icmp.conn_state) == (1, 4, "OTH")
    assert conns["udp"].n_packets + icmp.n_packets == len(frames)


def test_udp_inactivity_timeout_splits_connections(real_data):
    (ts, link_type, frame) = next(iter(read_frames(real_data / NTP_ONE_PACKET)))
    for gap, expected in ((59.0, 1), (61.0, 2)):
        tracker = ConnectionTracker()
        ended = tracker.add(ts, link_type, frame) + tracker.add(ts + gap, link_type, frame)
        ended += tracker.flush()
        assert len(ended) == expected
        assert sum(c.orig_pkts for c in ended) == 2


def test_tcp_connection_ends_after_close_delay(real_data):
    frames = list(read_frames(real_data / SF_HTTP))
    tracker = ConnectionTracker()
    ended = [c for ts, lt, f in frames for c in tracker.add(ts, lt, f)]
    assert ended == [] and len(tracker) == 1
    last = frames[-1][0]
    ended = tracker.add(last + 6.0, *frames[0][1:])  # the same SYN, after tcp_close_delay
    assert [c.conn_state for c in ended] == ["SF"]
    assert [c.conn_state for c in tracker.flush()] == ["S0"]


def test_only_the_first_packets_keep_bytes(real_data):
    config = FeaturizerConfig(max_packets=3, snaplen=64)
    (conn,) = featurize_pcap(real_data / SF_HTTP, config)
    assert conn.pkt_bytes.shape == (3, 64) and conn.pkt_ts.shape == conn.pkt_dir.shape == (3,)
    assert conn.n_packets == 8  # counters still cover the whole connection
    assert conn.pkt_dir.tolist() == [1, 0, 1]


def test_featurize_frames_follows_the_given_directions(real_data):
    frames = list(read_frames(real_data / SF_HTTP))
    ts, raw = [f[0] for f in frames], [f[2] for f in frames]
    by_address = featurize_frames(228, ts, raw)
    (tracked,) = featurize_pcap(real_data / SF_HTTP)
    assert by_address.facts() == tracked.facts()
    np.testing.assert_array_equal(by_address.pkt_bytes, tracked.pkt_bytes)
    directions = [bool(d) for d in tracked.pkt_dir]
    reversed_view = featurize_frames(228, ts, raw, is_orig=[not d for d in directions])
    assert reversed_view.orig_h == tracked.resp_h and reversed_view.orig_pkts == tracked.resp_pkts
    stats = ParseStats()
    assert featurize_frames(228, [0.0], [b"\x00\x01"], stats=stats) is None
    assert stats.malformed and stats.is_balanced()


def test_pack_shapes_padding_and_inter_arrival_times(real_data):
    conns = list(featurize_pcap(real_data / REJ_AND_RSTR))
    config = FeaturizerConfig(max_packets=8)
    batch = pack(conns, config)
    assert batch["bytes"].shape == (2, 8, 128) and batch["bytes"].dtype == np.uint8
    assert {k: batch[k].dtype for k in ("direction", "iat", "length", "valid")} == {
        "direction": np.int8,
        "iat": np.float32,
        "length": np.int32,
        "valid": np.bool_,
    }
    for row, conn in enumerate(conns):
        n = min(len(conn.pkt_ts), 8)
        assert batch["valid"][row].tolist() == [True] * n + [False] * (8 - n)
        np.testing.assert_allclose(
            batch["iat"][row, :n], np.diff(conn.pkt_ts[:n], prepend=conn.pkt_ts[0]), atol=1e-6
        )
        np.testing.assert_array_equal(batch["bytes"][row, :n], conn.pkt_bytes[:n])
        assert not batch["bytes"][row, n:].any() and not batch["length"][row, n:].any()
    assert pack([], config)["bytes"].shape == (0, 8, 128)


def test_oldest_open_ts_follows_connections_that_have_not_been_returned(real_data):
    ntp = next(iter(read_frames(real_data / NTP_ONE_PACKET)))
    sf = list(read_frames(real_data / SF_HTTP))
    tracker = ConnectionTracker()
    assert tracker.oldest_open_ts() == float("inf")
    start = sf[0][0]
    tracker.add(start, *ntp[1:])  # a UDP connection opens first ...
    for ts, link_type, frame in sf:  # ... then a TCP one that closes
        tracker.add(ts, link_type, frame)
    assert tracker.oldest_open_ts() == start
    ended = tracker.add(
        start + 61.0, *sf[0][1:]
    )  # the UDP one times out, the TCP one is past its close delay
    assert {c.proto for c in ended} == {"udp", "tcp"}
    assert tracker.oldest_open_ts() == start + 61.0  # only the new SYN's connection is open
    tracker.flush()
    assert tracker.oldest_open_ts() == float("inf")


def test_oldest_open_ts_skips_connections_released_at_max_packets(real_data):
    frames = list(read_frames(real_data / SF_HTTP))
    tracker = ConnectionTracker(FeaturizerConfig(max_packets=3), release_full=True)
    released = [c for ts, lt, f in frames[:3] for c in tracker.add(ts, lt, f)]
    assert len(released) == 1 and len(tracker) == 1  # still followed, but its record is out
    assert tracker.oldest_open_ts() == float("inf")


def _spread(frames, step):
    """The capture's frames, one every `step` seconds (the same packets, slower)."""
    start = frames[0][0]
    return [(start + i * step, link_type, frame) for i, (_, link_type, frame) in enumerate(frames)]


def _track(frames, config, release_full=False):
    tracker = ConnectionTracker(config, release_full=release_full)
    records = [c for ts, lt, f in frames for c in tracker.add(ts, lt, f)]
    return records + tracker.flush()


def test_window_keeps_the_packets_of_the_first_seconds_only(real_data):
    frames = _spread(list(read_frames(real_data / SF_HTTP)), 1.0)  # 8 packets, one a second
    (conn,) = _track(frames, FeaturizerConfig(window=2.5))
    start = frames[0][0]
    assert conn.pkt_ts.tolist() == [start, start + 1.0, start + 2.0]
    assert conn.n_packets == 8  # the counters still follow the whole connection
    (unlimited,) = _track(frames, FeaturizerConfig())
    assert unlimited.pkt_ts.size == 8


def test_release_full_hands_a_connection_out_when_its_window_closes(real_data):
    frames = _spread(list(read_frames(real_data / SF_HTTP)), 1.0)
    tracker = ConnectionTracker(FeaturizerConfig(window=2.5), release_full=True)
    out = [[c.pkt_ts.size for c in tracker.add(ts, lt, f)] for ts, lt, f in frames]
    assert out == [[], [], [], [3], [], [], [], []]  # the packet at 3 s closes the window
    assert tracker.flush() == [] and tracker.released_early == 1  # one record per connection
    assert tracker.oldest_open_ts() == float("inf")


def test_featurize_frames_cuts_by_the_window_as_the_tracker_does(real_data):
    frames = _spread(list(read_frames(real_data / SF_HTTP)), 0.7)
    config = FeaturizerConfig(window=2.0)
    (tracked,) = _track(frames, config)
    explicit = featurize_frames(
        frames[0][1], [ts for ts, _, _ in frames], [f for _, _, f in frames], config=config
    )
    assert explicit is not None and tracked.pkt_ts.size == 3  # 0, 0.7 and 1.4 s; 2.1 s is past the window
    for name in ("pkt_ts", "pkt_dir", "pkt_len", "pkt_bytes"):
        assert np.array_equal(getattr(explicit, name), getattr(tracked, name)), name


def test_a_packet_at_the_end_of_the_window_is_past_it(real_data):
    """Zeek's max_wait timer, due at first packet + max_wait, fires before a packet of that very time is processed
    (its timer manager expires every timer due at or before the packet's time first): that packet is not sent, and
    every path leaves it out as well."""
    frames = _spread(list(read_frames(real_data / SF_HTTP)), 1.0)
    start = frames[0][0]
    config = FeaturizerConfig(window=2.0)
    (conn,) = _track(frames, config)
    assert conn.pkt_ts.tolist() == [start, start + 1.0]  # start + 2.0 is the window's end: left out
    tracker = ConnectionTracker(config, release_full=True)
    out = [[c.pkt_ts.size for c in tracker.add(ts, lt, f)] for ts, lt, f in frames]
    assert out == [[], [], [2], [], [], [], [], []]  # released by the packet at the window's end
    explicit = featurize_frames(
        frames[0][1], [ts for ts, _, _ in frames], [f for _, _, f in frames], config=config
    )
    assert explicit is not None and explicit.pkt_ts.tolist() == conn.pkt_ts.tolist()


def test_window_must_be_a_positive_finite_number_of_seconds():
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        try:
            FeaturizerConfig(window=bad)
        except ValueError as exc:
            assert "window" in str(exc)
        else:
            raise AssertionError(f"window={bad} accepted")
    assert FeaturizerConfig(window=1.5).window == 1.5 and FeaturizerConfig().window is None


def test_release_full_closes_a_window_on_any_later_packet(real_data):
    """As Zeek's max_wait timer fires on network time: a connection that goes quiet within its window is handed
    out when another connection's packet passes the window's end, not at its inactivity timeout."""
    http = _spread(list(read_frames(real_data / SF_HTTP)), 0.1)[:4]  # 0.0-0.3 s, then quiet
    start = http[0][0]
    _, syn_link, syn_frame = next(iter(read_frames(real_data / S0_SYNS)))
    tracker = ConnectionTracker(FeaturizerConfig(window=1.0), release_full=True)
    assert [c for ts, lt, f in http for c in tracker.add(ts, lt, f)] == []
    assert tracker.add(start + 0.9, syn_link, syn_frame) == []  # within the window: nothing yet
    (released,) = tracker.add(start + 1.2, syn_link, syn_frame)
    assert released.resp_p == 80 and released.pkt_ts.size == 4
    assert tracker.oldest_open_ts() == start + 0.9  # only the SYN's connection is still open
    (syn,) = tracker.flush()  # the HTTP connection is never returned twice
    assert syn.uid != released.uid and syn.ts == start + 0.9


def test_above_max_open_the_connection_idle_longest_ends_with_its_record_and_is_counted(real_data):
    """A flood of new connections cannot grow the table past max_open: the one that would time out first (idle
    longest) ends now, its record out with the frame that made room, and every connection still gets one record."""
    import dpkt

    (_, link_type, frame), *_ = list(read_frames(real_data / S0_SYNS))

    def syn(port: int) -> bytes:
        eth = dpkt.ethernet.Ethernet(frame)
        eth.data.data.sport = port
        eth.data.data.sum = 0
        return bytes(eth)

    tracker = ConnectionTracker(FeaturizerConfig(max_open=3))
    out = [c for i in range(6) for c in tracker.add(100.0 + i, link_type, syn(40000 + i))]
    assert len(tracker) == 3 and tracker.evicted == 3
    assert [c.orig_p for c in out] == [40000, 40001, 40002]  # the idlest first, each with what it saw
    assert sorted(c.orig_p for c in tracker.flush()) == [40003, 40004, 40005]
    # a connection with recent traffic is not the idlest: the quiet one goes first
    tracker = ConnectionTracker(FeaturizerConfig(max_open=2))
    tracker.add(200.0, link_type, syn(41000))
    tracker.add(201.0, link_type, syn(41001))
    tracker.add(202.0, link_type, syn(41000))  # 41000 again: its deadline moves past 41001's
    (evicted,) = tracker.add(203.0, link_type, syn(41002))
    assert evicted.orig_p == 41001


def test_max_open_must_be_positive():
    try:
        FeaturizerConfig(max_open=0)
    except ValueError as exc:
        assert "max_open" in str(exc)
    else:
        raise AssertionError("max_open=0 accepted")
