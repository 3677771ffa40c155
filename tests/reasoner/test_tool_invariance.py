"""Tool-invariance augmentation rewrites exactly the tool-identifying fields, consistently per connection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from packetclip.context import RESPONDER_CONNECTIONS, RESPONDER_FEATURES, ResponderActivity, responder_summary
from packetclip_training.augment.tool_invariance import (
    jitter_responder_rates,
    randomise_tool_fields,
    redraw_syn_payloads,
    vary_tool_fields,
)
from packetclip_training.dataset.store import load_split

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


def _transport(packet: np.ndarray) -> tuple[int, int] | None:
    """(protocol, transport header offset) of an unfragmented IPv4 or extension-free IPv6 TCP/UDP packet."""
    version = packet[0] >> 4
    if version == 4 and ((int(packet[6]) & 0x1F) << 8 | int(packet[7])) == 0 and packet[9] in (6, 17):
        return int(packet[9]), int(packet[0] & 0x0F) * 4
    if version == 6 and packet[6] in (6, 17):
        return int(packet[6]), 40
    return None


def _u16(packet: np.ndarray, at: int) -> int:
    return int(packet[at]) << 8 | int(packet[at + 1])


def test_real_connections_get_one_new_port_and_window_and_nothing_else_changes() -> None:
    arrays = load_split(SAMPLE, "train", columns=())
    before, direction, valid = arrays["bytes"], arrays["direction"], arrays["valid"]
    after = randomise_tool_fields(before, direction, valid, np.random.default_rng(0), share=1.0)
    assert after is not before and after.shape == before.shape
    rewritten_ports = kept_service_ports = 0
    for row in range(len(before)):
        ports, windows = set(), set()
        for col in np.flatnonzero(valid[row]):
            old, new = before[row, col], after[row, col]
            found = _transport(old)
            changed = set(np.flatnonzero(old != new).tolist())
            if found is None:
                assert not changed  # not a packet whose fields sit at a known place: untouched
                continue
            protocol, header = found
            out = direction[row, col] == 1
            port_at = header if out else header + 2
            allowed = {port_at, port_at + 1}
            old_port = _u16(old, port_at)
            if old_port >= 1024:
                ports.add(_u16(new, port_at))
                rewritten_ports += old_port != _u16(new, port_at)
            else:
                assert _u16(new, port_at) == old_port  # a service port (53, 123 ...) is behaviour, not a tool
                kept_service_ports += 1
            if protocol == 6 and out and header + 16 <= len(old):
                allowed |= {header + 14, header + 15}
                windows.add(_u16(new, header + 14))
            assert changed <= allowed, (row, col, changed - allowed)
        assert len(ports) <= 1 and len(windows) <= 1  # one new port and one window per connection
    assert rewritten_ports > 1000 and kept_service_ports > 0


def test_share_zero_changes_nothing_and_the_draw_is_seeded() -> None:
    arrays = load_split(SAMPLE, "val", columns=())
    args = (arrays["bytes"], arrays["direction"], arrays["valid"])
    assert np.array_equal(randomise_tool_fields(*args, np.random.default_rng(0), share=0.0), arrays["bytes"])
    half = randomise_tool_fields(*args, np.random.default_rng(5), share=0.5)
    assert np.array_equal(half, randomise_tool_fields(*args, np.random.default_rng(5), share=0.5))
    touched = (half != arrays["bytes"]).reshape(len(half), -1).any(axis=1).mean()
    assert 0.2 < touched < 0.6  # about half the connections (some have no field to rewrite)


def _originator_syn(packet: np.ndarray, length: int) -> tuple[int, int] | None:
    """(offset of the data after the TCP header, data length) of a SYN without ACK, else None."""
    found = _transport(packet)
    if found is None or found[0] != 6:
        return None
    header = found[1]
    if int(packet[header + 13]) & 0x12 != 0x02:
        return None
    data_at = header + (int(packet[header + 12]) >> 4) * 4
    return data_at, length - data_at


def test_syn_data_is_redrawn_per_connection_with_lengths_that_agree() -> None:
    arrays = load_split(SAMPLE, "train", columns=())
    before, length, direction, valid = arrays["bytes"], arrays["length"], arrays["direction"], arrays["valid"]
    after, new_length = redraw_syn_payloads(
        before, length, direction, valid, np.random.default_rng(0), share=1.0
    )
    assert after.shape == before.shape and new_length.shape == length.shape
    sizes, with_data, without = [], 0, 0
    for row in range(len(before)):
        drawn = set()
        for col in np.flatnonzero(valid[row]):
            old, new = before[row, col], after[row, col]
            syn = _originator_syn(old, int(length[row, col])) if direction[row, col] == 1 else None
            if syn is None:  # every other packet: bytes and length as they were
                assert np.array_equal(old, new) and new_length[row, col] == length[row, col]
                continue
            data_at, _ = syn
            size = int(new_length[row, col]) - data_at
            drawn.add(size)
            # the header stays but for the IP length field, which says the new length
            assert np.array_equal(np.delete(old[:data_at], [2, 3]), np.delete(new[:data_at], [2, 3]))
            assert _u16(new, 2) == new_length[row, col]
            assert not new[data_at + size :].any()  # nothing after the new data
        assert len(drawn) <= 1  # one size per connection
        sizes += list(drawn)
        with_data += bool(drawn) and max(drawn) > 0
        without += drawn == {0}
    sizes_array = np.array(sizes)
    assert len(sizes) > 100 and sizes_array.min() >= 0 and sizes_array.max() <= 1024
    assert with_data > 30 and without > 30  # about half each
    assert len(set(sizes) - {0}) > 20  # many sizes, not one


def test_syn_data_share_zero_changes_nothing_and_vary_applies_both() -> None:
    arrays = load_split(SAMPLE, "val", columns=())
    args = (arrays["bytes"], arrays["length"], arrays["direction"], arrays["valid"])
    same_bytes, same_length = redraw_syn_payloads(*args, np.random.default_rng(0), share=0.0)
    assert np.array_equal(same_bytes, arrays["bytes"]) and np.array_equal(same_length, arrays["length"])
    varied = vary_tool_fields(arrays, np.random.default_rng(4), 0.5)
    again = vary_tool_fields(arrays, np.random.default_rng(4), 0.5)
    assert all(np.array_equal(varied[k], again[k]) for k in arrays)  # seeded
    assert not np.array_equal(varied["bytes"], arrays["bytes"])
    assert not np.array_equal(varied["length"], arrays["length"])  # SYN data redrawn somewhere
    for name in ("direction", "iat", "valid"):
        assert varied[name] is arrays[name]


def _responder_rows() -> np.ndarray:
    """Features of connections towards a host flooded at 2,000 connections/s (its window fills) and of the
    first few connections towards a quiet one (its window never fills)."""
    activity = ResponderActivity()
    rows = []
    for i in range(400):
        rows.append(activity.step("10.0.0.1", i / 2000, f"192.0.2.{i % 250}", 80, "tcp", False, 1).copy())
    for i in range(20):
        rows.append(activity.step("10.0.0.2", i * 0.3, "192.0.2.9", 443, "tcp", True, 12).copy())
    return np.stack(rows)


def test_rate_jitter_rescales_only_the_rate_of_full_windows_within_the_factor() -> None:
    rows = _responder_rows()
    full = rows[:, RESPONDER_FEATURES.index("victim_log_connections")] >= 0.999
    assert full[:400].sum() > 200 and not full[400:].any()
    after = jitter_responder_rates(rows, np.random.default_rng(0), share=1.0, max_factor=4.0)
    rate_at = RESPONDER_FEATURES.index("victim_log_rate")
    others = [i for i in range(len(RESPONDER_FEATURES)) if i != rate_at]
    np.testing.assert_array_equal(after[:, others], rows[:, others])
    np.testing.assert_array_equal(after[~full], rows[~full])
    before_rate = np.array([responder_summary(r).rate for r in rows[full]])
    after_rate = np.array([responder_summary(r).rate for r in after[full]])
    ratio = after_rate / before_rate
    assert np.all(ratio <= 4.0 * 1.001) and np.all(ratio >= 0.25 / 1.001)
    assert (ratio > 1.5).any() and (ratio < 1 / 1.5).any()  # both ways, not one fixed factor
    # a full window cannot have arrived slower than its connections spread over the whole window
    assert after_rate.min() >= RESPONDER_CONNECTIONS / 10.0 * 0.999


def test_rate_jitter_share_and_degenerate_settings() -> None:
    rows = _responder_rows()
    rate_at = RESPONDER_FEATURES.index("victim_log_rate")
    half = jitter_responder_rates(rows, np.random.default_rng(1), share=0.5, max_factor=4.0)
    changed = (half[:, rate_at] != rows[:, rate_at]).mean() / (rows[:, 0] >= 0.999).mean()
    assert 0.35 < changed < 0.65
    for share, factor in ((0.0, 4.0), (1.0, 1.0)):
        np.testing.assert_array_equal(
            jitter_responder_rates(rows, np.random.default_rng(2), share, factor), rows
        )
    narrow = rows[:, :rate_at]  # a reasoner reading fewer features than the rate column: left alone
    np.testing.assert_array_equal(jitter_responder_rates(narrow, np.random.default_rng(3), 1.0, 4.0), narrow)
