"""The sidecar's reorder window (`packetclip.zeek.reorder`): whatever order the Zeek scripts' publication rule lets
requests arrive in, each node's leave in first-packet order; the hold limit, late and forced requests, draining and
nodes kept apart. Times are given explicitly (no clocks, no sleeping)."""

from __future__ import annotations

import random

import pytest

from packetclip.zeek.reorder import ReorderWindow

MAX_WAIT, SLACK = 1.5, 0.5


def zeek_schedule(seed: int, count: int = 400, lag: float = 0.0) -> list[tuple[float, float, float, int]]:
    """Connections as the scripts publish them: (publish time, first-packet time, newest frame time, id), in
    publication order. A connection starts at a random time, its frames span up to max_wait, and it is published
    somewhere between its newest frame (its max_packets-th frame, or its end) and its max_wait timer, plus up to
    `lag` (timers Zeek fires late)."""
    rng = random.Random(seed)
    connections = []
    for ident in range(count):
        first = rng.uniform(0.0, 40.0)
        newest = first + rng.choice([0.0, rng.uniform(0.0, MAX_WAIT)])
        published = rng.uniform(newest, first + MAX_WAIT) + rng.uniform(0.0, lag)
        connections.append((published, first, newest, ident))
    return sorted(connections)


def feed(
    window: ReorderWindow[int], schedule: list[tuple[float, float, float, int]], node: str = "zeek"
) -> list[int]:
    out: list[int] = []
    for published, first, newest, ident in schedule:
        out += window.add(node, first, ident, newest, ident, now=published)  # live: wall clock = network time
    return out + window.drain()


def test_every_publication_order_zeek_allows_leaves_in_first_packet_order() -> None:
    """Five schedules (each a different arrival order of the same 400 connections, with timers up to `slack` late)
    give the same output, sorted by first-packet time, none late or forced; released on the fly, not only at the
    end. Without the window (hold 0: arrival order) the same schedules give five different orders."""
    expected = [ident for _, first, _, ident in sorted(zeek_schedule(0), key=lambda c: c[1])]
    unordered = set()
    for seed in range(5):
        rescheduled = zeek_schedule(0, lag=SLACK if seed else 0.0)
        rng = random.Random(seed)
        rescheduled = sorted((p + rng.uniform(0.0, 0.01), f, n, i) for p, f, n, i in rescheduled)
        window: ReorderWindow[int] = ReorderWindow(MAX_WAIT, SLACK, hold=MAX_WAIT + SLACK)
        out: list[int] = []
        for published, first, newest, ident in rescheduled:
            out += window.add("zeek", first, ident, newest, ident, now=published)
        released_early = len(out)
        out += window.drain()
        assert out == expected
        assert window.late == 0 and window.forced == 0
        assert released_early > 300  # the watermark lets most go while requests still arrive
        unordered.add(tuple(feed(ReorderWindow(MAX_WAIT, SLACK, hold=0.0), rescheduled)))
    assert len(unordered) == 5 and tuple(expected) not in unordered


def test_the_hold_limit_releases_a_request_with_every_one_sorting_before_it() -> None:
    window: ReorderWindow[str] = ReorderWindow(MAX_WAIT, SLACK, hold=2.0)
    assert window.add("zeek", 10.0, 0, 10.1, "b", now=100.0) == []
    assert window.add("zeek", 9.0, 0, 9.0, "a", now=100.5) == []
    assert window.add("zeek", 10.5, 0, 10.5, "c", now=101.0) == []  # watermark 10.5: nothing yet
    assert window.expire(101.9) == []
    assert window.expire(102.0) == ["a", "b"]  # b waited 2 s; a sorts before it
    assert len(window) == 1 and window.expire(102.9) == []
    assert window.expire(103.0) == ["c"]
    assert window.late == 0


def test_a_request_whose_place_has_passed_leaves_at_once_and_is_counted() -> None:
    window: ReorderWindow[str] = ReorderWindow(MAX_WAIT, SLACK, hold=10.0)
    assert window.add("zeek", 10.0, 0, 10.0, "a", now=0.0) == []
    assert window.add("zeek", 13.0, 0, 13.0, "c", now=0.1) == ["a"]  # 10 <= 13 - 1.5 - 0.5
    assert window.add("zeek", 9.0, 0, 9.0, "late", now=0.2) == ["late"]
    assert window.add("zeek", 10.5, 0, 10.5, "b", now=0.3) == ["b"]  # not late: it sorts after a
    assert window.late == 1 and window.drain() == ["c"]


def test_equal_first_packet_times_are_ordered_by_the_tie_break_not_by_arrival() -> None:
    window: ReorderWindow[str] = ReorderWindow(MAX_WAIT, SLACK, hold=10.0)
    window.add("zeek", 5.0, ("10.0.0.2", 80), 5.0, "second", now=0.0)
    window.add("zeek", 5.0, ("10.0.0.1", 80), 5.0, "first", now=0.1)
    assert window.add("zeek", 7.0, ("10.0.0.1", 80), 7.0, "later", now=0.2) == ["first", "second"]


def test_beyond_max_held_the_earliest_of_the_fullest_node_leave_and_are_counted() -> None:
    window: ReorderWindow[str] = ReorderWindow(MAX_WAIT, SLACK, hold=60.0, max_held=3)
    window.add("quiet", 1.0, 0, 1.0, "q1", now=0.0)
    window.add("busy", 3.0, 0, 3.0, "b3", now=0.0)
    window.add("busy", 2.0, 0, 2.0, "b2", now=0.0)
    assert window.add("busy", 2.5, 0, 2.5, "b25", now=0.0) == ["b2"]
    assert window.forced == 1 and len(window) == 3 and window.held_peak == 4
    assert window.drain() == ["q1", "b25", "b3"]


def test_nodes_are_ordered_apart_and_drain_forgets_their_watermarks() -> None:
    """One node's frames say nothing about another's clock; after a drain (a new Zeek run) a capture with earlier
    times is not late."""
    window: ReorderWindow[str] = ReorderWindow(MAX_WAIT, SLACK, hold=60.0)
    window.add("worker-1", 10.0, 0, 10.0, "w1", now=0.0)
    assert window.add("worker-2", 50.0, 0, 50.0, "w2", now=0.0) == []
    assert window.drain() == ["w1", "w2"]
    window.add("worker-1", 1.0, 0, 1.0, "again", now=1.0)
    assert window.late == 0 and window.drain() == ["again"]


def test_settings_must_be_sane() -> None:
    with pytest.raises(ValueError):
        ReorderWindow(MAX_WAIT, -1.0, 1.0)
    with pytest.raises(ValueError):
        ReorderWindow(MAX_WAIT, SLACK, 1.0, max_held=0)
