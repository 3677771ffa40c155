"""The live sidecar's Prometheus metrics: counters, gauges and one latency histogram, in the text exposition
format (version 0.0.4), served over HTTP from a daemon thread.

Owns the metric names and their values; thread-safe (the serve loop and the inference thread both count). It
does not decide what is counted when (`service`). No client library: the format is a few lines of text.

    packetclip_serve_requests_total                       requests received (well-formed or not)
    packetclip_serve_verdicts_total{label}                verdicts sent (first written), by label ("error" included)
    packetclip_serve_verdicts_confirmed_total             verdicts Zeek's endpoint is known to have read (a pong)
    packetclip_serve_verdicts_resent_total                verdicts written again: their connection ended unconfirmed
    packetclip_serve_verdicts_lost_total{reason}          verdicts given up (outbox_full, oversized, shutdown)
    packetclip_serve_unconfirmed                          messages written and not yet confirmed
    packetclip_serve_messages_oversized_total{direction}  messages over max_message_bytes (received, sent)
    packetclip_serve_errors_total{kind}                   bad input and failures, by kind
    packetclip_serve_dropped_total{reason}                requests or verdicts given up (queue_full, outbox_full)
    packetclip_serve_queue_depth                          requests waiting for the engine
    packetclip_serve_held                                 requests held for first-packet order
    packetclip_serve_order_forced_total                   requests released early to stay within max_held
    packetclip_serve_order_late_total                     requests that arrived after a later-starting one left
    packetclip_serve_outbox_depth                         messages waiting to be sent
    packetclip_serve_connected                            1 while subscribed to Zeek
    packetclip_serve_reconnects_total                     connections opened after the first
    packetclip_serve_batches_total                        micro-batches through the engine
    packetclip_serve_model_reloads_total                  hot reloads done
    packetclip_serve_model_info{model}                    1 for the bundle version served
    packetclip_serve_allowed_total                        verdicts the allowlist marked allowed
    packetclip_serve_allowlist_entries                    allowlist entries in force (expired ones left)
    packetclip_serve_allowlist_reloads_total              edits of the allowlist file taken into force
    packetclip_serve_allowlist_errors_total               edits refused (unreadable or invalid: the list stays)
    packetclip_serve_allowlist_expired_total              allowlist entries that expired
    packetclip_serve_inputs_kept_total                    verdicts whose model input went into the feedback store
    packetclip_serve_inputs_evicted_total{reason}         kept inputs removed (room: over the row cap; expired)
    packetclip_serve_inputs_errors_total                  verdicts whose input could not be kept (the verdict went out)
    packetclip_serve_scrapes_failed_total{reason}         metrics requests not answered (busy: every worker taken,
                                                          refused with 503; gone: the client left mid-response)
    packetclip_serve_latency_seconds                      histogram: request received -> verdict sent
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "packetclip_serve_"
# Seconds; dense below 50 ms (the latency target) so that p99 can be read off the histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CLIENTS = 8  # scrapers handled at once (Prometheus sends one at a time; a few humans with curl besides)
CLIENT_TIMEOUT = 10.0  # seconds a client may take to send its request or read the answer; then it is dropped
BUSY_RESPONSE = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Metrics:
    """Every number the sidecar exports; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.verdicts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.verdicts_confirmed = 0
        self.verdicts_resent = 0
        self.verdicts_lost: Counter[str] = Counter()
        self.unconfirmed = 0
        self.oversized: Counter[str] = Counter()
        self.queue_depth = 0
        self.held = 0
        self.order_forced = 0
        self.order_late = 0
        self.outbox_depth = 0
        self.connected = 0
        self.reconnects = 0
        self.batches = 0
        self.model_reloads = 0
        self.model = ""
        # the allowlist's counters, copied from it after every batch (`packetclip.allowlist.AllowlistCounts`)
        self.allowed = 0
        self.allowlist_entries = 0
        self.allowlist_reloads = 0
        self.allowlist_errors = 0
        self.allowlist_expired = 0
        # the input store's counters, copied from it after every batch (`packetclip.feedback.InputCounts`)
        self.inputs_kept = 0
        self.inputs_evicted = 0
        self.inputs_expired = 0
        self.inputs_errors = 0
        self.scrapes_failed: Counter[str] = Counter()  # busy, gone (the metrics endpoint's own failures)
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.latency_count = 0
        self.latency_sum = 0.0

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def count_drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def count_lost(self, reason: str, verdicts: int = 1) -> None:
        with self._lock:
            self.verdicts_lost[reason] += verdicts

    def count_scrape_failed(self, reason: str) -> None:
        with self._lock:
            self.scrapes_failed[reason] += 1

    def count_oversized(self, direction: str) -> None:
        with self._lock:
            self.oversized[direction] += 1

    def count_delivery(self, confirmed: int = 0, resent: int = 0) -> None:
        with self._lock:
            self.verdicts_confirmed += confirmed
            self.verdicts_resent += resent

    def count_batch(self) -> None:
        with self._lock:
            self.batches += 1

    def count_verdict(self, label: str, latency: float) -> None:
        with self._lock:
            self.verdicts[label] += 1
            self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_count += 1
            self.latency_sum += latency

    def set_errors(self, **counts: int) -> None:
        """Error counts kept elsewhere (the sensor pipeline's), copied in; a kind that has not happened stays
        out of the exposition, as a counted one would."""
        with self._lock:
            for kind, count in counts.items():
                if count:
                    self.errors[kind] = count

    def set_gauges(self, **values: int) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def latency_quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (what Prometheus' histogram_quantile bounds)."""
        with self._lock:
            target = q * self.latency_count
            seen = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self._bucket_counts, strict=True):
                seen += count
                if seen >= target and count:
                    return bound
        return 0.0

    def exposition(self) -> str:
        """All metrics in the Prometheus text format."""
        with self._lock:
            lines: list[str] = []
            _metric(lines, "requests_total", "counter", "Requests received.", [("", self.requests)])
            _metric(lines, "verdicts_total", "counter", "Verdicts sent, by label.",
                    [(_labels(label=k), v) for k, v in sorted(self.verdicts.items())])  # fmt: skip
            _metric(lines, "verdicts_confirmed_total", "counter",
                    "Verdicts Zeek's endpoint is known to have read (a pong followed them).",
                    [("", self.verdicts_confirmed)])  # fmt: skip
            _metric(lines, "verdicts_resent_total", "counter",
                    "Verdicts written again after their connection ended before confirming them.",
                    [("", self.verdicts_resent)])  # fmt: skip
            _metric(lines, "verdicts_lost_total", "counter", "Verdicts given up, by reason.",
                    [(_labels(reason=k), v) for k, v in sorted(self.verdicts_lost.items())])  # fmt: skip
            _metric(lines, "unconfirmed", "gauge", "Messages written and not yet confirmed.",
                    [("", self.unconfirmed)])  # fmt: skip
            _metric(lines, "messages_oversized_total", "counter",
                    "Messages over max_message_bytes, by direction (received: the connection closed; sent: not sent).",
                    [(_labels(direction=k), v) for k, v in sorted(self.oversized.items())])  # fmt: skip
            _metric(lines, "errors_total", "counter", "Bad input and failures, by kind.",
                    [(_labels(kind=k), v) for k, v in sorted(self.errors.items())])  # fmt: skip
            _metric(lines, "dropped_total", "counter", "Requests or verdicts given up, by reason.",
                    [(_labels(reason=k), v) for k, v in sorted(self.dropped.items())])  # fmt: skip
            _metric(
                lines, "queue_depth", "gauge", "Requests waiting for the engine.", [("", self.queue_depth)]
            )
            _metric(lines, "held", "gauge", "Requests held for first-packet order.", [("", self.held)])
            _metric(lines, "order_forced_total", "counter", "Requests released early to stay within max_held.",
                    [("", self.order_forced)])  # fmt: skip
            _metric(lines, "order_late_total", "counter", "Requests that arrived after a later-starting one left.",
                    [("", self.order_late)])  # fmt: skip
            _metric(lines, "outbox_depth", "gauge", "Messages waiting to be sent.", [("", self.outbox_depth)])
            _metric(lines, "connected", "gauge", "1 while subscribed to Zeek.", [("", self.connected)])
            _metric(
                lines, "reconnects_total", "counter", "Connections after the first.", [("", self.reconnects)]
            )
            _metric(
                lines, "batches_total", "counter", "Micro-batches through the engine.", [("", self.batches)]
            )
            _metric(lines, "model_reloads_total", "counter", "Hot model reloads.", [("", self.model_reloads)])
            _metric(
                lines, "model_info", "gauge", "The bundle version served.", [(_labels(model=self.model), 1)]
            )
            _metric(lines, "allowed_total", "counter", "Verdicts the allowlist marked allowed.",
                    [("", self.allowed)])  # fmt: skip
            _metric(lines, "allowlist_entries", "gauge", "Allowlist entries in force.",
                    [("", self.allowlist_entries)])  # fmt: skip
            _metric(lines, "allowlist_reloads_total", "counter", "Edits of the allowlist file taken into force.",
                    [("", self.allowlist_reloads)])  # fmt: skip
            _metric(lines, "allowlist_errors_total", "counter",
                    "Edits of the allowlist file refused (unreadable or invalid); the list before stays.",
                    [("", self.allowlist_errors)])  # fmt: skip
            _metric(lines, "allowlist_expired_total", "counter", "Allowlist entries that expired.",
                    [("", self.allowlist_expired)])  # fmt: skip
            _metric(lines, "inputs_kept_total", "counter", "Verdicts whose model input was kept for feedback.",
                    [("", self.inputs_kept)])  # fmt: skip
            _metric(lines, "inputs_evicted_total", "counter", "Kept inputs removed, by reason.",
                    [(_labels(reason="room"), self.inputs_evicted),
                     (_labels(reason="expired"), self.inputs_expired)])  # fmt: skip
            _metric(lines, "inputs_errors_total", "counter",
                    "Verdicts whose input could not be kept (the store failed; the verdict was sent).",
                    [("", self.inputs_errors)])  # fmt: skip
            _metric(lines, "scrapes_failed_total", "counter",
                    "Metrics requests not answered, by reason (busy: refused with 503; gone: the client left).",
                    [(_labels(reason=k), v) for k, v in sorted(self.scrapes_failed.items())])  # fmt: skip
            name = PREFIX + "latency_seconds"
            lines.append(f"# HELP {name} Seconds from request received to verdict sent.")
            lines.append(f"# TYPE {name} histogram")
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, self._bucket_counts, strict=False):
                cumulative += count
                lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self.latency_count}')
            lines.append(f"{name}_sum {self.latency_sum!r}")
            lines.append(f"{name}_count {self.latency_count}")
            return "\n".join(lines) + "\n"


