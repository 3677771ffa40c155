"""A WebSocket peer that behaves like Zeek's WebSocket endpoint, and an emulation of the packetclip Zeek scripts.

`ZeekPeer` follows ZEEK.md and Zeek's WebSocket dispatcher:

- only `/v1/messages/json`: any other path gets `{"type":"error","code":"invalid_uri",...}` and close 1008; an
  `X-Application-Name` outside `[-/_.=:*@a-zA-Z0-9]+` gets `invalid_application_name` and close 1008;
- the first message is the subscription array; not an array -> error "subscriptions not an array", an element
  that is not a string -> "individual subscription not a string", and no ack (later messages then wait forever,
  as Zeek queues them until an ack that never comes); otherwise `{"type":"ack","endpoint":"<id>-websocket-N",
  "version":V}`;
- later messages: not JSON / not the v1 model -> "failed to decode JSON object"; no topic -> "no topic in
  top-level JSON object"; not an event, or an event Zeek has no declaration of -> "failed to create Zeek event"
  (all with code "deserialization_failed"; the connection stays open); an event whose arguments do not match the
  declared signature is logged and dropped (Zeek raises no error to the client);
- pub/sub by topic prefix across clients (never echoed to the publisher) and to the peer's own "script"
  subscriptions; Zeek's encoder: strings escaped only for `\\ \\b \\f \\n \\r \\t \\v "` (so `\\v` and raw bytes
  reach the client as Zeek sends them); `reject_unicode_escapes` mimics Zeek <= 7, which refuses `\\uXXXX`;
  `metadata` selects the two-element (Zeek <= 8.0) or three-element (empty metadata vector) event form;
- pings every `ping_interval` seconds (a client that does not answer is dropped by websockets);
- TLS when `ssl` is given (Zeek's `tls_options`: the URL becomes wss://; a context that requires a client
  certificate plays mutual TLS); every handshake's request headers are kept in `request_headers`, and `token`
  plays a proxy in front of Zeek that answers 401 to a handshake without `Authorization: Bearer <token>` (Zeek's
  endpoint itself has no authentication);
- hostile moments for delivery tests: `pause_reading` (a stalled Zeek: its endpoint reads nothing more from the
  socket, pings included, so it sends no pong and the client's writes back up; what it had read is still
  handled, as Zeek's endpoint queues what it read for the event loop without a bound), `abort_clients` (the TCP
  connection reset, whatever either side had buffered), and messages of any size (no `max_size` on the peer).

`requests_from_capture` replays a capture as the packetclip Zeek scripts collect it: per connection its first
`max_packets` frames among those within `max_wait` of its first packet (link-layer header included, cut at
`snaplen`, base64), `is_orig`, `ts` as double, the capture's link type, the node name (the capture's file name by
default, which is what `packetclip classify` keys originator contexts by), flushed at `max_packets`, when the
connection ends, when packet time passes its first packet + `max_wait` (the scripts' timer, which fires as network
time moves) or at the end of the capture, sharded by originator (`addr_to_counts(orig_h)` last word modulo the
shard count).

Connection boundaries: Zeek decides them in the real deployment; here the featurizer's `ConnectionTracker` (in its
`release_full` mode, the one `classify` uses, with `max_wait` as its window) decides which frames form a
connection and when it is flushed, and a 5-tuple table of raw frames supplies the bytes; connections released
together (a window or timeout sweep, the end of the capture) are published in order of first packet. The verdicts
of the sidecar can therefore be compared with `packetclip classify` connection by connection (same uid, same
frames) when `classify` runs a bundle whose window is `max_wait`.

Fragments: for a fragmented datagram Zeek raises `new_packet` once, with the fragment that completed it, while the
tracker (as `classify`) keeps every fragment, the later ones attributed through the first. That connection's
frames cannot be both Zeek's and the tracker's, so `requests_from_capture` raises `FragmentedConnection` for it
rather than publish frames Zeek would not send (tests/zeekscripts/zeek_view.py models Zeek's side for the small
fragment captures of the btest suite).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import json
import logging
import re
import socket
import ssl
import struct
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from packetclip.featurizer import ConnectionTracker, FeaturizerConfig, ParseStats, read_frames
from packetclip.featurizer.frames import (
    LATER_FRAGMENT,
    P_DPORT,
    P_DST,
    P_FRAG,
    P_PROTO,
    P_SPORT,
    P_SRC,
    parse_frame,
)
from packetclip.zeek.codec import (
    DATA_TYPE,
    CodecError,
    Count,
    Event,
    Port,
    decode,
    encode_event_message,
    event_of,
)

log = logging.getLogger(__name__)

PATH = "/v1/messages/json"
APPLICATION_NAME = re.compile(r"^[-/_.=:*@a-zA-Z0-9]+$")
DESERIALIZATION_FAILED = "deserialization_failed"
# Declared events of the packetclip Zeek package: name -> Broker types of the arguments, in order.
PACKETCLIP_EVENTS: dict[str, tuple[str, ...]] = {
    "PacketCLIP::request": (
        "string",
        "string",
        "address",
        "port",
        "address",
        "port",
        "count",
        "vector<real>",
        "vector<boolean>",
        "vector<string>",
    ),
    "PacketCLIP::verdict": ("string", "string", "string", "real", "string", "string"),
    "PacketCLIP::mission_scores": ("string", "vector<string>", "vector<real>"),
    "PacketCLIP::allowed": ("string", "string"),
    "PacketCLIP::hello": ("string", "string"),
}
_ZEEK_ESCAPES = {
    ord("\\"): b"\\\\",
    ord('"'): b'\\"',
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
    0x0B: b"\\v",
}


# --- Zeek's JSON encoder ------------------------------------------------------------------------------------


def zeek_json(value: Any) -> bytes:
    """JSON as Zeek's encoder writes it: strings escape only \\\\ \\b \\f \\n \\r \\t \\v and the quote, every
    other byte is copied raw; `bytes` values stand for Zeek strings holding arbitrary bytes."""
    if isinstance(value, dict):
        return b"{" + b",".join(zeek_json(str(k)) + b":" + zeek_json(v) for k, v in value.items()) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(zeek_json(v) for v in value) + b"]"
    if isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out = bytearray(b'"')
        for byte in raw:
            escaped = _ZEEK_ESCAPES.get(byte)
            if escaped is None:
                out.append(byte)
            else:
                out += escaped
        out += b'"'
        return bytes(out)
    return json.dumps(value).encode()


def event_message(topic: str, event: Event) -> bytes:
    return zeek_json(encode_event_message(topic, event))


# --- argument types ---------------------------------------------------------------------------------------


def broker_type(value: Any) -> str:
    """The Broker type name of a decoded value, vectors as vector<element type> when homogeneous."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Count):
        return "count"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Port):
        return "port"
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return "address"
    if isinstance(value, list):
        kinds = {broker_type(v) for v in value}
        return f"vector<{kinds.pop()}>" if len(kinds) == 1 else "vector"
    return type(value).__name__


