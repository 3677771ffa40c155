"""tcpdump in a lab namespace for the lab tests: started and listening before the traffic, stopped after it."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def wait_until_listening(capture: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Block until tcpdump says it listens: a flood at a tiny scale is over in a few milliseconds, and a
    capture that starts late would see none of it."""
    assert capture.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([capture.stderr], [], [], 0.2)
        if ready and b"listening on" in capture.stderr.readline():
            time.sleep(0.2)
            return
        if capture.poll() is not None:
            break
    raise RuntimeError(f"tcpdump did not start capturing within {timeout_s:.0f}s")


def in_router(topology: object) -> list[str]:
    return ["ip", "netns", "exec", topology.router_ns]  # type: ignore[attr-defined]


@contextlib.contextmanager
def router_capture(topology: object, tcpdump: list[str], pcap: Path, bpf: str) -> Iterator[None]:
    """tcpdump in the router namespace writing `pcap`, listening before the body runs and stopped after it."""
    capture = subprocess.Popen(
        [*in_router(topology), *tcpdump, "-w", str(pcap), bpf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until_listening(capture)
        yield
    finally:
        os.killpg(capture.pid, signal.SIGTERM)
        capture.wait(timeout=10)
