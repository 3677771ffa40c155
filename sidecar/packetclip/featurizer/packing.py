"""Turning connections into the model's fixed-shape input arrays.

Owns `pack`, which training and the runtime both call. It is vectorised: the packets of all connections are
concatenated once and scattered into the (B, N, ...) arrays with one fancy-indexing assignment per array.
It does not decide what is in a packet's bytes (`masking.py`) or which packets a connection keeps (`conntrack.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from packetclip.featurizer.config import FeaturizerConfig
from packetclip.featurizer.connection import Connection


def pack(connections: Sequence[Connection], config: FeaturizerConfig | None = None) -> dict[str, np.ndarray]:
    """Model input for a batch: bytes (B,N,S) uint8, direction/iat/length/valid (B,N); padding rows are zero."""
    config = config or FeaturizerConfig()
    batch, max_packets, snaplen = len(connections), config.max_packets, config.snaplen
    out: dict[str, np.ndarray] = {
        "bytes": np.zeros((batch, max_packets, snaplen), dtype=np.uint8),  # (B, N, S)
        "direction": np.zeros((batch, max_packets), dtype=np.int8),  # (B, N)
        "iat": np.zeros((batch, max_packets), dtype=np.float32),  # (B, N)
        "length": np.zeros((batch, max_packets), dtype=np.int32),  # (B, N)
        "valid": np.zeros((batch, max_packets), dtype=bool),  # (B, N)
    }
    if not batch:
        return out
    lengths = [len(c.pkt_ts) for c in connections]
    counts = np.minimum(np.array(lengths, dtype=np.int64), max_packets)  # (B,)
    total = int(counts.sum())
    if not total:
        return out
    rows = np.repeat(np.arange(batch), counts)  # (P,) connection of each kept packet
    starts = np.cumsum(counts) - counts
    cols = np.arange(total) - np.repeat(starts, counts)  # (P,) position inside its connection
    if min(lengths) > 0 and max(lengths) <= max_packets:
        # the common batch: every connection has packets and none has more than fit, so the per-connection
        # arrays concatenate as they are (no slicing, no filtering)
        ts_parts = [c.pkt_ts for c in connections]
        dir_parts = [c.pkt_dir for c in connections]
        len_parts = [c.pkt_len for c in connections]
        byte_parts = [c.pkt_bytes for c in connections]
    else:
        kept = [(c, n) for c, n in zip(connections, counts.tolist(), strict=False) if n]
        ts_parts = [c.pkt_ts[:n] for c, n in kept]
        dir_parts = [c.pkt_dir[:n] for c, n in kept]
        len_parts = [c.pkt_len[:n] for c, n in kept]
        byte_parts = [c.pkt_bytes[:n] for c, n in kept]
    ts = np.concatenate(ts_parts)  # (P,)
    iat = np.diff(ts, prepend=ts[0])
    iat[cols == 0] = 0.0  # the first packet of each connection has no predecessor
    out["iat"][rows, cols] = np.maximum(iat, 0.0)  # captures are not always in time order
    out["direction"][rows, cols] = np.concatenate(dir_parts)
    out["length"][rows, cols] = np.concatenate(len_parts)
    out["valid"][rows, cols] = True
    if len({part.shape[1] for part in byte_parts}) == 1:  # one width: fit the whole block at once
        packet_bytes = _fit(np.concatenate(byte_parts), snaplen)  # (P, S)
    else:
        packet_bytes = np.concatenate([_fit(part, snaplen) for part in byte_parts])  # (P, S)
    out["bytes"][rows, cols] = packet_bytes
    return out


def _fit(packet_bytes: np.ndarray, snaplen: int) -> np.ndarray:
    """Cut or zero-pad (n, s) bytes to (n, snaplen): connections featurized with another snaplen still pack."""
    width = packet_bytes.shape[1]
    if width == snaplen:
        return packet_bytes
    if width > snaplen:
        return packet_bytes[:, :snaplen]
    return np.pad(packet_bytes, ((0, 0), (0, snaplen - width)))