def matches(signature: tuple[str, ...], args: list[Any]) -> bool:
    """True when every argument has exactly the declared type (an empty vector fits any element type)."""
    return len(signature) == len(args) and all(_fits(t, v) for t, v in zip(signature, args, strict=True))


def _fits(expected: str, value: Any) -> bool:
    if expected.startswith("vector<") and isinstance(value, list):
        element = expected[len("vector<") : -1]
        return all(broker_type(item) == element for item in value)
    return broker_type(value) == expected


# --- the endpoint ---------------------------------------------------------------------------------------------


@dataclass
class PeerOptions:
    """How the peer behaves; the defaults are Zeek 8.0.10's."""

    version: str = "8.0.10"  # sent in the ack
    metadata: bool = False  # True: three-element events with an empty metadata vector (newer Zeek 8)
    reject_unicode_escapes: bool = False  # True: refuse \\uXXXX from clients, as Zeek <= 7 does
    ping_interval: float | None = 5.0  # Zeek's default
    events: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PACKETCLIP_EVENTS))
    ssl: ssl.SSLContext | None = None  # a server context: TLS (wss://)
    token: str | None = None  # a handshake without `Authorization: Bearer <token>` is answered 401


@dataclass
class _Client:
    connection: ServerConnection
    subscriptions: list[str]
    application_name: str
    endpoint: str


