"""The responder's side of the context: what a victim received lately, identical in training and at run time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from packetclip.context import (
    RESPONDER_CONNECTIONS,
    RESPONDER_FEATURES,
    ResponderActivity,
    receiving_side,
    responder_summary,
)

NAMES = {name: i for i, name in enumerate(RESPONDER_FEATURES)}


def _feature(row: np.ndarray, name: str) -> float:
    return float(row[NAMES[name]])


def test_a_responder_never_seen_gives_zero_features() -> None:
    activity = ResponderActivity()
    row = activity.features("s|10.0.0.5", 1.0, "10.0.0.1", 80, "tcp")
    assert row.shape == (len(RESPONDER_FEATURES),) and not row.any()


def test_a_spoofed_flood_reads_as_many_sources_unanswered() -> None:
    activity = ResponderActivity(window=10.0)
    for i in range(50):  # 50 one-packet SYNs from 50 sources within 0.5 s, none answered
        activity.add("s|v", 100.0 + i * 0.01, f"203.0.113.{i}", 80, "tcp", answered=False, packets=1)
    row = activity.step("s|v", 100.6, "203.0.113.200", 80, "tcp", answered=False, packets=1)
    assert _feature(row, "victim_log_connections") == pytest.approx(
        math.log1p(50) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(row, "victim_log_sources") == pytest.approx(
        math.log1p(50) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(row, "victim_source_share") == 1.0
    assert _feature(row, "victim_unanswered") == 1.0
    assert _feature(row, "victim_single_packet") == 1.0
    assert _feature(row, "victim_same_port") == 1.0
    assert _feature(row, "victim_same_protocol") == 1.0
    assert _feature(row, "victim_same_originator") == 0.0
    # not capped: the rate is over the whole window (50 connections / 10 s)
    assert _feature(row, "victim_log_rate") == pytest.approx(math.log1p(5.0) / math.log1p(100_000.0))
    # the judged connection joined after its features were taken
    again = activity.features("s|v", 100.7, "203.0.113.200", 80, "tcp")
    assert _feature(again, "victim_log_connections") == pytest.approx(
        math.log1p(51) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(again, "victim_same_originator") == pytest.approx(1 / 51)


def test_one_scanner_over_many_ports_reads_as_one_source() -> None:
    activity = ResponderActivity()
    for port in range(1, 21):
        activity.add(
            "s|v", 5.0 + port * 0.001, "198.51.100.7", port, "tcp", answered=port % 2 == 0, packets=2
        )
    row = activity.features("s|v", 5.1, "198.51.100.7", 443, "tcp")
    assert _feature(row, "victim_source_share") == pytest.approx(1 / 20)
    assert _feature(row, "victim_same_originator") == 1.0
    assert _feature(row, "victim_same_port") == 0.0
    assert _feature(row, "victim_log_ports") == pytest.approx(
        math.log1p(20) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(row, "victim_unanswered") == 0.5
    assert _feature(row, "victim_single_packet") == 0.0
    assert _feature(row, "victim_same_protocol") == 1.0
    assert _feature(activity.features("s|v", 5.1, "198.51.100.7", 443, "udp"), "victim_same_protocol") == 0.0


def test_connections_leave_the_window_with_time_and_counts_follow() -> None:
    activity = ResponderActivity(window=2.0)
    activity.add("k", 0.0, "a", 1, "udp", answered=False, packets=1)
    activity.add("k", 1.0, "b", 2, "udp", answered=True, packets=3)
    row = activity.features("k", 2.5, "c", 2, "udp")  # the one at 0.0 is older than 2 s
    assert _feature(row, "victim_log_connections") == pytest.approx(
        math.log1p(1) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(row, "victim_unanswered") == 0.0 and _feature(row, "victim_single_packet") == 0.0
    assert _feature(row, "victim_same_port") == 1.0
    assert not activity.features("k", 10.0, "c", 2, "udp").any()  # all gone


def test_a_full_window_measures_the_rate_from_how_fast_it_filled() -> None:
    activity = ResponderActivity(window=10.0, max_connections=8)
    for i in range(20):  # 1,000 connections per second; only the newest 8 stay
        activity.add("k", i * 0.001, f"10.1.0.{i}", 53, "udp", answered=False, packets=1)
    row = activity.features("k", 0.020, "x", 53, "udp")
    assert _feature(row, "victim_log_connections") == pytest.approx(1.0)  # log1p(8) / log1p(8)
    expected_rate = 8 / (0.020 - 0.012)
    assert _feature(row, "victim_log_rate") == pytest.approx(
        math.log1p(expected_rate) / math.log1p(100_000.0), rel=1e-4
    )
    assert _feature(row, "victim_log_sources") == pytest.approx(1.0)


def test_running_counts_equal_a_recount_of_the_window() -> None:
    """Random traffic to a few responders: every feature row equals one computed from scratch over the window."""
    rng = np.random.default_rng(3)
    activity = ResponderActivity(window=1.0, max_connections=16)
    seen: dict[str, list[tuple[float, str, int, str, bool, int]]] = {}
    ts = 0.0
    for _ in range(600):
        ts += float(rng.exponential(0.02))
        key = f"r{rng.integers(3)}"
        conn = (
            ts,
            f"o{rng.integers(6)}",
            int(rng.integers(4)),
            ["tcp", "udp"][rng.integers(2)],
            bool(rng.integers(2)),
            int(rng.integers(1, 4)),
        )
        window = [r for r in seen.get(key, []) if r[0] >= ts - 1.0][-16:]
        row = activity.step(key, *conn)
        if window:
            count = len(window)
            assert _feature(row, "victim_log_connections") == pytest.approx(
                math.log1p(count) / math.log1p(16)
            )
            assert _feature(row, "victim_source_share") == pytest.approx(len({r[1] for r in window}) / count)
            assert _feature(row, "victim_unanswered") == pytest.approx(sum(not r[4] for r in window) / count)
            assert _feature(row, "victim_single_packet") == pytest.approx(
                sum(r[5] == 1 for r in window) / count
            )
            assert _feature(row, "victim_same_port") == pytest.approx(
                sum(r[2] == conn[2] for r in window) / count
            )
            assert _feature(row, "victim_same_originator") == pytest.approx(
                sum(r[1] == conn[1] for r in window) / count
            )
        else:
            assert not row.any()
        seen.setdefault(key, []).append(conn)


def test_shards_scale_counts_and_rates_not_shares() -> None:
    one, four = ResponderActivity(), ResponderActivity(shards=4)
    for activity in (one, four):
        for i in range(10):
            activity.add("k", float(i) * 0.1, f"s{i}", 80, "tcp", answered=False, packets=1)
    a, b = one.features("k", 1.0, "x", 80, "tcp"), four.features("k", 1.0, "x", 80, "tcp")
    assert _feature(b, "victim_log_connections") == pytest.approx(
        math.log1p(40) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(b, "victim_log_sources") == pytest.approx(
        math.log1p(40) / math.log1p(RESPONDER_CONNECTIONS)
    )
    assert _feature(b, "victim_log_rate") > _feature(a, "victim_log_rate")
    for name in ("victim_source_share", "victim_unanswered", "victim_same_port"):
        assert _feature(a, name) == _feature(b, name)


def test_memory_is_bounded_by_responders_and_connections() -> None:
    activity = ResponderActivity(max_connections=4, max_responders=3)
    for i in range(10):
        for j in range(10):
            activity.add(f"r{i}", float(j) * 0.001, "o", j, "tcp", answered=True, packets=2)
    assert len(activity) == 3 and activity.evicted == 7
    assert all(len(inbound.records) <= 4 for inbound in activity._inbound.values())
    assert not activity.features("r0", 0.01, "o", 1, "tcp").any()  # forgotten first


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ResponderActivity(window=0)
    with pytest.raises(ValueError):
        ResponderActivity(shards=0)


def test_a_summary_gives_back_the_plain_numbers() -> None:
    for shards in (1, 3):
        activity = ResponderActivity(window=5.0, max_connections=64, shards=shards)
        for i in range(40):
            activity.add("k", i * 0.01, f"s{i % 25}", 80, "tcp", answered=i % 4 == 0, packets=1)
        summary = responder_summary(activity.features("k", 0.5, "x", 80, "tcp"), 5.0, 64, shards)
        assert (summary.connections, summary.sources) == (40, 25)
        assert summary.rate == pytest.approx(40 / 5.0, rel=1e-4)
        assert summary.unanswered_share == pytest.approx(0.75)
        assert summary.complete and summary.window_seconds == 5.0
    full = ResponderActivity(window=5.0, max_connections=8)
    for i in range(20):
        full.add("k", i * 0.001, f"s{i}", 80, "tcp", answered=False, packets=1)
    summary = responder_summary(full.features("k", 0.02, "x", 80, "tcp"), 5.0, 8)
    assert summary.connections == 8 and not summary.complete


def test_the_receiving_host_is_where_the_first_packet_went() -> None:
    # a connection as tracked: the originator sent first, the responder receives
    assert receiving_side(True, "10.0.0.1", 40000, "10.0.0.9", 80) == ("10.0.0.9", 80, "10.0.0.1")
    # a reflector's answer from udp/161, turned around by port rules: the victim (originator) receives
    assert receiving_side(False, "10.10.10.10", 51234, "198.51.100.3", 161) == (
        "10.10.10.10",
        51234,
        "198.51.100.3",
    )
