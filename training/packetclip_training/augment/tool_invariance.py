"""Tool-invariance augmentation: rewrite the header fields that name the tool that sent a packet, not the attack.

Every attack tool leaves a fingerprint in fields the featurizer cannot mask without losing behaviour: hping3 counts
its source ports up from a random base and offers a TCP window of 512, nmap's SYN scan keeps one source port and a
window of 1024, t50 and masscan have schemes of their own, and a Linux client picks ephemeral ports at random and
offers 64,240. A model trained on the lab's tools learns those values (and then reads an unfamiliar tool's flood
as benign); the attack is in what the packets do. So training sees, for a share of connections, the same packets
with these fields redrawn:

- the originator's source port, when it is an ephemeral one (≥ 1024): one new random port per connection, written
  as the source port of the originator's packets and the destination port of the responder's (TCP and UDP);
- the TCP window the originator offers: one new random value per connection, on all its TCP packets;
- the data an originator's SYNs carry (`redraw_syn_payloads`): none for half of the chosen connections, a
  random 1 to 1,024 bytes for the others. hping3 `-d`, t50 (12 bytes on every SYN) and some botnets put data in
  a SYN, others do not; a SYN flood is one either way. A model that saw data only on the lab's one-port floods
  read t50's SYNs over random ports as an OS scan (its own 12 bytes removed: 99.9 % SYN flood).

TTL, IP ID, type of service, the don't-fragment flag and checksums are already masked by the featurizer
(`packetclip.featurizer.masking`), and the responder's fields describe the victim, so they stay. Packets whose
transport header is not at a fixed offset (IPv6 with extension headers, later fragments) or was cut by the snap
length are left alone. Training-only: the sensor never rewrites what it sees. Does not load, embed or train.
"""

from __future__ import annotations

import math

import numpy as np

from packetclip.context import (
    RESPONDER_CONNECTIONS,
    RESPONDER_FEATURES,
    RESPONDER_RATE_SCALE,
    RESPONDER_WINDOW,
)

ORIGINATOR = 1  # `direction` value of a packet the originator sent
_TCP, _UDP = 6, 17
_EPHEMERAL = 1024  # source ports from here on are the sending stack's (or tool's) choice, not a service
_SYN, _ACK = 0x02, 0x10
_MAX_SYN_DATA = 1024  # the largest SYN data drawn (log-uniform from 1)


def vary_tool_fields(
    arrays: dict[str, np.ndarray], rng: np.random.Generator, share: float
) -> dict[str, np.ndarray]:
    """`pack()`-style arrays with both augmentations applied (`randomise_tool_fields`, then
    `redraw_syn_payloads`, each to its own random `share` of the connections): a new dict with new "bytes" and
    "length", the other arrays as they were."""
    packet_bytes = randomise_tool_fields(arrays["bytes"], arrays["direction"], arrays["valid"], rng, share)
    packet_bytes, length = redraw_syn_payloads(
        packet_bytes, arrays["length"], arrays["direction"], arrays["valid"], rng, share
    )
    return {**arrays, "bytes": packet_bytes, "length": length}


def randomise_tool_fields(
    packet_bytes: np.ndarray, direction: np.ndarray, valid: np.ndarray, rng: np.random.Generator, share: float
) -> np.ndarray:
    """A copy of packed bytes (n, N, S) with the tool-identifying fields of a random `share` of the connections
    redrawn (see the module docstring); `direction` and `valid` are the packed (n, N) arrays."""
    out = np.array(packet_bytes, copy=True)
    count, _, snaplen = map(int, out.shape)
    if not count or share <= 0:
        return out
    chosen = rng.random(count) < share
    new_port = rng.integers(_EPHEMERAL, 65536, count)
    new_window = rng.integers(1, 65536, count)
    rows, cols = np.nonzero(np.asarray(valid, bool) & chosen[:, None])
    if not len(rows):
        return out
    _, protocol, whole, header = _layout(out, rows, cols)
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
        out,
        rows[rewrite_window],
        cols[rewrite_window],
        window_at[rewrite_window],
        new_window[rows[rewrite_window]],
    )
    return out


