"""A client of Zeek's WebSocket API (Broker v1 JSON): one connection at a time, and the backoff between them.

Owns the handshake (the JSON array of topic prefixes first, then the endpoint's ack), the `X-Application-Name`
header, the connection's credentials (`Credentials`: the TLS context built from a CA file and a client certificate,
and a bearer token read from a file), publishing events with the exact JSON Zeek accepts, reading raw messages, and `Backoff` (exponential,
capped, with full jitter) for reconnects. It does not decide what to subscribe to or what to do with a message
(`service`), and it does not reconnect by itself: the service's loop owns that, so that queued work survives a
reconnect.

Choices that follow Zeek's endpoint (docs/zeek.md):
- messages are sent with `ensure_ascii=False`: Zeek <= 7 rejects `\\uXXXX` escapes from clients;
- messages are read as bytes (`decode=False`): Zeek's encoder copies raw bytes into strings, and a text frame
  that is not UTF-8 must be one bad message for the service to count, not a failed connection;
- the endpoint pings; `websockets` answers pings on its own while the service's loop runs;
- no permessage-deflate: the messages are small and the sidecar's core is better spent classifying.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from packetclip.zeek.codec import Ack, CodecError, ErrorMessage, Event, decode_message, encode_event_message

log = logging.getLogger(__name__)

APPLICATION_NAME = re.compile(r"^[-/_.=:*@a-zA-Z0-9]+$")  # what Zeek 8 accepts in X-Application-Name
MESSAGE_TOO_BIG = 1009  # the close code websockets sends for a message over max_size
CONNECT_ERRORS = (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, asyncio.TimeoutError)


TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: safe in an HTTP header value


class HandshakeError(RuntimeError):
    """The endpoint did not acknowledge the subscription (it sent an error, something else, or nothing)."""


@dataclass
class Backoff:
    """Delays between reconnect attempts: `initial` doubling up to `maximum`, each drawn uniformly from
    [0, that bound] (full jitter: many sidecars restarted together do not reconnect in lockstep)."""

    initial: float = 0.5  # seconds; the first retry comes quickly, a Zeek restart takes a few seconds
    maximum: float = 30.0  # seconds; a sensor down for long is retried at least this often
    attempts: int = 0

    def next_delay(self, rng: random.Random | None = None) -> float:
        bound = min(self.maximum, self.initial * (2**self.attempts))
        self.attempts += 1
        return (rng or random).uniform(0.0, bound)

    def reset(self) -> None:
        self.attempts = 0


class CredentialsError(ValueError):
    """A TLS or token file is missing, unreadable or unusable; the message names the file."""


@dataclass(frozen=True)
class Credentials:
    """What the sidecar presents and trusts when it connects; built once at start by `load_credentials`."""

    # None: websockets' default for wss:// (the system's CAs, or SSL_CERT_FILE's); ignored for ws://
    ssl: ssl.SSLContext | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # added to the WebSocket handshake request


def load_credentials(
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    token_file: str | None = None,
) -> Credentials:
    """The TLS context (`tls_ca`: the only CAs trusted for Zeek's certificate; `tls_cert` + `tls_key`: the client
    certificate for mutual TLS) and the `Authorization: Bearer` header (`token_file`: the token, surrounding
    whitespace ignored). Raises `CredentialsError` for a file that cannot be read or used."""
    context = None
    if tls_ca is not None or tls_cert is not None:
        try:
            context = ssl.create_default_context(cafile=tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(f"tls_ca {tls_ca}: cannot load the CA file ({_reason(exc)})") from None
        if tls_cert is not None:
            try:
                # an encrypted key would make OpenSSL prompt on the terminal: a service has no one to answer
                context.load_cert_chain(tls_cert, tls_key, password=_no_password)
            except (OSError, ssl.SSLError, CredentialsError) as exc:
                raise CredentialsError(
                    f"tls_cert {tls_cert} / tls_key {tls_key}: cannot load the client certificate ({_reason(exc)})"
                ) from None
    headers: dict[str, str] = {}
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"token_file {token_file}: cannot read it ({_reason(exc)})") from None
        if not TOKEN.match(token):
            raise CredentialsError(
                f"token_file {token_file}: the token must be one word of printable ASCII (it goes in a header)"
            )
        headers["Authorization"] = f"Bearer {token}"
    return Credentials(context, headers)


def _no_password() -> bytes:
    raise CredentialsError("the key is encrypted; give an unencrypted key readable only by the service")


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or str(exc)


class ZeekSession:
    """One acknowledged connection to Zeek's endpoint."""

    def __init__(self, websocket: ClientConnection, ack: Ack):
        self.websocket = websocket
        self.ack = ack

    async def receive(self) -> bytes:
        """The next message's raw bytes; raises `ConnectionClosed` when the connection ends."""
        message = await self.websocket.recv(decode=False)
        return message if isinstance(message, bytes) else message.encode()

    async def publish(self, topic: str, event: Event) -> None:
        await self.send_text(event_text(topic, event))

    async def send_text(self, text: str) -> None:
        await self.websocket.send(text)

    async def ping(self) -> Awaitable[float]:
        """Write a ping after everything sent so far; the awaitable completes when Zeek's pong arrives (which
        proves Zeek's endpoint has read every earlier message: the stream is ordered)."""
        return await self.websocket.ping()

    async def close(self) -> None:
        await self.websocket.close()