@dataclass
class Received:
    """An event delivered to the peer's own script subscriptions."""

    topic: str
    event: Event
    client: str  # the publishing client's application name


class ZeekPeer:
    """Zeek's endpoint on 127.0.0.1 (see the module docstring). Use `async with ZeekPeer(...) as peer`."""

    def __init__(self, options: PeerOptions | None = None, port: int = 0):
        self.options = options or PeerOptions()
        self.port = port
        self.node_id = str(uuid.uuid4())
        self.clients: list[_Client] = []
        self.script_subscriptions: list[str] = []  # what the emulated scripts subscribed to
        self.received: list[Received] = []  # events the scripts handled
        self.type_errors: list[str] = []  # events dropped for argument types (Zeek logs them)
        self.errors_sent: list[dict[str, str]] = []
        self.handshakes: list[str] = []  # application names, in order of acks
        self.request_headers: list[Headers] = []  # every handshake request's headers, refused ones included
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        self._server: Server | None = None

    @property
    def url(self) -> str:
        scheme = "ws" if self.options.ssl is None else "wss"
        return f"{scheme}://127.0.0.1:{self.port}{PATH}"

    async def __aenter__(self) -> ZeekPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            ping_interval=self.options.ping_interval,
            compression=None,
            max_size=None,
            max_queue=None,  # no flow control of its own: pause_reading alone stops the reading
            ssl=self.options.ssl,
            process_request=self._check_request,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Zeek going away: every client connection closes (1001)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.clients.clear()

    async def drop_clients(self) -> None:
        """Close every client connection (1001) and keep listening: Zeek dropping a client, e.g. one that missed
        its pings; the client reconnects to the same Zeek."""
        for client in list(self.clients):
            await client.connection.close(1001, "going away")

    def pause_reading(self) -> None:
        """Stop reading the connected clients' sockets (a stalled Zeek); `resume_reading` or `abort_clients`
        ends it."""
        for client in self.clients:
            client.connection.transport.pause_reading()

    def resume_reading(self) -> None:
        for client in self.clients:
            client.connection.transport.resume_reading()

    def abort_clients(self) -> None:
        """Reset every client connection at once (RST: linger 0), losing what is buffered on either side."""
        for client in list(self.clients):
            transport = client.connection.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.clients.clear()

    async def restart(self, downtime: float = 0.2) -> None:
        """Stop, wait, listen again on the same port (a Zeek restart)."""
        await self.stop()
        await asyncio.sleep(downtime)
        await self.start()

    # --- one client -------------------------------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.request_headers.append(request.headers)
        wanted = None if self.options.token is None else f"Bearer {self.options.token}"
        if wanted is not None and request.headers.get("Authorization") != wanted:
            return connection.respond(401, "a bearer token is required\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        if request.path != PATH:
            await self._refuse(connection, "invalid_uri", "Invalid URI - use /v1/messages/json")
            return
        name = request.headers.get("X-Application-Name", "unknown")
        if not APPLICATION_NAME.match(name):
            await self._refuse(connection, "invalid_application_name", "Invalid X-Application-Name")
            return
        try:
            client = await self._subscribe(connection, name)
            if client is None:
                await connection.wait_closed()  # no ack: Zeek queues the client's messages forever
                return
            self.clients.append(client)
            try:
                async for message in connection:
                    await self._from_client(client, message)
            finally:
                if client in self.clients:
                    self.clients.remove(client)
        except ConnectionClosed:
            return

    async def _refuse(self, connection: ServerConnection, code: str, context: str) -> None:
        await self._send_error(connection, code, context)
        await connection.close(1008, context)

    async def _send_error(self, connection: ServerConnection, code: str, context: str) -> None:
        error = {"type": "error", "code": code, "context": context}
        self.errors_sent.append(error)
        await connection.send(zeek_json(error), text=True)

    async def _subscribe(self, connection: ServerConnection, name: str) -> _Client | None:
        first = await connection.recv()
        try:
            topics = json.loads(first)
        except ValueError:
            topics = None
        if not isinstance(topics, list):
            await self._send_error(connection, DESERIALIZATION_FAILED, "subscriptions not an array")
            return None
        if not all(isinstance(topic, str) for topic in topics):
            await self._send_error(connection, DESERIALIZATION_FAILED, "individual subscription not a string")
            return None
        endpoint = f"{self.node_id}-websocket-{next(self._ids)}"
        await connection.send(
            zeek_json({"type": "ack", "endpoint": endpoint, "version": self.options.version})
        )
        self.handshakes.append(name)
        return _Client(connection, topics, name, endpoint)

    async def _from_client(self, client: _Client, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if self.options.reject_unicode_escapes and "\\u" in text:
            await self._send_error(client.connection, DESERIALIZATION_FAILED, "failed to decode JSON object")
            return
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict) or obj.get("type") != "data-message":
                raise CodecError("not a data message")
            if not isinstance(obj.get("topic"), str):
                await self._send_error(
                    client.connection, DESERIALIZATION_FAILED, "no topic in top-level JSON object"
                )
                return
            value = decode({DATA_TYPE: obj.get(DATA_TYPE), "data": obj.get("data")})
            event = event_of(value)
        except (ValueError, CodecError):
            await self._send_error(client.connection, DESERIALIZATION_FAILED, "failed to decode JSON object")
            return
        if event is None or event.name not in self.options.events:
            await self._send_error(client.connection, DESERIALIZATION_FAILED, "failed to create Zeek event")
            return
        await self.publish(obj["topic"], event, origin=client)

    # --- pub/sub -----------------------------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, origin: _Client | None = None) -> int:
        """Deliver an event to every subscriber but its publisher; returns the number of client deliveries."""
        if origin is not None and any(topic.startswith(prefix) for prefix in self.script_subscriptions):
            signature = self.options.events[event.name]
            if matches(signature, event.args):
                async with self._arrived:
                    self.received.append(Received(topic, event, origin.application_name))
                    self._arrived.notify_all()
            else:
                found = ", ".join(broker_type(a) for a in event.args)
                self.type_errors.append(f"{event.name}: expected ({', '.join(signature)}), got ({found})")
                log.warning("dropped %s: argument types do not match", event.name)
        wire = (
            event
            if event.metadata is not None or not self.options.metadata
            else Event(event.name, event.args, [])
        )
        return await self.send_raw(topic, event_message(topic, wire), origin)

    async def send_raw(self, topic: str, payload: bytes, origin: _Client | None = None) -> int:
        delivered = 0
        for client in list(self.clients):
            if client is origin or not any(topic.startswith(prefix) for prefix in client.subscriptions):
                continue
            try:
                await client.connection.send(payload, text=True)
                delivered += 1
            except ConnectionClosed:
                continue
        return delivered

    async def broadcast_raw(self, payload: bytes) -> None:
        """Send arbitrary bytes as a text message to every client (bad-input tests)."""
        for client in list(self.clients):
            await client.connection.send(payload, text=True)

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until predicate(self.received) is true."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: predicate(self.received)), timeout)

    async def wait_clients(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `count` clients are subscribed (at least `count`; exactly none for 0)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.clients) < count or (count == 0 and self.clients):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.clients)} clients subscribed, expected {count}")
            await asyncio.sleep(0.01)

    def events(self, name: str) -> list[Received]:
        return [r for r in self.received if r.event.name == name]


