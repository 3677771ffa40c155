"""Settings of the live Zeek sidecar (`packetclip serve`) and the `[serve]` table of the config file.

Owns `ServeSettings` (every knob of the serve loop, with why it exists and its default) and reading the `[serve]`
table of the TOML file `packetclip.config` finds. Model store, threads and batch size stay the runtime's settings
(`packetclip.config`); only what is particular to the Zeek sidecar lives here. Precedence is the runtime's:
command-line flag > config file > default. It does not connect anywhere or run anything.

    [serve]
    zeek = "ws://127.0.0.1:27759/v1/messages/json"
    name = "packetclip-sidecar"
    shard = 0                  # omit for the unsharded topic
    shards = 4                 # the Zeek scripts' PacketCLIP::num_shards (1 when unsharded)
    max_queue = 10000
    max_wait = 5.0             # the Zeek scripts' PacketCLIP::max_wait, in seconds
    metrics_port = 9273
    log_format = "json"        # or "text"
    # zeek = "wss://sensor:27759/v1/messages/json"  # the tls_* keys need a wss:// URL
    tls_ca = "/etc/packetclip/zeek-ca.pem"        # wss:// only; trust these CAs alone for Zeek's certificate
    tls_cert = "/etc/packetclip/sidecar.pem"      # wss:// only; a client certificate (mutual TLS), with tls_key
    tls_key = "/etc/packetclip/sidecar.key"
    token_file = "/etc/packetclip/zeek-token"     # sent as `Authorization: Bearer <token>` in the handshake

An unknown key or a value of the wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packetclip.config import ConfigError, read_command_table
from packetclip.zeek.client import APPLICATION_NAME

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://127.0.0.1:27759/v1/messages/json"
TABLE = "serve"


@dataclass(frozen=True)
class ServeSettings:
    """Everything the serve loop needs besides the engine."""

    zeek: str = DEFAULT_URL  # Zeek's WebSocket endpoint (8.1+ standalone default; 9997 before 7.2)
    name: str = "packetclip-sidecar"  # sent in X-Application-Name and as hello's `sidecar` argument
    shard: int | None = None  # None: the unsharded request topic; N: packetclip/request/N/
    # how many sidecars the Zeek scripts split requests over by originator (PacketCLIP::num_shards): each sees
    # about 1/N of a victim's sources, so the reasoner's responder counts and rates are scaled by N
    shards: int = 1
    batch_size: int = 256  # most requests per engine call; fewer when fewer are waiting (no lingering)
    max_queue: int = (
        10_000  # requests waiting for the engine; above it the newest is refused (answered "error")
    )
    # first-packet order (packetclip.zeek.reorder): the Zeek scripts' PacketCLIP::max_wait (5 s, its default:
    # the default training recipe's featurizer window) in seconds, at least Zeek's (a larger value only adds
    # latency); a request waits until its node has sent a frame max_wait + order_slack newer than its first
    # packet, or order_hold seconds (default max_wait + order_slack) after it arrived; at most max_held wait
    # (beyond that the earliest leave, counted)
    max_wait: float = 5.0
    order_slack: float = 0.5  # Zeek's timers fire late under load (at most 300 per packet) and packets queue
    order_hold: float | None = None  # None: max_wait + order_slack; 0: arrival order, nothing waits
    max_held: int = 20_000  # ~8 KB each (30 frames of 192 bytes): ~160 MB at most
    max_outbox: int = 50_000  # messages waiting for the socket (e.g. while Zeek restarts); above it dropped
    max_frames: int = 256  # frames per request; Zeek sends max_packets (30): more is a broken or hostile peer
    max_frame_bytes: int = 65_535  # decoded bytes per frame; Zeek sends snaplen bytes, never a jumbo frame
    max_message_bytes: int = 4 * 1024 * 1024  # one WebSocket message; larger ones close the connection
    reconnect_initial: float = 0.5  # seconds before the first reconnect attempt (then doubling, jittered)
    reconnect_max: float = 30.0  # seconds; cap of the reconnect delay
    ping_interval: float | None = 20.0  # our pings to Zeek; Zeek pings us too, websockets answers them
    drain_timeout: float = 5.0  # seconds to finish queued requests and send their verdicts on shutdown
    metrics_host: str = "127.0.0.1"  # Prometheus scrape address; metrics are not for the world
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port (tests)
    log_format: str = "text"  # "json": one JSON object per log line, for journald/log shippers
    # wss:// only. None: the system's CAs (or SSL_CERT_FILE's); a file: these CAs alone verify Zeek's certificate
    tls_ca: str | None = None
    tls_cert: str | None = None  # a client certificate, for an endpoint that requires one (mutual TLS)
    tls_key: str | None = None  # tls_cert's private key, unencrypted (a service cannot type a passphrase)
    # a file holding a token sent as `Authorization: Bearer <token>` on the handshake (for a proxy in front of
    # Zeek's endpoint, which has no authentication of its own); a file keeps it off the command line
    token_file: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "max_queue",
            "max_outbox",
            "max_frames",
            "max_frame_bytes",
            "max_message_bytes",
            "max_held",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve setting {name} must be positive, got {getattr(self, name)}")
        for name in ("max_wait", "order_slack", "order_hold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < float("inf"):
                raise ConfigError(f"serve setting {name} must be a number of seconds >= 0, got {value}")
        if self.shard is not None and self.shard < 0:
            raise ConfigError(f"serve setting shard must be >= 0, got {self.shard}")
        if self.shards < 1 or (self.shard is not None and self.shards > 1 and self.shard >= self.shards):
            raise ConfigError(
                f"serve settings: shard {self.shard} of {self.shards} shards (shards must be >= 1)"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"serve setting log_format must be 'text' or 'json', got {self.log_format!r}")
        if not APPLICATION_NAME.match(self.name):
            raise ConfigError(
                f"serve setting name {self.name!r} must match {APPLICATION_NAME.pattern} (Zeek's rule)"
            )
        if not self.zeek.startswith(("ws://", "wss://")):
            raise ConfigError(f"serve setting zeek must be a ws:// or wss:// URL, got {self.zeek!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "serve settings tls_cert and tls_key go together (a certificate and its private key)"
            )
        tls = [name for name in ("tls_ca", "tls_cert", "tls_key") if getattr(self, name) is not None]
        if tls and not self.zeek.startswith("wss://"):
            raise ConfigError(f"serve settings {', '.join(tls)} need a wss:// URL, got {self.zeek!r}")
        url = urlsplit(self.zeek)
        try:
            url.port  # noqa: B018 (the property checks the port's range)
        except ValueError:
            raise ConfigError(
                f"serve setting zeek: the port of {self.zeek!r} is not a number in 0-65535"
            ) from None
        if not url.hostname:
            raise ConfigError(f"serve setting zeek: {self.zeek!r} names no host")

    @property
    def hold_limit(self) -> float:
        """Seconds a request may wait for first-packet order after it arrived."""
        return self.max_wait + self.order_slack if self.order_hold is None else self.order_hold

    def updated(self, **values: Any) -> ServeSettings:
        """A copy with the values that are not None (command-line flags not given are None)."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})


_TYPES: dict[str, tuple[type, ...]] = {
    field.name: (
        (int,)
        if field.type in ("int", "int | None")
        else (float, int)
        if field.type in ("float", "float | None")
        else (str,)
    )
    for field in fields(ServeSettings)
}


def read_serve_table(path: Path | None) -> dict[str, Any]:
    """The checked `[serve]` table of the config file (empty when there is no file or no table)."""
    return read_command_table(path, TABLE, _TYPES)


def serve_settings(config_file: Path | None, **flags: Any) -> ServeSettings:
    """Defaults < the config file's `[serve]` table < flags (None = flag not given)."""
    return ServeSettings(**read_serve_table(config_file)).updated(**flags)
