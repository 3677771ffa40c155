"""The serve loop of the live Zeek sidecar: requests in, verdicts out, across reconnects.

Owns the wire contract's sidecar side (docs/design.md, "Zeek <-> sidecar wire"):

- subscribe to `packetclip/request/` (or `packetclip/request/<shard>/`), then publish
  `PacketCLIP::hello(sidecar, model)` on `packetclip/control/` (again after every reconnect and model reload);
- check each `PacketCLIP::request` against its exact signature, decode its frames, featurize them
  (`featurize_frames`, Zeek's `is_orig` decides directions, Zeek's uid names the connection) and classify them in
  micro-batches with the shared `Engine` (`sensor` = the requesting node, so each node has its own originator
  contexts; one engine call carries many nodes' requests, see "Queue and batching");
- answer every request it could read a uid and node from with `PacketCLIP::verdict(uid, label, attack, score,
  explanation, model)` on `packetclip/verdict/<node>/` — label "error" and the reason as explanation when it
  cannot classify it (bad base64, oversized or no usable frame, overload): Zeek reading a capture waits for
  every answer before it exits;
- before a verdict, on the same topic: `PacketCLIP::allowed(uid, reason)` when the engine's allowlist allowed it,
  then `PacketCLIP::mission_scores(uid, missions, scores)` when user-written missions are scored, so that Zeek
  holds both when it writes the verdict's row (and raises no notice for an allowed one).

Order. Each node's requests pass a reorder window first (`packetclip.zeek.reorder`): they reach the engine in
first-packet order whatever order and moment they arrive in, so a verdict does not depend on batch boundaries or
on which neighbour Zeek published first (the window's docstring has the rule: a watermark from the frame times a
node has sent, Zeek's `max_wait` and a slack; a hold limit in wall-clock time; everything at the end of a
connection to Zeek or on shutdown). The engine is handed each node's requests as they left the window, in runs
it keeps in that order (`engine_calls`). Added latency: about `max_wait` + `order_slack` after a connection's
first packet, never more than `order_hold` after its request arrived.

Queue and batching. Requests that left the window wait in a bounded FIFO (`max_queue`). The inference thread
takes whatever is waiting, up to `batch_size`, the moment it is free: no lingering for a fuller batch, so a busy
sensor gets large batches (throughput) with latency bounded by one batch's time. A batch holds whichever nodes'
requests were waiting, and its nodes share engine calls (`engine_calls`): the k-th run of every node goes into
the k-th call, one sensor name per connection, so a batch whose nodes each sent requests in first-packet order is
one call however many nodes it names, and each node's verdicts are those of a call of its own. When a call of
several nodes fails, each node's part is tried again alone, so that one node's input the engine cannot take does
not cost the others their verdicts; what still fails is answered with "error" and counted
(`errors_total{kind="engine_failed"}`, once per failed call). Above capacity the *newest* request is refused
(tail drop): it is answered at once with an "error" verdict and counted (`dropped_total{reason="queue_full"}`),
the accepted requests keep their order, and memory stays bounded by `max_held` + `max_queue` requests of at most
`max_frames` x `max_frame_bytes` bytes. Messages to send wait in a bounded outbox (`max_outbox`, also tail drop).

Reconnects and delivery (at least once). The queue, the inference thread and the outbox outlive a connection:
requests received before Zeek went away are still classified, and their verdicts are sent, in order, once a new
connection is subscribed. A written message is kept until a pong confirms that Zeek's endpoint read it
(`packetclip.zeek.delivery`); what a connection ends without confirming goes back to the front of the outbox and
is sent again (`verdicts_resent_total`), so Zeek may receive a verdict twice, which it logs once. Given up and
counted (`verdicts_lost_total{reason}`): what is unconfirmed or unanswered when the sidecar stops, a full outbox,
a message over `max_message_bytes` (a verdict is then answered by a short error verdict). A message from Zeek
over `max_message_bytes` closes the connection (websockets, 1009): counted in `messages_oversized_total`. Only
requests on the subscribed topic prefix are answered (others: `errors_total{kind="foreign_topic"}`). What Zeek
does with a verdict for a connection it no longer remembers is Zeek's business (it expires pending state).

Model and Zeek must agree on time: a bundle whose featurizer window is longer than `max_wait` (the scripts'
`PacketCLIP::max_wait`) was trained on packets Zeek never sends; that is logged as a warning at start and after
every model reload.

Bad input (invalid JSON, messages that are not the v1 model, unknown events, wrong argument types, error
messages from Zeek) is counted by kind (`errors_total{kind}`), logged (the first few of each kind, then every
thousandth) and skipped; the loop keeps serving.

It does not parse the wire format (`codec`), open sockets (`client`), order requests (`reorder`), run models
(`packetclip.engine`) or decide how a model activation is applied (`packetclip.reload`: a failed reload keeps the
old model serving and is counted in `errors_total{kind="reload_failed"}`).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from packetclip.engine import Engine
from packetclip.featurizer import Connection, ParseStats
from packetclip.ordering import endpoint_tie
from packetclip.pipeline import SensorPipeline, Unusable
from packetclip.reload import Reload
from packetclip.store import ActiveModelWatcher
from packetclip.verdict import Verdict
from packetclip.zeek.client import (
    CONNECT_ERRORS,
    Backoff,
    Credentials,
    HandshakeError,
    ZeekSession,
    closed_for_size,
    event_text,
    load_credentials,
    open_session,
)
from packetclip.zeek.codec import (
    Ack,
    CodecError,
    Count,
    DataMessage,
    ErrorMessage,
    Event,
    Port,
    decode_message,
)
from packetclip.zeek.delivery import Unconfirmed
from packetclip.zeek.metrics import Metrics, MetricsServer
from packetclip.zeek.reorder import ReorderWindow
from packetclip.zeek.settings import ServeSettings

log = logging.getLogger(__name__)

REQUEST_TOPIC = "packetclip/request/"
CONTROL_TOPIC = "packetclip/control/"
VERDICT_TOPIC = "packetclip/verdict/{node}/"
REQUEST_EVENT = "PacketCLIP::request"
VERDICT_EVENT = "PacketCLIP::verdict"
MISSION_SCORES_EVENT = "PacketCLIP::mission_scores"
ALLOWED_EVENT = "PacketCLIP::allowed"
HELLO_EVENT = "PacketCLIP::hello"
ERROR_LABEL = "error"
NODE_NAME = re.compile(r"^[^/\s]+$")  # a node name becomes a topic level: not empty, no slash, no whitespace
COMPLAIN_FIRST = 10  # log messages per kind of bad input before only every COMPLAIN_EVERY-th is logged
COMPLAIN_EVERY = 1000
ORDER_TICK = 0.05  # seconds between checks of the reorder window's hold limits
# messages written before a ping asks Zeek to confirm them while more wait: a few dozen bytes of ping per ~100 KB
# of verdicts, and at most this many (plus what a stalled socket holds) to send again after a disconnect
CONFIRM_EVERY = 256
CONFIRM_IDLE = (
    0.05  # seconds the outbox stays empty before a ping confirms what was written (one ping per lull)
)

# PacketCLIP::request's signature: (name, the Python type the codec decodes the Broker type to, Broker type)
REQUEST_SIGNATURE: tuple[tuple[str, type, str], ...] = (
    ("node", str, "string"),
    ("uid", str, "string"),
    ("orig_h", object, "addr"),
    ("orig_p", Port, "port"),
    ("resp_h", object, "addr"),
    ("resp_p", Port, "port"),
    ("link_type", Count, "count"),
    ("ts", list, "vector of double"),
    ("is_orig", list, "vector of bool"),
    ("frames", list, "vector of string"),
)


def request_topic(shard: int | None) -> str:
    return REQUEST_TOPIC if shard is None else f"{REQUEST_TOPIC}{shard}/"


def verdict_topic(node: str) -> str:
    return VERDICT_TOPIC.format(node=node)


@dataclass
class Request:
    """One decoded `PacketCLIP::request`."""

    node: str
    uid: str
    link_type: int
    ts: list[float]
    is_orig: list[bool]
    frames: list[bytes]
    received: float  # time.monotonic() when its message arrived: latency is measured from here
    ports: tuple[int, int] | None = None  # (orig_p, resp_p): for frames without a transport header
    # orders connections whose first packets have the same time (`endpoint_tie`, as classify does; never arrival)
    tie: tuple[Any, ...] = ()


class RequestError(ValueError):
    """A request that cannot be classified; `uid` and `node` are set when a verdict can still answer it."""

    def __init__(self, kind: str, reason: str, uid: str | None = None, node: str | None = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.uid = uid
        self.node = node


def parse_request(event: Event, settings: ServeSettings, received: float) -> Request:
    """Check a request event against its exact signature and decode its frames; `RequestError` otherwise."""
    args = event.args
    uid = args[1] if len(args) > 1 and isinstance(args[1], str) else None
    node = args[0] if args and isinstance(args[0], str) and NODE_NAME.match(args[0]) else None
    if len(args) != len(REQUEST_SIGNATURE):
        raise RequestError(
            "wrong_arguments",
            f"{REQUEST_EVENT} takes {len(REQUEST_SIGNATURE)} arguments, got {len(args)}",
            uid,
            node,
        )
    if node is None:
        raise RequestError(
            "bad_node", f"{REQUEST_EVENT} argument 1 (node): not a usable node name: {args[0]!r}"
        )
    for position, ((name, expected, broker), value) in enumerate(
        zip(REQUEST_SIGNATURE, args, strict=True), 1
    ):
        if expected is object:  # addr: the codec decodes only valid addresses to ipaddress objects
            ok = hasattr(value, "version") and hasattr(value, "packed")
        else:
            ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if not ok:
            raise RequestError(
                "wrong_type",
                f"{REQUEST_EVENT} argument {position} ({name}): expected {broker}, got {type(value).__name__}",
                uid,
                node,
            )
    ts, is_orig, frames = args[7], args[8], args[9]
    assert uid is not None  # checked by the signature
    _check_elements(ts, float, "ts", "double", uid, node)
    _check_elements(is_orig, bool, "is_orig", "bool", uid, node)
    _check_elements(frames, str, "frames", "string", uid, node)
    if not (len(ts) == len(is_orig) == len(frames)):
        raise RequestError(
            "length_mismatch",
            f"ts, is_orig and frames differ in length ({len(ts)}, {len(is_orig)}, {len(frames)})",
            uid,
            node,
        )
    if not frames:
        raise RequestError("no_frames", "the request has no frames", uid, node)
    if len(frames) > settings.max_frames:
        raise RequestError(
            "too_many_frames", f"{len(frames)} frames, at most {settings.max_frames}", uid, node
        )
    frame_bytes = _decode_frames(frames, settings, uid, node)
    ports = (args[3].number, args[5].number)
    tie = endpoint_tie(str(args[2]), args[3].number, str(args[4]), args[5].number, args[5].protocol, uid)
    return Request(node, uid, int(args[6]), ts, is_orig, frame_bytes, received, ports, tie)


def _check_elements(values: list[Any], expected: type, name: str, broker: str, uid: str, node: str) -> None:
    for index, value in enumerate(values):
        if not isinstance(value, expected) or (isinstance(value, float) and not math.isfinite(value)):
            raise RequestError(
                "wrong_type",
                f"{REQUEST_EVENT} argument {name}[{index}]: expected {broker}, got {type(value).__name__}",
                uid,
                node,
            )


def _decode_frames(frames: list[str], settings: ServeSettings, uid: str, node: str) -> list[bytes]:
    limit = settings.max_frame_bytes
    text_limit = 4 * ((limit + 2) // 3)  # base64 length of `limit` bytes: refuse before decoding
    decoded = []
    for index, text in enumerate(frames):
        if len(text) > text_limit:
            raise RequestError("oversized_frame", f"frame {index} exceeds {limit} bytes", uid, node)
        try:
            frame = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(
                "bad_base64", f"frame {index} is not valid base64 ({exc})", uid, node
            ) from None
        if len(frame) > limit:
            raise RequestError("oversized_frame", f"frame {index} exceeds {limit} bytes", uid, node)
        decoded.append(frame)
    return decoded


@dataclass
class Outgoing:
    """One message for the socket; `label` and `received` are set for verdicts (metrics)."""

    text: str
    label: str | None = None
    received: float = 0.0
    node: str = ""  # a verdict's node and uid: to answer it with a short error should it be too large to send
    uid: str = ""
    resend: bool = True  # sent again on the next connection when this one ends unconfirmed (not a hello)
    written: bool = False  # written once already: a second write counts as resent, not as a new verdict


class RequestQueue:
    """Bounded FIFO between the serve loop and the inference thread (tail drop; see the module docstring)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[Request] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, request: Request) -> bool:
        """False when full (the caller answers and counts the refusal)."""
        if len(self._items) >= self.capacity:
            return False
        self._items.append(request)
        self._ready.set()
        return True

    async def get_batch(self, most: int) -> list[Request]:
        """Whatever is waiting, oldest first, up to `most`; waits only while nothing is."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return [self._items.popleft() for _ in range(min(most, len(self._items)))]


NodeRun = tuple[str, list[tuple[int, Connection]]]  # a node and a run of its (batch index, connection) rows


class Sidecar:
    """The live sidecar; `await run(stop)` serves until `stop` is set, then drains (bounded by drain_timeout)."""

    def __init__(
        self,
        settings: ServeSettings,
        engine: Engine,
        watcher: ActiveModelWatcher | None = None,
        metrics: Metrics | None = None,
        credentials: Credentials | None = None,
    ):
        self.settings = settings
        # None: loaded from the settings' files now (a file that cannot be used raises CredentialsError)
        self.credentials = credentials or load_credentials(
            settings.tls_ca, settings.tls_cert, settings.tls_key, settings.token_file
        )
        self.engine = engine
        # featurize, classify, and reload when the store's activation changes (`watcher`; None: a fixed --model)
        self.pipeline = SensorPipeline(engine, watcher)
        self.metrics = metrics or Metrics()
        self.metrics.model = engine.model_version
        self.parse_stats = ParseStats()  # frames of every request, as the featurizer counted them
        self.subscribed = asyncio.Event()  # set while a session is up (tests and the benchmark wait on it)
        self._queue: RequestQueue | None = None
        self._window: ReorderWindow[Request] = ReorderWindow(
            settings.max_wait, settings.order_slack, settings.hold_limit, settings.max_held
        )
        self._outbox: deque[Outgoing] = deque()
        self._unconfirmed: Unconfirmed[Outgoing] = Unconfirmed(CONFIRM_EVERY)
        # a message over this many characters may exceed max_message_bytes (UTF-8: at most 4 bytes a character)
        self._check_size_above = settings.max_message_bytes // 4
        self._subscribed_topic = request_topic(settings.shard)
        self._outbox_ready: asyncio.Event | None = None
        self._inflight = 0  # requests taken by the inference thread and not yet answered
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._backoff = Backoff(settings.reconnect_initial, settings.reconnect_max)
        self._complaints: dict[str, int] = {}
        self._metrics_server: MetricsServer | None = None
        self.ack: Ack | None = None
        warn_if_window_exceeds_wait(settings.max_wait, engine.featurizer_config.window, engine.model_version)
        self._note_allowlist()
        self._note_inputs()

    @property
    def topics(self) -> list[str]:
        return [request_topic(self.settings.shard)]

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server else None

    # --- the loop -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._queue = RequestQueue(self.settings.max_queue)
        self._outbox_ready = asyncio.Event()
        if self.settings.metrics_port is not None:
            self._metrics_server = MetricsServer(
                self.metrics, self.settings.metrics_host, self.settings.metrics_port
            ).start()
        classifier = asyncio.create_task(self._classify_loop(), name="classify")
        expirer = asyncio.create_task(self._expire_loop(), name="expire")
        sessions = 0
        try:
            while not stop.is_set():
                session = await self._connect(stop)
                if session is None:
                    continue
                if sessions:
                    self.metrics.set_gauges(reconnects=self.metrics.reconnects + 1)
                sessions += 1
                await self._serve_session(session, stop)
        finally:
            classifier.cancel()
            expirer.cancel()
            self._executor.shutdown(wait=True)
            self._count_left_at_stop()
            if self._metrics_server is not None:
                self._metrics_server.close()

    def _count_left_at_stop(self) -> None:
        """Verdicts written but never confirmed, never written, or never made (requests still queued or in the
        engine) when the sidecar stops: lost, and counted."""
        left = [*self._unconfirmed.take_all(), *self._outbox]
        self._outbox.clear()
        unanswered = (len(self._queue) if self._queue is not None else 0) + self._inflight
        verdicts = sum(1 for item in left if item.label is not None) + unanswered
        if verdicts:
            self.metrics.count_lost("shutdown", verdicts)
            log.warning("stopped with %d verdicts not confirmed by Zeek: counted as lost", verdicts)
        self.metrics.set_gauges(unconfirmed=0, outbox_depth=0)

    async def _connect(self, stop: asyncio.Event) -> ZeekSession | None:
        try:
            session = await open_session(
                self.settings.zeek,
                self.topics,
                self.settings.name,
                max_message_bytes=self.settings.max_message_bytes,
                ping_interval=self.settings.ping_interval,
                credentials=self.credentials,
            )
        except (*CONNECT_ERRORS, HandshakeError) as exc:
            delay = self._backoff.next_delay()
            self._complain(
                "connect_failed", f"cannot subscribe at {self.settings.zeek} ({exc}); retry in {delay:.1f} s"
            )
            await _wait_for(stop, delay)
            return None
        self._backoff.reset()
        self.ack = session.ack
        return session

    async def _serve_session(self, session: ZeekSession, stop: asyncio.Event) -> None:
        self.metrics.set_gauges(connected=1)
        self.subscribed.set()
        reader = asyncio.create_task(self._receive_loop(session), name="receive")
        writer = asyncio.create_task(self._send_loop(session), name="send")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({reader, writer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                reader.cancel()
                self._release(self._window.drain())
                await self._drain(writer)
            for ended in (reader, writer):
                if ended in done and not ended.cancelled() and ended.exception() is not None:
                    if closed_for_size(ended.exception()):
                        self.metrics.count_oversized("received")
                        self._complain(
                            "oversized_message",
                            f"Zeek sent a message over {self.settings.max_message_bytes} bytes: "
                            "the connection closed (1009), and the message is lost",
                        )
                    log.warning("connection to Zeek ended: %s", ended.exception())
        finally:
            for task in (reader, writer, stopper):
                task.cancel()
            await asyncio.gather(reader, writer, stopper, return_exceptions=True)
            self._release(self._window.drain())  # this Zeek sends nothing more; a new one has its own clock
            self._requeue_unconfirmed(stopping=stop.is_set())
            self.subscribed.clear()
            self.metrics.set_gauges(connected=0)
            await session.close()

    def _requeue_unconfirmed(self, stopping: bool) -> None:
        """The connection ended: what Zeek never confirmed goes back to the front of the outbox, in order, for the
        next connection (at-least-once; Zeek logs a verdict once and counts a second one). Hellos are not sent
        again: every connection starts with its own."""
        again = [item for item in self._unconfirmed.take_all() if item.resend]
        if again:
            self._outbox.extendleft(reversed(again))
            verdicts = sum(1 for item in again if item.label is not None)
            if verdicts and not stopping:
                log.warning(
                    "connection ended before Zeek confirmed %d verdicts: sending them again", verdicts
                )
        self.metrics.set_gauges(unconfirmed=0, outbox_depth=len(self._outbox))

    async def _drain(self, writer: asyncio.Task[None]) -> None:
        """On shutdown: let queued requests be classified and their verdicts sent and confirmed, within
        drain_timeout."""
        assert self._queue is not None
        deadline = time.monotonic() + self.settings.drain_timeout
        unconfirmed = self._unconfirmed
        while (len(self._queue) or self._inflight or self._outbox or len(unconfirmed)) and not writer.done():
            if time.monotonic() >= deadline:
                log.warning(
                    "shutdown: %d requests and %d messages left unanswered, %d not confirmed, after %.1f s",
                    len(self._queue) + self._inflight,
                    len(self._outbox),
                    len(unconfirmed),
                    self.settings.drain_timeout,
                )
                return
            await asyncio.sleep(0.01)

    async def _send_loop(self, session: ZeekSession) -> None:
        """Hello first, then the outbox in order. A message leaves the outbox for the unconfirmed tail as it is
        written, and the tail for good when a pong confirms it (`packetclip.zeek.delivery`)."""
        assert self._outbox_ready is not None
        ready = self._outbox_ready
        await session.send_text(self._hello_text())
        outbox = self._outbox
        unconfirmed = self._unconfirmed
        metrics = self.metrics
        while True:
            if unconfirmed.wants_ping(idle=False):
                await self._ping(session)
            if not outbox:
                ready.clear()
                if not unconfirmed.wants_ping(idle=True):
                    await ready.wait()
                    continue
                try:  # idle with messages to confirm: ping unless more come within CONFIRM_IDLE
                    await asyncio.wait_for(ready.wait(), CONFIRM_IDLE)
                except TimeoutError:
                    await self._ping(session)
                continue
            item = outbox.popleft()
            unconfirmed.written(item)  # before the write: a write that fails half-way is sent again
            await session.send_text(item.text)
            if item.label is not None:
                if item.written:
                    metrics.count_delivery(resent=1)
                else:
                    metrics.count_verdict(item.label, time.monotonic() - item.received)
            item.written = True
            metrics.outbox_depth = len(outbox)
            metrics.unconfirmed = len(unconfirmed)

    async def _ping(self, session: ZeekSession) -> None:
        generation = self._unconfirmed.pinged()
        pong = await session.ping()
        asyncio.ensure_future(pong).add_done_callback(partial(self._confirmed, generation=generation))

    def _confirmed(self, pong: asyncio.Future[float], *, generation: int) -> None:
        """A pong arrived (or its connection ended: then nothing is confirmed, and the tail is sent again)."""
        if pong.cancelled() or pong.exception() is not None:
            return
        confirmed = self._unconfirmed.ponged(generation)
        verdicts = sum(1 for item in confirmed if item.label is not None)
        if verdicts:
            self.metrics.count_delivery(confirmed=verdicts)
        self.metrics.unconfirmed = len(self._unconfirmed)
        if self._outbox_ready is not None:
            self._outbox_ready.set()  # the send loop decides whether the rest of the tail needs a ping

    def _hello_text(self) -> str:
        return event_text(CONTROL_TOPIC, Event(HELLO_EVENT, [self.settings.name, self.engine.model_version]))

    async def _receive_loop(self, session: ZeekSession) -> None:
        while True:
            raw = await session.receive()
            self.handle_message(raw, time.monotonic())

    # --- one incoming message -------------------------------------------------------------------------------

    def handle_message(self, raw: bytes, received: float) -> None:
        """Count, classify-queue or answer one raw message; never raises on bad input."""
        try:
            message = decode_message(json.loads(raw))
        except RecursionError:  # nested deeper than the decoders recurse: never a message of the contract
            self._complain("too_deep", "skipped a message nested too deeply to decode")
            return
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            kind = "bad_message" if isinstance(exc, CodecError) else "invalid_json"
            self._complain(kind, f"skipped a message: {exc}")
            return
        if isinstance(message, ErrorMessage):
            self._complain("peer_error", f"Zeek reported {message.code}: {message.context}")
            return
        if isinstance(message, Ack):
            self._complain("unexpected_ack", "skipped an ack outside the handshake")
            return
        if not message.topic.startswith(self._subscribed_topic):
            self._complain(
                "foreign_topic", f"skipped a message on {message.topic}, not a topic subscribed to"
            )
            return
        self._handle_data(message, received)

    def _handle_data(self, message: DataMessage, received: float) -> None:
        event = message.event
        if event is None:
            self._complain("not_an_event", f"skipped a data message on {message.topic} that is not an event")
            return
        if event.name != REQUEST_EVENT:
            self._complain("unknown_event", f"skipped event {event.name} on {message.topic}")
            return
        self.metrics.count_request()
        try:
            request = parse_request(event, self.settings, received)
        except RequestError as exc:
            self._refuse(exc)
            return
        newest = max(request.ts)
        self._release(self._window.add(request.node, request.ts[0], request.tie, newest, request, received))

    def _release(self, requests: list[Request]) -> None:
        """Queue the requests that left the reorder window, in order; refuse those above capacity."""
        assert self._queue is not None
        for request in requests:
            if not self._queue.put(request):
                self.metrics.count_drop("queue_full")
                self._answer_error(
                    request.uid,
                    request.node,
                    f"sidecar overloaded: {self._queue.capacity} requests queued",
                    request.received,
                )
        window = self._window
        self.metrics.set_gauges(
            queue_depth=len(self._queue), held=len(window), order_forced=window.forced, order_late=window.late
        )

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(ORDER_TICK)
            if len(self._window):
                self._release(self._window.expire(time.monotonic()))

    def _refuse(self, error: RequestError) -> None:
        self._complain(error.kind, f"request {error.uid or '?'} from {error.node!r}: {error.reason}")
        if error.uid is not None and error.node is not None:
            self._answer_error(error.uid, error.node, error.reason, time.monotonic())

    def _answer_error(self, uid: str, node: str, reason: str, received: float) -> None:
        self._post(self._verdict(node, uid, ERROR_LABEL, ERROR_LABEL, 0.0, reason, received))

    def _verdict(
        self, node: str, uid: str, label: str, attack: str, score: float, explanation: str, received: float
    ) -> Outgoing:
        event = Event(
            VERDICT_EVENT, [uid, label, attack, float(score), explanation, self.engine.model_version]
        )
        return Outgoing(event_text(verdict_topic(node), event), label, received, node, uid)

    @staticmethod
    def _allowed(node: str, uid: str, reason: str) -> Outgoing:
        return Outgoing(event_text(verdict_topic(node), Event(ALLOWED_EVENT, [uid, reason])))

    @staticmethod
    def _mission_scores(node: str, uid: str, missions: dict[str, float]) -> Outgoing:
        names = list(missions)
        event = Event(MISSION_SCORES_EVENT, [uid, names, [float(missions[name]) for name in names]])
        return Outgoing(event_text(verdict_topic(node), event))

    def _post(self, item: Outgoing) -> None:
        if len(item.text) > self._check_size_above and not self._fits(item):
            return
        if len(self._outbox) >= self.settings.max_outbox:
            self.metrics.count_drop("outbox_full")
            if item.label is not None:
                self.metrics.count_lost("outbox_full")
            self._complain("outbox_full", "outbox full: a message to Zeek was dropped")
            return
        self._outbox.append(item)
        self.metrics.outbox_depth = len(self._outbox)
        if self._outbox_ready is not None:
            self._outbox_ready.set()

    def _fits(self, item: Outgoing) -> bool:
        """False for a message over max_message_bytes, counted; a verdict is answered by a short error verdict
        instead (Zeek still gets its answer), any other message is not sent."""
        size = len(item.text.encode())
        if size <= self.settings.max_message_bytes:
            return True
        self.metrics.count_oversized("sent")
        self._complain("oversized_verdict", f"a message to Zeek of {size} bytes exceeds max_message_bytes")
        if item.label is not None:
            reason = f"verdict too large to send ({size} bytes)"
            error = self._verdict(item.node, item.uid, ERROR_LABEL, ERROR_LABEL, 0.0, reason, item.received)
            if len(error.text.encode()) <= self.settings.max_message_bytes:
                self._post(error)
            else:  # the uid or node alone is too long: nothing can answer it
                self.metrics.count_lost("oversized")
        return False

    def _complain(self, kind: str, message: str) -> None:
        self.metrics.count_error(kind)
        seen = self._complaints.get(kind, 0) + 1
        self._complaints[kind] = seen
        if seen <= COMPLAIN_FIRST or seen % COMPLAIN_EVERY == 0:
            log.warning("%s (%s #%d)", message, kind, seen)

    # --- inference --------------------------------------------------------------------------------------------

    async def _classify_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._queue.get_batch(self.settings.batch_size)
            self._inflight = len(batch)
            self.metrics.queue_depth = len(self._queue)
            outgoing, reloaded = await loop.run_in_executor(self._executor, self.classify_batch, batch)
            if reloaded:
                self._post(Outgoing(self._hello_text(), resend=False))
            for item in outgoing:
                self._post(item)
            self._inflight = 0
            self.metrics.count_batch()

    def classify_batch(self, batch: list[Request]) -> tuple[list[Outgoing], bool]:
        """Verdict messages for a batch, in its order (runs in the inference thread); reloads first when the
        store's activation changed."""
        reloaded = self._reload_if_activated()
        answers: list[list[Outgoing]] = [[] for _ in batch]  # per request: its messages, in order
        by_node: dict[str, list[tuple[int, Connection]]] = {}
        for index, request in enumerate(batch):
            connection = self._featurize(request)
            if isinstance(connection, Unusable):
                answers[index] = [
                    self._verdict(
                        request.node,
                        request.uid,
                        ERROR_LABEL,
                        ERROR_LABEL,
                        0.0,
                        connection.reason,
                        request.received,
                    )
                ]
            else:
                by_node.setdefault(request.node, []).append((index, connection))
        for parts in engine_calls(by_node):
            self._classify_call(batch, parts, answers)
        self._note_pipeline()
        self._note_allowlist()
        self._note_inputs()
        return [message for messages in answers for message in messages], reloaded

    def _note_pipeline(self) -> None:
        """The pipeline's counters into the metrics: its failures by kind, the reloads it applied."""
        counts = self.pipeline.counts
        self.metrics.set_errors(
            no_usable_frame=counts.unusable,
            featurize_failed=counts.featurize_errors,
            engine_failed=counts.engine_errors,
            reload_failed=counts.reload_errors,
        )
        self.metrics.set_gauges(model_reloads=counts.reloads)

    def _note_allowlist(self) -> None:
        """The allowlist's counters into the metrics (it counts as the engine marks verdicts and reloads)."""
        allowlist = self.engine.allowlist
        if allowlist is None:
            return
        counts = allowlist.counts
        self.metrics.set_gauges(
            allowed=counts.allowed,
            allowlist_entries=len(allowlist.allowlist.entries),
            allowlist_reloads=counts.reloads,
            allowlist_errors=counts.reload_errors,
            allowlist_expired=counts.expired,
        )

    def _note_inputs(self) -> None:
        """The input store's counters into the metrics (it counts as the engine keeps inputs)."""
        inputs = self.engine.inputs
        if inputs is None:
            return
        counts = inputs.counts
        self.metrics.set_gauges(
            inputs_kept=counts.kept,
            inputs_evicted=counts.evicted,
            inputs_expired=counts.expired,
            inputs_errors=counts.write_errors,
        )

    def _classify_call(
        self, batch: list[Request], parts: list[NodeRun], answers: list[list[Outgoing]], retry: bool = True
    ) -> None:
        """One engine call for runs of several nodes (at most one run each): their answers into `answers`. When it
        fails, each node's run is tried again alone (`retry`), and what fails alone is answered with an error.
        A call that fails in packing or the encoder (where one connection's input can break it) has changed no
        context; one that fails later has already added its rows to their originators' contexts, and a row tried
        again then finds itself there (the engine does not undo a walk, as it never did for a failed call)."""
        rows = [(node, index, connection) for node, run in parts for index, connection in run]
        connections = [connection for _, _, connection in rows]
        # one node: its name, as a call of its own always had; several: one name per connection
        sensor: str | list[str] = parts[0][0] if len(parts) == 1 else [node for node, _, _ in rows]
        where = parts[0][0] if len(parts) == 1 else f"{len(parts)} nodes"
        verdicts = self.pipeline.classify_or_fail(connections, sensor, where)
        if isinstance(verdicts, Exception):  # counted and logged: answer the requests and go on
            if retry and len(parts) > 1:
                for part in parts:
                    self._classify_call(batch, [part], answers, retry=False)
                return
            for node, index, _ in rows:
                request = batch[index]
                answers[index] = [
                    self._verdict(
                        node,
                        request.uid,
                        ERROR_LABEL,
                        ERROR_LABEL,
                        0.0,
                        f"engine failed: {verdicts}",
                        request.received,
                    )
                ]
            return
        for (node, index, _), verdict in zip(rows, verdicts, strict=True):
            answers[index] = self._answer(node, batch[index], verdict)

    def _answer(self, node: str, request: Request, verdict: Verdict) -> list[Outgoing]:
        """A classified request's messages: what Zeek must hold when it writes the verdict's row goes first, that
        the allowlist allowed it (before the mission scores too, whose notices it also keeps back), then the
        mission scores, then the verdict."""
        messages = []
        if verdict.allowed:
            messages.append(self._allowed(node, request.uid, verdict.allow_reason))
        if verdict.missions:
            messages.append(self._mission_scores(node, request.uid, verdict.missions))
        messages.append(
            self._verdict(
                node,
                request.uid,
                verdict.label,
                verdict.attack,
                verdict.score,
                verdict.explanation,
                request.received,
            )
        )
        return messages

    def _featurize(self, request: Request) -> Connection | Unusable:
        """The request's connection, or the reason there is none."""
        stats = ParseStats()
        connection = self.pipeline.featurize(
            request.link_type,
            request.ts,
            request.frames,
            request.is_orig,
            stats,
            ports=request.ports,
            kind="request",
            key=request.uid,
        )
        self.parse_stats.merge(stats)
        if isinstance(connection, Connection):
            connection.uid = request.uid  # Zeek's uid names the connection in packetclip.log
        return connection

    def _reload_if_activated(self) -> bool:
        """The pipeline's reload (`packetclip.reload`'s policy); True when a new model serves."""
        if self.pipeline.reload() is not Reload.RELOADED:
            return False
        self.metrics.model = self.engine.model_version
        warn_if_window_exceeds_wait(
            self.settings.max_wait, self.engine.featurizer_config.window, self.engine.model_version
        )
        return True


