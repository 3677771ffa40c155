"""First-packet order for the engine: what waits, what leaves, in which order, and the bound on waiting."""

from __future__ import annotations

import random

import pytest

from packetclip.ordering import FirstPacketOrder, endpoint_tie


def _order(max_held: int = 100) -> FirstPacketOrder[tuple[float, str]]:
    return FirstPacketOrder(lambda item: item[0], max_held)


def test_connections_wait_for_every_earlier_open_one_then_leave_sorted():
    order = _order()
    order.push([(5.0, "e"), (2.0, "b"), (4.0, "d")])
    assert order.pop_ready(open_since=1.0) == []  # a connection from t=1 is still open
    assert order.pop_ready(open_since=4.0) == [(2.0, "b"), (4.0, "d")]  # ties leave with the earlier ones
    order.push([(3.0, "c")])
    assert order.pop_ready(open_since=4.5) == [(3.0, "c")]
    assert order.drain() == [(5.0, "e")] and len(order) == 0
    assert order.forced == 0


def test_equal_first_packet_times_keep_arrival_order():
    order = _order()
    order.push([(1.0, "first"), (1.0, "second"), (1.0, "third")])
    assert [name for _, name in order.drain()] == ["first", "second", "third"]


def test_the_bound_forces_the_earliest_out_in_order_and_counts_them():
    order = _order(max_held=3)
    items = [(float(t), str(t)) for t in range(10)]
    random.Random(0).shuffle(items)
    order.push(items)
    assert order.held_peak == 10
    forced = order.pop_ready(open_since=-1.0)
    assert forced == sorted(items)[:7] and order.forced == 7 and len(order) == 3
    assert order.drain() == sorted(items)[7:]


def test_max_held_must_be_positive():
    with pytest.raises(ValueError):
        _order(max_held=0)


def test_open_starts_skip_ended_connections_and_compact():
    from packetclip.ordering import OpenStarts

    ended: set[str] = set()
    starts: OpenStarts[str] = OpenStarts(lambda name: name in ended)
    assert starts.oldest() == float("inf")
    for ts, name in ((3.0, "c"), (1.0, "a"), (2.0, "b")):
        starts.add(ts, name, open_count=3)
    assert starts.oldest() == 1.0
    ended.update({"a", "b"})
    assert starts.oldest() == 3.0
    for i in range(2000):  # many short-lived connections, each ended before the next opens
        starts.add(10.0 + i, f"x{i}", open_count=1)
        ended.add(f"x{i}")
    assert len(starts._heap) <= 2 * 1 + 1024 + 1 and starts.oldest() == 3.0
    starts.clear()
    assert starts.oldest() == float("inf")


def test_with_a_tie_order_equal_times_leave_by_endpoints_whatever_their_arrival():
    """The tie order classify and the Zeek sidecar share (`endpoint_tie`): connections with the same first-packet
    time leave by originator, responder, protocol and uid, whichever order they finished in; one that started at
    the time of a connection still open waits for it, since the open one may sort first."""
    conns = [
        (1.0, "10.0.0.2", 1000, "10.0.0.9", 53, "udp", "Cb"),
        (1.0, "10.0.0.1", 2000, "10.0.0.9", 53, "udp", "Ca"),
        (1.0, "10.0.0.1", 1000, "10.0.0.9", 53, "udp", "Cc"),
        (1.0, "::1", 1000, "::2", 53, "udp", "Cd"),
    ]
    outputs = []
    for seed in range(4):
        shuffled = random.Random(seed).sample(conns, len(conns))
        order = FirstPacketOrder(lambda item: item[0], 100, lambda item: endpoint_tie(*item[1:]))
        order.push(shuffled)
        assert order.pop_ready(open_since=1.0) == []  # an open connection from t=1 may sort before them
        outputs.append([item[6] for item in order.pop_ready(open_since=1.5)])
    assert outputs == [["Cc", "Ca", "Cb", "Cd"]] * 4
