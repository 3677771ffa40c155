"""The metrics endpoint of `packetclip serve` under unkind clients: many slow clients at once take at most
`max_clients` pooled threads (the rest are answered 503, closed and counted `busy`), and a client that goes away
mid-response is counted `gone` and logged at debug, with no traceback anywhere.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from packetclip.zeek.metrics import Metrics, MetricsServer


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def scrape_or_busy(port: int) -> str:
    """A scrape, or "" when the server is still busy (503)."""
    try:
        return scrape(port)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return ""


def test_many_slow_clients_take_at_most_the_pool_and_the_rest_are_refused_and_counted() -> None:
    metrics = Metrics()
    server = MetricsServer(metrics, max_clients=4, client_timeout=30.0).start()
    before = threading.active_count()
    slow: list[socket.socket] = []
    try:
        for _ in range(20):  # each sends half a request line and waits: a worker stays taken for each
            client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            client.sendall(b"GET /metr")
            slow.append(client)
        wait_until(lambda: metrics.scrapes_failed["busy"] == 16)
        assert threading.active_count() - before <= 4
        refused = slow[4:]
        assert all(client.recv(64).startswith(b"HTTP/1.0 503") for client in refused)
    finally:
        for client in slow:
            client.close()
    # the held workers see their clients' end and are free again: a scrape is answered (until they have, one may
    # still be refused, and counted busy too)
    answered: list[str] = []
    wait_until(lambda: bool(answered.append(scrape_or_busy(server.port)) or answered[-1]))
    busy = re.search(r'packetclip_serve_scrapes_failed_total\{reason="busy"\} (\d+)', answered[-1])
    assert busy is not None and int(busy.group(1)) == 16 + answered.count("")
    assert threading.active_count() - before <= 4
    server.close()


class SlowMetrics(Metrics):
    """Metrics whose exposition waits until the test lets it go (the client leaves meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()
        self.go = threading.Event()

    def exposition(self) -> str:
        self.asked.set()
        self.go.wait(10)
        return super().exposition()


def test_a_client_gone_mid_response_is_counted_without_a_traceback(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = SlowMetrics()
    server = MetricsServer(metrics).start()
    with caplog.at_level(logging.DEBUG, logger="packetclip.zeek.metrics"):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert metrics.asked.wait(10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the answer is written to a connection that no longer exists
        metrics.go.set()
        wait_until(lambda: metrics.scrapes_failed["gone"] == 1)
        assert 'packetclip_serve_scrapes_failed_total{reason="gone"} 1' in scrape(server.port)
    server.close()
    assert "went away" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING or record.exc_info]
    assert "Traceback" not in capsys.readouterr().err