def closed_for_size(exc: BaseException | None) -> bool:
    """True when `exc` ended a connection because a message from Zeek exceeded `max_message_bytes` (websockets
    closes it with code 1009 itself)."""
    return isinstance(exc, ConnectionClosed) and exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG


def event_text(topic: str, event: Event) -> str:
    """The JSON text of a data message carrying `event`, as the endpoint accepts it."""
    return json.dumps(encode_event_message(topic, event), ensure_ascii=False, separators=(",", ":"))


CLOSE_TIMEOUT = 2.0  # seconds


async def open_session(
    url: str,
    topics: Sequence[str],
    application_name: str,
    *,
    max_message_bytes: int = 4 * 1024 * 1024,
    ping_interval: float | None = 20.0,
    open_timeout: float = 10.0,
    credentials: Credentials | None = None,
) -> ZeekSession:
    """Connect, subscribe to `topics` (prefixes) and wait for the ack. Errors: `HandshakeError` and the
    connection errors in `CONNECT_ERRORS` (a certificate Zeek's side refuses, or one of Zeek's that does not
    verify, is an `ssl.SSLError`, an `OSError`)."""
    if not APPLICATION_NAME.match(application_name):
        raise ValueError(f"application name {application_name!r} does not match {APPLICATION_NAME.pattern}")
    credentials = credentials or Credentials()
    options: dict[str, Any] = {
        "additional_headers": {**credentials.headers, "X-Application-Name": application_name},
        "compression": None,
        "max_size": max_message_bytes,
        "ping_interval": ping_interval,
        "open_timeout": open_timeout,
        # how long a close waits for Zeek's answer (websockets waits 10 s by default): a stop must fit in the
        # service's TimeoutStopSec (15 s) after drain_timeout (5 s)
        "close_timeout": CLOSE_TIMEOUT,
        "proxy": None,  # the endpoint is local or on the sensor's network: never an HTTP proxy's business
    }
    if credentials.ssl is not None:
        options["ssl"] = credentials.ssl
    websocket = await connect(url, **options)
    try:
        await websocket.send(json.dumps(list(topics), ensure_ascii=False))
        raw = await asyncio.wait_for(websocket.recv(decode=False), open_timeout)
        ack = _ack_of(raw)
    except BaseException:
        await websocket.close()
        raise
    log.info("subscribed to %s at %s (endpoint %s, version %s)", list(topics), url, ack.endpoint, ack.version)
    return ZeekSession(websocket, ack)


def _ack_of(raw: str | bytes) -> Ack:
    try:
        message = decode_message(json.loads(raw))
    except (ValueError, CodecError, RecursionError) as exc:
        raise HandshakeError(
            f"expected an ack to the subscription, got an unreadable message ({exc})"
        ) from None
    if isinstance(message, ErrorMessage):
        raise HandshakeError(f"subscription refused: {message.code}: {message.context}")
    if not isinstance(message, Ack):
        raise HandshakeError(f"expected an ack to the subscription, got {type(message).__name__}")
    return message