# --- the Zeek scripts' side --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptOptions:
    """The packetclip Zeek package's options that shape requests."""

    max_packets: int = 30  # PacketCLIP::max_packets
    snaplen: int = 192  # PacketCLIP::snaplen (its default): bytes of the frame, link-layer header included
    # PacketCLIP::max_wait (its default) in seconds: a connection is sent this long after its first packet, and no
    # later frame is collected
    max_wait: float = 5.0
    shards: int = 0  # PacketCLIP::shards; 0: the unsharded topic
    node: str | None = None  # the node name; None: the capture's file name (classify's sensor key)


@dataclass
class ScriptRequest:
    """One `PacketCLIP::request` as the scripts publish it."""

    topic: str
    event: Event

    @property
    def uid(self) -> str:
        return str(self.event.args[1])


class FragmentedConnection(ValueError):
    """A connection whose packets include later fragments of a datagram: Zeek hands over one frame per datagram,
    the tracker (and `classify`) every fragment, so no request can carry both views (see the module docstring)."""


def shard_of(orig_h: str, shards: int) -> int:
    """The scripts' shard: the last 32-bit word of the originator address modulo the shard count."""
    return (int(ipaddress.ip_address(orig_h)) & 0xFFFFFFFF) % shards


def requests_from_capture(
    path: Path, options: ScriptOptions | None = None, stats: ParseStats | None = None
) -> Iterator[ScriptRequest]:
    """The requests the scripts publish while Zeek reads `path`, in publication order."""
    options = options or ScriptOptions()
    node = options.node if options.node is not None else path.name
    # the featurizer's window is the scripts' max_wait: in release_full mode the tracker hands a connection over
    # at max_packets frames, when it ends, or when packet time passes first packet + max_wait (the timer)
    config = FeaturizerConfig(max_packets=options.max_packets, window=options.max_wait)
    tracker = ConnectionTracker(config, stats, release_full=True)
    recent: dict[tuple, deque[tuple[float, int, bytes]]] = {}
    # times of later fragments: they name no ports, the tracker attributes them to connections
    later_fragments: set[float] = set()
    for ts, link_type, frame in read_frames(path, stats):
        packet = parse_frame(link_type, frame)
        if len(packet) != 2 and packet[P_FRAG] != LATER_FRAGMENT:
            ends = sorted(((packet[P_SRC], packet[P_SPORT]), (packet[P_DST], packet[P_DPORT])))
            key = (packet[P_PROTO], *ends)
            recent.setdefault(key, deque(maxlen=options.max_packets + 1)).append((ts, link_type, frame))
        elif len(packet) != 2:
            later_fragments.add(ts)
        for connection in _by_first_packet(tracker.add(ts, link_type, frame)):
            yield _request(connection, recent, later_fragments, options, node)
    for connection in _by_first_packet(tracker.flush()):
        yield _request(connection, recent, later_fragments, options, node)


