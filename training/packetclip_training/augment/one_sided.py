"""The originator-only view of a connection: what a sensor sees when the replies never reach it.

A sensor often sees one direction only: routing is asymmetric, the victim of a flood is too busy to answer, a
firewall drops the replies, or a spoofing tool's SYN-ACKs go elsewhere. A model trained on two-sided captures
alone learns "an unanswered lone SYN is a port scan probe" because in the lab every flood was answered and only
scans hit silent ports; then a flood whose replies are missing reads as a scan. Training the reasoner also on the
originator-only view of every training connection makes the replies evidence, not a requirement: the class must
follow from what the originator does (how fast, to how many ports and hosts), which both views share.

Owns `originator_view`, a vectorised rewrite of packed model input (`pack()` / `load_split()` arrays) into the
arrays the featurizer would have produced from a capture holding only the originator's packets:

- responder packets are removed and the originator's packets move up, keeping their order;
- inter-arrival times are recomputed between the packets that remain (the first is 0); packed gaps are clipped
  at zero where capture time steps back, so those steps (microseconds in practice) can shift the rebuilt gaps;
- TCP acknowledgement numbers are zeroed: the featurizer writes them relative to the peer's initial sequence
  number, which a one-sided capture never shows (`packetclip.featurizer.masking` zeroes them in that case).

Approximation, stated: only the originator packets among the connection's first `max_packets` are kept, where a
one-sided capture would fill the window with later originator packets; SACK edges (rare in the first packets)
keep their relative values. Does not embed, store or train (`reasoner.data` does).
"""

from __future__ import annotations

import numpy as np

ORIGINATOR = 1  # `pkt_dir` / `direction` value of a packet sent by the originator
_TCP = 6


def originator_view(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Packed arrays (bytes, direction, iat, length, valid, plus any per-row columns) → the originator-only view.

    Per-row columns other than the five model inputs are passed through unchanged. Rows whose originator sent
    nothing in the window (possible for flipped ICMP pairs) keep no packets: `valid` is all false.
    """
    valid = np.asarray(arrays["valid"], bool)
    max_packets = valid.shape[1]
    keep = valid & (np.asarray(arrays["direction"]) == ORIGINATOR)
    times = np.cumsum(np.asarray(arrays["iat"], np.float64), axis=1)  # relative to the first packet
    counts = keep.sum(axis=1)
    rows, cols = np.nonzero(keep)  # row-major: each row's kept packets in order
    new_cols = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = {name: value for name, value in arrays.items() if name not in _INPUTS}
    out["bytes"] = np.zeros_like(arrays["bytes"])
    out["bytes"][rows, new_cols] = arrays["bytes"][rows, cols]
    _zero_tcp_acks(out["bytes"], rows, new_cols)
    out["direction"] = np.zeros_like(arrays["direction"])
    out["direction"][rows, new_cols] = ORIGINATOR
    out["length"] = np.zeros_like(arrays["length"])
    out["length"][rows, new_cols] = np.asarray(arrays["length"])[rows, cols]
    kept_times = times[rows, cols]
    iat = np.diff(kept_times, prepend=kept_times[:1])
    iat[new_cols == 0] = 0.0
    out["iat"] = np.zeros(valid.shape, np.asarray(arrays["iat"]).dtype)
    out["iat"][rows, new_cols] = np.maximum(iat, 0.0)
    out["valid"] = np.arange(max_packets)[None, :] < counts[:, None]
    return out


_INPUTS = ("bytes", "direction", "iat", "length", "valid")


def _zero_tcp_acks(packet_bytes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Zero the acknowledgement number of the TCP packets at (rows, cols) (IPv4, and IPv6 without extensions)."""
    if not len(rows):
        return
    first = packet_bytes[rows, cols, 0]
    version = first >> 4
    ipv4 = (version == 4) & (packet_bytes[rows, cols, 9] == _TCP)
    ipv6 = (version == 6) & (packet_bytes[rows, cols, 6] == _TCP)
    header = np.where(ipv4, (first & 0x0F).astype(np.int64) * 4, 40)
    width = packet_bytes.shape[2]
    picked = np.flatnonzero((ipv4 | ipv6) & (header + 12 <= width))
    for offset in range(8, 12):
        packet_bytes[rows[picked], cols[picked], header[picked] + offset] = 0
