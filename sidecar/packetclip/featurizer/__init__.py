"""The one featurizer shared by training and the sensor: frames in, connections and model input out.

Torch-free (numpy and the standard library only). Modules:
`pcapio` reads captures, `frames` parses headers, `masking` removes site-identifying fields, `conntrack` and
`tcp_state` track connections the way Zeek does, `community_id` hashes flows, `packing` builds model input,
`stats` counts what was seen, `config` holds the knobs and the version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from packetclip.featurizer.community_id import community_id
from packetclip.featurizer.config import FEATURIZER_VERSION, FeaturizerConfig
from packetclip.featurizer.connection import FACT_NAMES, Connection
from packetclip.featurizer.conntrack import ConnectionTracker, featurize_frames, track_frames
from packetclip.featurizer.packing import pack
from packetclip.featurizer.pcapio import PcapError, read_frames
from packetclip.featurizer.stats import ParseStats

PathLike = str | os.PathLike[str]

__all__ = [
    "FACT_NAMES",
    "FEATURIZER_VERSION",
    "Connection",
    "ConnectionTracker",
    "FeaturizerConfig",
    "ParseStats",
    "PcapError",
    "community_id",
    "featurize_frames",
    "featurize_pcap",
    "pack",
    "read_frames",
]


def featurize_pcap(
    path_or_paths: PathLike | Iterable[PathLike],
    config: FeaturizerConfig | None = None,
    stats: ParseStats | None = None,
    on_file_error: Callable[[PcapError], None] | None = None,
) -> Iterator[Connection]:
    """Connections of one capture, or of several read in sequence as one stream, in order of connection end.

    A capture that cannot be read raises `PcapError`; with `on_file_error` it is handed the error instead and
    the stream goes on with the next capture."""
    paths = [path_or_paths] if isinstance(path_or_paths, str | os.PathLike) else list(path_or_paths)
    stats = stats if stats is not None else ParseStats()

    def frames() -> Iterator[tuple[float, int, bytes]]:
        for path in paths:
            try:
                yield from read_frames(path, stats)
            except PcapError as exc:
                if on_file_error is None:
                    raise
                on_file_error(exc)

    return track_frames(frames(), config, stats)