def _by_first_packet(connections: list[Any]) -> list[Any]:
    """Connections that end at the same moment (a timeout sweep, the end of the capture) are published in order of
    their first packet, the order in which `classify` hands such a group to the engine."""
    return sorted(connections, key=lambda connection: connection.ts) if len(connections) > 1 else connections


def _request(
    connection: Any,
    recent: dict[tuple, deque],
    later_fragments: set[float],
    options: ScriptOptions,
    node: str,
) -> ScriptRequest:
    orig, resp = ipaddress.ip_address(connection.orig_h), ipaddress.ip_address(connection.resp_h)
    proto = {"tcp": 6, "udp": 17}.get(connection.proto, 1 if orig.version == 4 else 58)
    ends = sorted(((orig.packed, connection.orig_p), (resp.packed, connection.resp_p)))
    frames = recent.get((proto, *ends), deque())
    wanted = connection.pkt_ts.tolist()
    while frames and frames[0][0] < wanted[0]:
        frames.popleft()  # the tail of an earlier connection on the same 5-tuple
    # the tracker kept the frames of the 5-tuple from its first packet on, up to max_packets, none later than
    # max_wait after the first (a frame past it, or of a next connection, stays for the next request)
    taken = [frames.popleft() for _ in range(min(len(wanted), len(frames)))]
    if [ts for ts, _, _ in taken] != wanted or max(wanted) - wanted[0] > options.max_wait:
        if later_fragments.intersection(wanted):
            raise FragmentedConnection(f"{connection.uid}: its packets include later fragments of a datagram")
        raise AssertionError(f"{connection.uid}: frames of the 5-tuple do not match the tracker's packets")
    protocol = connection.proto if connection.proto in ("tcp", "udp") else "icmp"
    args = [
        node,
        connection.uid,
        orig,
        Port(connection.orig_p, protocol),
        resp,
        Port(connection.resp_p, protocol),
        Count(taken[0][1]),
        [float(ts) for ts, _, _ in taken],
        [bool(d) for d in connection.pkt_dir.tolist()],
        [base64.b64encode(frame[: options.snaplen]).decode() for _, _, frame in taken],
    ]
    topic = "packetclip/request/"
    if options.shards:
        topic += f"{shard_of(connection.orig_h, options.shards)}/"
    return ScriptRequest(topic, Event("PacketCLIP::request", args))