def node_runs(rows: list[tuple[int, Connection]]) -> list[list[tuple[int, Connection]]]:
    """A node's rows, in the order given, cut into runs in which first-packet time never decreases: the engine
    sorts what it is handed by that time, so a request that arrived late, or whose first frame was unusable,
    starts a new run, classified after the run before it."""
    runs: list[list[tuple[int, Connection]]] = []
    for row in rows:
        if not runs or row[1].ts < runs[-1][-1][1].ts:
            runs.append([])
        runs[-1].append(row)
    return runs


def engine_calls(by_node: dict[str, list[tuple[int, Connection]]]) -> list[list[NodeRun]]:
    """The engine calls for a batch's rows by node: call k holds the k-th run of every node that has one, nodes in
    their order in `by_node`. A node's runs stay in separate calls, one after the other; nodes share calls, which
    the engine walks node after node (`packetclip.engine.walk_order`): each node's contexts see exactly the
    sequence a call per run of that node gave them, and most batches are one call."""
    calls: list[list[NodeRun]] = []
    for node, rows in by_node.items():
        for k, run in enumerate(node_runs(rows)):
            if k == len(calls):
                calls.append([])
            calls[k].append((node, run))
    return calls


def warn_if_window_exceeds_wait(max_wait: float, window: float | None, model: str) -> bool:
    """Log a warning when the model was trained on more seconds of each connection than Zeek collects (its
    featurizer window is longer than max_wait, which must match the scripts' PacketCLIP::max_wait): the model
    then sees fewer packets than it learnt from. True when it warned."""
    if window is None or window <= max_wait:
        return False
    log.warning(
        "model %s was trained on the packets of each connection's first %g s (its featurizer window), but "
        "Zeek sends a connection %g s after its first packet (max_wait): set PacketCLIP::max_wait and "
        "--max-wait to at least %g s",
        model,
        window,
        max_wait,
        window,
    )
    return True


async def _wait_for(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return


def run_sidecar(
    settings: ServeSettings,
    engine: Engine,
    watcher: ActiveModelWatcher | None,
    install_signals: Callable[[asyncio.Event], None] | None = None,
) -> Sidecar:
    """Serve until a signal (installed by `install_signals`) sets the stop event; returns the sidecar."""
    sidecar_holder: list[Sidecar] = []

    async def main() -> None:
        stop = asyncio.Event()
        if install_signals is not None:
            install_signals(stop)
        sidecar = Sidecar(settings, engine, watcher)
        sidecar_holder.append(sidecar)
        await sidecar.run(stop)

    asyncio.run(main())
    return sidecar_holder[0]
