"""Featurizer throughput on a real capture: read + parse + track + mask + pack, on one core.

Prints one JSON object: packets/s and connections/s end to end, the read-only and read+track rates for
comparison, and the process's peak RSS. The capture is replayed `--repeat` times (each pass a fresh tracker)
so that small captures still give a stable figure.

    python benchmarks/featurizer_bench.py [--pcap FILE] [--repeat N] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from packetclip.featurizer import FEATURIZER_VERSION, FeaturizerConfig, ParseStats, pack, read_frames
from packetclip.featurizer.conntrack import track_frames

# The real captures sit beside the checkout (../shared/data/real); PACKETCLIP_REAL_DATA points elsewhere.
REAL_DATA = Path(
    os.environ.get(
        "PACKETCLIP_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    )
)


def largest_capture(root: Path) -> Path:
    captures = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".gz", ".cap")]
    if not captures:
        raise SystemExit(f"no captures under {root}; pass --pcap")
    return max(captures, key=lambda p: p.stat().st_size)


def timed(passes: int, run) -> tuple[float, int, int]:
    """Best-of-passes wall time of run(), which returns (packets, connections)."""
    best = float("inf")
    packets = connections = 0
    for _ in range(passes):
        start = time.perf_counter()
        packets, connections = run()
        best = min(best, time.perf_counter() - start)
    return best, packets, connections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pcap", type=Path, default=None, help="capture to replay (default: largest real one)"
    )
    parser.add_argument(
        "--repeat", type=int, default=20, help="times the capture is replayed per measurement"
    )
    parser.add_argument("--passes", type=int, default=3, help="measurements; the best is reported")
    parser.add_argument("--batch", type=int, default=256, help="connections per pack() call")
    args = parser.parse_args(argv)
    pcap = args.pcap or largest_capture(REAL_DATA)
    config = FeaturizerConfig()

    def read_only() -> tuple[int, int]:
        count = 0
        for _ in range(args.repeat):
            for _frame in read_frames(pcap):
                count += 1
        return count, 0

    def read_track() -> tuple[int, int]:
        stats, connections = ParseStats(), 0
        for _ in range(args.repeat):
            for _conn in track_frames(read_frames(pcap, stats), config, stats):
                connections += 1
        return stats.frames, connections

    def end_to_end() -> tuple[int, int]:
        stats, connections, batch = ParseStats(), 0, []
        for _ in range(args.repeat):
            for conn in track_frames(read_frames(pcap, stats), config, stats):
                batch.append(conn)
                if len(batch) == args.batch:
                    pack(batch, config)
                    connections += len(batch)
                    batch = []
        if batch:
            pack(batch, config)
            connections += len(batch)
        return stats.frames, connections

    read_s, read_packets, _ = timed(args.passes, read_only)
    track_s, track_packets, _ = timed(args.passes, read_track)
    full_s, packets, connections = timed(args.passes, end_to_end)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "capture": str(pcap),
        "capture_bytes": pcap.stat().st_size,
        "frames_per_pass": read_packets // args.repeat,
        "repeat": args.repeat,
        "featurizer_version": FEATURIZER_VERSION,
        "packets_per_s": round(packets / full_s),
        "connections_per_s": round(connections / full_s),
        "read_only_packets_per_s": round(read_packets / read_s),
        "read_track_packets_per_s": round(track_packets / track_s),
        "packets": packets,
        "connections": connections,
        "seconds": round(full_s, 3),
        "peak_rss_mib": round(peak_rss_kib / 1024, 1),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
