"""Peak memory of `packetclip classify` on a spoofed SYN flood: every SYN from its own source, each its own
half-open connection, the case that makes a connection table grow without bound.

Writes the flood as a pcap (Ethernet, IPv4, TCP SYN to one victim port; sources drawn from 10.0.0.0/8 with random
source ports, `--rate` SYNs a second of packet time), then runs `packetclip classify` on it in a child process and
prints one JSON object: SYNs, capture size, records written, the classify summary's evicted count, wall seconds
and the child's peak RSS (`getrusage`, one child per run). The capture is made fresh each run from `--seed`.

    python benchmarks/flood_memory_bench.py [--syns 1000000] [--rate 100000] [--max-open N] [--model DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_VICTIM = bytes([198, 18, 2, 10])
_ETHERNET = bytes.fromhex("0200000000020200000000010800")  # dst, src, IPv4


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(source: bytes, sport: int, dport: int, seq: int) -> bytes:
    """An Ethernet frame holding one SYN (20-byte IPv4 and TCP headers, checksums right)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = source + _VICTIM + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, source, _VICTIM)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _ETHERNET + ip + tcp


def write_flood(path: Path, syns: int, rate: float, dport: int, seed: int) -> None:
    rng = random.Random(seed)
    start = 1_800_000_000.0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(syns):
            source = bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])
            frame = syn_frame(source, rng.randrange(1024, 65536), dport, rng.getrandbits(32))
            sec, usec = divmod(round((start + i / rate) * 1_000_000), 1_000_000)
            out.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--syns", type=int, default=1_000_000, help="SYNs in the flood, each its own connection"
    )
    parser.add_argument("--rate", type=float, default=100_000.0, help="SYNs per second of packet time")
    parser.add_argument("--dport", type=int, default=80, help="the victim's port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default=None, help="bundle for classify (default: its own default)")
    parser.add_argument("--keep", type=Path, default=None, help="write the capture here and keep it")
    parser.add_argument("--max-open", type=int, default=None, help="classify's --max-open (default: its own)")
    args = parser.parse_args(argv)
    if args.syns < 1 or args.rate <= 0:
        parser.error("--syns and --rate must be positive")

    with tempfile.TemporaryDirectory(prefix="flood-bench-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        capture = folder / "syn-flood.pcap"
        write_flood(capture, args.syns, args.rate, args.dport, args.seed)
        command = [sys.executable, "-c", "import sys; from packetclip.cli import main; sys.exit(main())"]
        command += ["classify", "--format", "json", str(capture)]
        if args.model:
            command[-1:-1] = ["--model", args.model]
        if args.max_open:
            command[-1:-1] = ["--max-open", str(args.max_open)]
        records_path = folder / "records.json"
        started = time.perf_counter()
        with open(
            records_path, "wb"
        ) as records_out:  # a file, not a pipe: a million records stay out of memory
            done = subprocess.run(command, stdout=records_out, stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(records_path, "rb") as written:
            records = sum(chunk.count(b"\n") for chunk in iter(lambda: written.read(1 << 20), b""))
        summary = done.stderr.decode(errors="replace").strip().splitlines()
        result = {
            "benchmark": "flood_memory",
            "syns": args.syns,
            "rate_per_s": args.rate,
            "max_open": args.max_open,
            "capture_bytes": capture.stat().st_size,
            "exit_status": done.returncode,
            "records": records,
            "wall_s": round(seconds, 2),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "rss_bytes_per_syn": round(peak_kib * 1024 / args.syns),
            "summary": summary[-6:],
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
