"""Tool-invariance augmentation rewrites exactly the tool-identifying fields, consistently per connection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from packetclip_training.dataset.store import load_split
from packetclip_training.tool_invariance import randomise_tool_fields

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
