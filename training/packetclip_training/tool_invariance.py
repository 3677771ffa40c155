"""Tool-invariance augmentation: rewrite the header fields that name the tool that sent a packet, not the attack.

Every attack tool leaves a fingerprint in fields the featurizer cannot mask without losing behaviour: hping3 counts
its source ports up from a random base and offers a TCP window of 512, nmap's SYN scan keeps one source port and a
window of 1024, t50 and masscan have schemes of their own, and a Linux client picks ephemeral ports at random and
offers 64,240. A model trained on the lab's tools learns those values (and then reads an unfamiliar tool's flood
as benign); the attack is in what the packets do. So training sees, for a share of connections, the same packets
with these fields redrawn:

- the originator's source port, when it is an ephemeral one (≥ 1024): one new random port per connection, written
  as the source port of the originator's packets and the destination port of the responder's (TCP and UDP);
- the TCP window the originator offers: one new random value per connection, on all its TCP packets.

TTL, IP ID, type of service, the don't-fragment flag and checksums are already masked by the featurizer
(`packetclip.featurizer.masking`), and the responder's fields describe the victim, so they stay. Packets whose
transport header is not at a fixed offset (IPv6 with extension headers, later fragments) or was cut by the snap
length are left alone. Training-only: the sensor never rewrites what it sees. Does not load, embed or train.
"""

from __future__ import annotations

import numpy as np

ORIGINATOR = 1  # `direction` value of a packet the originator sent
_TCP, _UDP = 6, 17
_EPHEMERAL = 1024  # source ports from here on are the sending stack's (or tool's) choice, not a service


def randomise_tool_fields(
    packet_bytes: np.ndarray, direction: np.ndarray, valid: np.ndarray, rng: np.random.Generator, share: float
) -> np.ndarray:
    """A copy of packed bytes (n, N, S) with the tool-identifying fields of a random `share` of the connections
    redrawn (see the module docstring); `direction` and `valid` are the packed (n, N) arrays."""
    out = np.array(packet_bytes, copy=True)
    count, _, snaplen = out.shape
    if not count or share <= 0:
        return out
    chosen = rng.random(count) < share
    new_port = rng.integers(_EPHEMERAL, 65536, count)
    new_window = rng.integers(1, 65536, count)
    rows, cols = np.nonzero(np.asarray(valid, bool) & chosen[:, None])
    if not len(rows):
        return out
    first = out[rows, cols, 0].astype(np.int64)
    version = first >> 4
    protocol = np.where(version == 4, out[rows, cols, 9], np.where(version == 6, out[rows, cols, 6], 0))
    fragment_offset = (out[rows, cols, 6].astype(np.int64) & 0x1F) << 8 | out[rows, cols, 7]
    whole = np.where(version == 4, fragment_offset == 0, version == 6)  # IPv6 here: no extension header
    header = np.where(version == 4, (first & 0x0F) * 4, 40)
    transport = whole & ((protocol == _TCP) | (protocol == _UDP)) & (header + 4 <= snaplen)
    from_originator = np.asarray(direction)[rows, cols] == ORIGINATOR
    # the originator's port: the source port of its packets, the destination port of the replies
    port_at = header + np.where(from_originator, 0, 2)
    port = _read16(out, rows, cols, np.minimum(port_at, snaplen - 2))
    # every packet of a connection carries the same originator port: all of them are rewritten, or none
    rewrite_port = transport & (port >= _EPHEMERAL)
    _write16(out, rows[rewrite_port], cols[rewrite_port], port_at[rewrite_port], new_port[rows[rewrite_port]])
    window_at = header + 14
    rewrite_window = whole & (protocol == _TCP) & from_originator & (window_at + 2 <= snaplen)
    _write16(
        out, rows[rewrite_window], cols[rewrite_window], window_at[rewrite_window],
        new_window[rows[rewrite_window]],
    )  # fmt: skip
    return out


def _read16(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[rows, cols, at].astype(np.int64) << 8 | data[rows, cols, at + 1]


def _write16(
    data: np.ndarray, rows: np.ndarray, cols: np.ndarray, at: np.ndarray, values: np.ndarray
) -> None:
    data[rows, cols, at] = (values >> 8) & 0xFF
    data[rows, cols, at + 1] = values & 0xFF