def redraw_syn_payloads(
    packet_bytes: np.ndarray,
    length: np.ndarray,
    direction: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    share: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of packed bytes (n, N, S) and IP lengths (n, N) in which the originator's SYNs (SYN without ACK) of
    a random `share` of the connections carry new data: none for half of them, else one random size per
    connection (log-uniform, 1 to 1,024 bytes). The IP length field, the packed `length` and the bytes after the
    TCP header (as far as the snap length keeps them) follow; the SYN's header and everything else stay.
    Packets whose TCP header is not at a fixed offset or was cut by the snap length are left alone."""
    out, lengths = np.array(packet_bytes, copy=True), np.array(length, copy=True)
    count, _, snaplen = map(int, out.shape)
    if not count or share <= 0:
        return out, lengths
    chosen = rng.random(count) < share
    sizes = np.where(
        rng.random(count) < 0.5, 0, np.exp(rng.uniform(0.0, math.log(_MAX_SYN_DATA), count)).astype(np.int64)
    )
    rows, cols = np.nonzero(np.asarray(valid, bool) & chosen[:, None] & (np.asarray(direction) == ORIGINATOR))
    if not len(rows):
        return out, lengths
    version, protocol, whole, header = _layout(out, rows, cols)
    tcp = whole & (protocol == _TCP) & (header + 14 <= snaplen)
    flags = out[rows, cols, np.minimum(header + 13, snaplen - 1)]
    syn = tcp & ((flags & (_SYN | _ACK)) == _SYN)
    rows, cols, version, header = rows[syn], cols[syn], version[syn], header[syn]
    data_at = header + (out[rows, cols, header + 12].astype(np.int64) >> 4) * 4  # after the TCP header
    ip_length = lengths[rows, cols].astype(np.int64)
    old = np.maximum(ip_length - data_at, 0)
    new = sizes[rows]
    lengths[rows, cols] = ip_length - old + new
    # the IPv4 total length, or the IPv6 payload length (no extension header here)
    field = np.where(version == 4, lengths[rows, cols], lengths[rows, cols] - 40)
    _write16(out, rows, cols, np.where(version == 4, 2, 4), np.clip(field, 0, 0xFFFF))
    # positions from the end of the TCP header on: the new data as far as the snap length keeps it, then zeros
    position = np.arange(snaplen)[None, :]  # (1, S)
    packets = out[rows, cols]  # (k, S)
    after_header = position >= data_at[:, None]
    data = after_header & (position < (data_at + new)[:, None])
    packets[after_header] = 0
    packets[data] = rng.integers(0, 256, int(data.sum()), dtype=np.uint8)
    out[rows, cols] = packets
    return out, lengths


def _layout(out: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """(IP version, transport protocol, whole — not a later fragment, no IPv6 extension header —, transport
    header offset) of the packets at (rows, cols) of packed bytes."""
    first = out[rows, cols, 0].astype(np.int64)
    version = first >> 4
    protocol = np.where(version == 4, out[rows, cols, 9], np.where(version == 6, out[rows, cols, 6], 0))
    fragment_offset = (out[rows, cols, 6].astype(np.int64) & 0x1F) << 8 | out[rows, cols, 7]
    whole = np.where(version == 4, fragment_offset == 0, version == 6)  # IPv6 here: no extension header
    header = np.where(version == 4, (first & 0x0F) * 4, 40)
    return version, protocol, whole, header


def _read16(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[rows, cols, at].astype(np.int64) << 8 | data[rows, cols, at + 1]


def _write16(
    data: np.ndarray, rows: np.ndarray, cols: np.ndarray, at: np.ndarray, values: np.ndarray
) -> None:
    data[rows, cols, at] = (values >> 8) & 0xFF
    data[rows, cols, at + 1] = values & 0xFF


# How fast a flood or a scan arrives is a setting of the tool that sends it (hping3 --faster, nmap -T, masscan
# --rate, t50 and mausezahn at line rate), not part of the attack: a victim-side rate alone cannot tell a flood
# from a scan, yet the lab's tools happen to order them (its scans arrive faster than its hping3 floods, and a
# model trained on that reads a line-rate flood as a scan). Training therefore also sees, for a share of the
# connections towards a busy responder, that responder's inbound rate multiplied by a random factor.
_FULL_WINDOW = (
    0.999  # `victim_log_connections` of a responder whose window is full (its rate is then measured)
)


def jitter_responder_rates(
    responder: np.ndarray, rng: np.random.Generator, share: float, max_factor: float
) -> np.ndarray:
    """A copy of responder features (n, F, in `RESPONDER_FEATURES` order) in which a random `share` of the rows
    whose responder window is full has its `victim_log_rate` rescaled as if the connections had arrived
    between 1/`max_factor` and `max_factor` times as fast (log-uniform), never slower than a full window allows.
    A window that is not full measures its rate from its count, which stays, so those rows are left alone; so are
    rows without the rate column."""
    out = np.array(responder, dtype=np.float32, copy=True)
    count_at = RESPONDER_FEATURES.index("victim_log_connections")
    rate_at = RESPONDER_FEATURES.index("victim_log_rate")
    if share <= 0 or max_factor <= 1 or out.ndim != 2 or out.shape[1] <= rate_at or not len(out):
        return out
    chosen = (rng.random(len(out)) < share) & (out[:, count_at] >= _FULL_WINDOW)
    factor = np.exp(rng.uniform(-math.log(max_factor), math.log(max_factor), int(chosen.sum())))
    rate = np.expm1(out[chosen, rate_at].astype(np.float64) * RESPONDER_RATE_SCALE)
    slowest = RESPONDER_CONNECTIONS / RESPONDER_WINDOW  # a full window's connections over the whole window
    out[chosen, rate_at] = np.log1p(np.maximum(rate * factor, slowest)) / RESPONDER_RATE_SCALE
    return out