def _metric(lines: list[str], name: str, kind: str, text: str, samples: list[tuple[str, int]]) -> None:
    full = PREFIX + name
    lines.append(f"# HELP {full} {text}")
    lines.append(f"# TYPE {full} {kind}")
    lines.extend(f"{full}{labels} {value}" for labels, value in samples)


def _labels(**pairs: str) -> str:
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{key}="{escaped(value)}"' for key, value in pairs.items()) + "}"


def _loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; a name or a wildcard address (0.0.0.0, ::) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsPortError(OSError):
    """The metrics endpoint cannot listen where it was told to; the message says where and why."""


class _PooledHTTPServer(HTTPServer):
    """An HTTP server whose connections are handled by at most `max_clients` pooled threads: a connection beyond
    them is answered 503 and closed at once (counted `busy`), so a burst of clients cannot grow the thread count,
    and a client gone mid-response is counted (`gone`) and logged at debug instead of a traceback on stderr."""

    request_queue_size = 64  # accepted (and refused) at once in a burst, not left to SYN retries

    def __init__(self, address: tuple[str, int], handler: Any, metrics: Metrics, max_clients: int):
        self._metrics = metrics
        self._slots = threading.BoundedSemaphore(max_clients)
        self._pool = ThreadPoolExecutor(max_clients, thread_name_prefix="metrics-client")
        super().__init__(address, handler)  # last: a failed bind calls server_close, which needs the pool

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._metrics.count_scrape_failed("busy")
            log.debug("metrics: %s refused, %s", client_address, "every worker is busy")
            try:  # a fresh socket's buffer takes these few bytes: never wait on this client
                request.setblocking(False)
                request.send(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            self._pool.submit(self._handle, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._slots.release()
            self.shutdown_request(request)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            self._metrics.count_scrape_failed("gone")
            log.debug("metrics: %s went away (%s)", client_address, error)
        else:
            log.warning("metrics: request from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class MetricsServer:
    """`GET /metrics` on host:port, answered by at most `max_clients` pooled threads (the accept loop runs in a
    daemon thread); port 0 picks a free port (see `.port`)."""

    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_clients: int = MAX_CLIENTS,
        client_timeout: float = CLIENT_TIMEOUT,
    ):
        exposition = metrics.exposition

        class Handler(BaseHTTPRequestHandler):
            timeout = client_timeout  # a client that sends nothing frees its worker after this long

            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        try:
            self._server = _PooledHTTPServer((host, port), Handler, metrics, max_clients)
        except OSError as exc:  # busy port, address not on this host, no permission
            raise MetricsPortError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        if not _loopback(host):
            log.warning(
                "metrics on %s:%d, reachable from other hosts: the endpoint has no authentication", host, port
            )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
