"""The lab's sensor: tcpdump in the router namespace on the server-facing bridge.

This module owns starting the capture (full frames, packet-buffered, bounded by a packet count), stopping it
cleanly and reading tcpdump's own counters. Every client->server and attacker->server packet crosses that
bridge exactly once, routed by the router, so the capture is what a sensor in front of the servers sees.
It does not label anything.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from packetclip_training.lab.topology import SERVER_BRIDGE, Topology

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


@dataclass
class CaptureStats:
    """tcpdump's end-of-run counters, and whether the packet bound stopped it early."""

    path: str
    packets_captured: int
    received_by_filter: int
    dropped_by_kernel: int
    max_packets: int
    limit_reached: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Capture:
    """One tcpdump process writing `path`; at most `max_packets` packets."""

    def __init__(self, topology: Topology, path: Path, max_packets: int, log_path: Path) -> None:
        self.topology = topology
        self.path = path
        self.max_packets = max_packets
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # --immediate-mode: a flood that ends within a buffer block is otherwise lost when tcpdump stops; -B (KiB):
        # a large kernel buffer so the immediate-mode wake-ups never drop packets under a flood
        argv = [
            "tcpdump",
            "-i",
            SERVER_BRIDGE,
            "-n",
            "-s",
            "0",
            "-U",
            "--immediate-mode",
            "-B",
            "131072",
            "-Z",
            "root",
        ]
        argv += ["-c", str(self.max_packets), "-w", str(self.path)]
        with self.log_path.open("wb") as err:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.topology.router_ns, *argv],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while "listening on" not in self._log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {self._log()[-300:]}")
            time.sleep(0.05)
        log.info("capturing on %s:%s into %s", self.topology.router_ns, SERVER_BRIDGE, self.path)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> CaptureStats:
        """SIGINT tcpdump (it flushes and prints its counters), SIGKILL if it hangs; return the counters."""
        if self.process is None:
            raise RuntimeError("capture was never started")
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        text = self._log()
        captured = _counter(text, "packets captured")
        stats = CaptureStats(
            path=str(self.path),
            packets_captured=captured,
            received_by_filter=_counter(text, "packets received by filter"),
            dropped_by_kernel=_counter(text, "packets dropped by kernel"),
            max_packets=self.max_packets,
            limit_reached=captured >= self.max_packets,
        )
        if stats.dropped_by_kernel:
            log.warning("tcpdump dropped %d packets (kernel buffer full)", stats.dropped_by_kernel)
        return stats

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _counter(text: str, label: str) -> int:
    match = re.search(rf"(\d+) {label}", text)
    return int(match.group(1)) if match else 0
