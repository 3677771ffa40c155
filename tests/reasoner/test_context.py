"""The originator history: what the temporal reasoner sees of an originator's past, identical in training and
at run time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from packetclip.context import CONTEXT_FEATURES, PACKET_FACTS, OriginatorHistory


def _facts(count: int, first: float = 0.0) -> np.ndarray:
    """Distinct fact rows per packet, so the tests can see which packet's facts went to which slot."""
    return first + np.arange(count * len(PACKET_FACTS), dtype=np.float32).reshape(count, len(PACKET_FACTS))


def _add(history: OriginatorHistory, key: str, responder: str, port: int, times: list[float], ids: list[int]):
    ids_array = np.asarray(ids)
    history.add(
        key,
        responder,
        port,
        np.asarray(times),
        np.ones(len(times), bool),
        ids_array[:, None],
        np.repeat(ids_array[:, None], len(PACKET_FACTS), axis=1).astype(np.float32),
    )


def test_empty_history_gives_an_all_invalid_context() -> None:
    history = OriginatorHistory(4, slots=5)
    payload, features, valid = history.context("10.0.0.1", 100.0, "10.0.0.2", 80)
    assert payload.shape == (5, 4) and features.shape == (5, len(CONTEXT_FEATURES))
    assert not valid.any() and not payload.any() and not features.any()


def test_context_is_most_recent_first_with_true_features() -> None:
    history = OriginatorHistory(1, np.int64, slots=4)
    _add(history, "a", "10.0.0.9", 22, [10.0, 10.5], [1, 2])  # connection 0
    _add(history, "a", "10.0.0.7", 80, [11.0], [3])  # connection 1
    payload, features, valid = history.context("a", 12.0, "10.0.0.9", 22)
    assert valid.tolist() == [True, True, True, False]
    assert payload[:3, 0].tolist() == [3, 2, 1]  # newest packet first
    age, same_responder, same_port, from_orig, back = features[:3, :5].T
    assert features[:3, 5:].tolist() == [
        [3.0] * len(PACKET_FACTS),
        [2.0] * len(PACKET_FACTS),
        [1.0] * len(PACKET_FACTS),
    ]
    assert np.allclose(age, [math.log1p(1.0), math.log1p(1.5), math.log1p(2.0)])
    assert same_responder.tolist() == [0.0, 1.0, 1.0]
    assert same_port.tolist() == [0.0, 1.0, 1.0]
    assert from_orig.tolist() == [1.0, 1.0, 1.0]
    assert np.allclose(back, np.log1p([0, 1, 1]) / math.log1p(30))


def test_only_the_newest_slots_stay() -> None:
    history = OriginatorHistory(1, np.int64, slots=3)
    for i in range(5):
        _add(history, "a", "r", 1, [float(i)], [i])
    _add(history, "a", "r", 1, [5.0, 6.0, 7.0, 8.0], [5, 6, 7, 8])  # more packets than slots at once
    payload, _, valid = history.context("a", 9.0, "r", 1)
    assert valid.all() and payload[:, 0].tolist() == [8, 7, 6]


def test_the_context_is_always_the_newest_slots_packets_of_everything_added() -> None:
    """Against a plain list of every packet ever added: connections of 0 to 2·slots packets, so the buffer
    refills, slides its rows to the front and takes more packets than it holds, at every offset."""
    rng = np.random.default_rng(7)
    slots = 6
    history = OriginatorHistory(1, np.int64, slots=slots)
    added: dict[str, list[tuple[int, str, int]]] = {"a": [], "b": []}  # (packet id, responder, port)
    next_id = 0
    for _ in range(300):
        key = str(rng.choice(["a", "b"]))
        responder, port = str(rng.choice(["r1", "r2"])), int(rng.integers(1, 3))
        _, features, valid = history.context(key, 1.0e6, responder, port)
        newest = added[key][::-1][:slots]
        count = len(newest)
        assert valid.tolist() == [True] * count + [False] * (slots - count)
        assert features[:count, 5].tolist() == [float(i) for i, _, _ in newest]  # facts carry the packet id
        assert features[:count, 1].tolist() == [float(r == responder) for _, r, _ in newest]
        assert features[:count, 2].tolist() == [float(p == port) for _, _, p in newest]
        packets = int(rng.integers(0, 2 * slots + 1))
        ids = list(range(next_id, next_id + packets))
        next_id += packets
        _add(history, key, responder, port, [float(i) for i in ids], ids)
        added[key].extend((i, responder, port) for i in ids)


def test_originators_do_not_share_history_and_memory_is_bounded() -> None:
    history = OriginatorHistory(1, np.int64, slots=2, max_originators=2)
    _add(history, "a", "r", 1, [1.0], [1])
    _add(history, "b", "r", 1, [2.0], [2])
    assert history.context("b", 3.0, "r", 1)[0][0, 0] == 2
    history.context("a", 3.0, "r", 1)  # touching "a" makes "b" the least recently used
    _add(history, "c", "r", 1, [3.0], [3])
    assert len(history) == 2 and history.evicted == 1
    assert not history.context("b", 4.0, "r", 1)[2].any()
    assert history.context("a", 4.0, "r", 1)[2].any()


def test_packets_after_the_new_connection_get_a_negative_age() -> None:
    history = OriginatorHistory(1, np.int64, slots=2)
    _add(history, "a", "r", 1, [20.0], [1])  # a long connection's packet later than the new one's start
    _, features, _ = history.context("a", 19.0, "r", 1)
    assert features[0, 0] == pytest.approx(-math.log1p(1.0))


def test_mismatched_payload_is_refused() -> None:
    history = OriginatorHistory(2, slots=2)
    with pytest.raises(ValueError, match="do not match"):
        history.add("a", "r", 1, np.asarray([1.0, 2.0]), np.ones(2, bool), np.zeros((3, 2)), _facts(2))
    with pytest.raises(ValueError, match="do not match"):
        history.add("a", "r", 1, np.asarray([1.0, 2.0]), np.ones(2, bool), np.zeros((2, 2)), _facts(1))


def test_step_gives_the_context_before_the_connection_joins() -> None:
    history = OriginatorHistory(1, np.int64, slots=3)
    _add(history, "a", "r", 1, [1.0], [7])
    payload, _, valid = history.step(
        "a", 2.0, "r", 1, np.asarray([2.0]), np.ones(1, bool), np.asarray([[8]]), _facts(1)
    )
    assert valid.tolist() == [True, False, False] and payload[0, 0] == 7  # not itself
    assert history.context("a", 3.0, "r", 1)[0][:2, 0].tolist() == [8, 7]  # then it joined
