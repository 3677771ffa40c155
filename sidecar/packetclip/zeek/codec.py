"""Zeek's Broker WebSocket data model (v1 JSON), both ways, with strict validation.

Owns the mapping between Python values and `{"@data-type": T, "data": V}` objects, and the message envelopes
(ack, error, data-message carrying an event). It does not open sockets (`client`) or know which events the
sidecar handles (`service`).

Python side, one type per Broker type so that encoding is never a guess:

    ======================  ==============================  =============================================
    Broker type             Python value (decoded)          also encoded from
    ======================  ==============================  =============================================
    none                    None
    boolean                 bool
    count                   Count (an int >= 0, < 2**64)
    integer                 Integer (an int within int64)   a plain int
    real                    float (finite)
    timespan                Timespan (nanoseconds)          datetime.timedelta
    timestamp               datetime (UTC, aware)
    string                  str
    enum-value              Enum (the value's name)
    address                 IPv4Address / IPv6Address
    subnet                  IPv4Network / IPv6Network
    port                    Port (number, protocol)
    vector                  list (tuple inside set elements and table keys, to stay hashable)
    set                     frozenset                       set
    table                   dict
    ======================  ==============================  =============================================

Records travel as vectors, positionally. Every decoding error is a `CodecError` whose message names the path of
the offending value (e.g. ``event PacketCLIP::request argument 7 (ts)[3]``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DATA_TYPE = "@data-type"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
COUNT_MAX = 2**64 - 1
PORT_PROTOCOLS = ("tcp", "udp", "icmp", "?")  # "?": Broker's unknown transport protocol
TIMESPAN_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "min": 60 * 10**9, "h": 3600 * 10**9}
TIMESPAN_UNITS_NS["d"] = 24 * TIMESPAN_UNITS_NS["h"]
_TIMESPAN = re.compile(r"^(-?\d+(?:\.\d+)?)(ns|us|ms|s|min|h|d)$")
# Broker writes "YYYY-MM-DDTHH:MM:SS.mmm"; a client may send more or fewer fractional digits or none.
_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")
_PORT = re.compile(r"^(\d{1,5})/(tcp|udp|icmp|\?)$")
EVENT_FORMAT_VERSION = 1  # the first element of an event's vector
EVENT_MESSAGE_TYPE = 1  # the second: 1 = event


class CodecError(ValueError):
    """A value or message that does not follow the v1 data model; the message names where."""


class Count(int):
    """A Broker `count`: a non-negative 64-bit integer."""

    def __new__(cls, value: int) -> Count:
        if isinstance(value, bool) or not 0 <= int(value) <= COUNT_MAX:
            raise CodecError(f"count out of range: {value!r}")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Count({int(self)})"


class Integer(int):
    """A Broker `integer`: a signed 64-bit integer."""

    def __new__(cls, value: int) -> Integer:
        if isinstance(value, bool) or not INT64_MIN <= int(value) <= INT64_MAX:
            raise CodecError(f"integer out of range: {value!r}")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Integer({int(self)})"


@dataclass(frozen=True)
class Timespan:
    """A Broker `timespan`, kept in nanoseconds (its resolution)."""

    nanoseconds: int

    @classmethod
    def from_seconds(cls, seconds: float) -> Timespan:
        return cls(round(seconds * 10**9))

    @property
    def seconds(self) -> float:
        return self.nanoseconds / 10**9


@dataclass(frozen=True)
class Enum:
    """A Broker `enum-value`, e.g. Enum("Notice::ACTION_LOG")."""

    name: str


@dataclass(frozen=True)
class Port:
    """A Broker `port`: number and transport protocol ("tcp", "udp", "icmp" or "?")."""

    number: int
    protocol: str

    def __post_init__(self) -> None:
        if isinstance(self.number, bool) or not isinstance(self.number, int) or not 0 <= self.number <= 65535:
            raise CodecError(f"port number out of range: {self.number!r}")
        if self.protocol not in PORT_PROTOCOLS:
            raise CodecError(f"port protocol must be one of {PORT_PROTOCOLS}, got {self.protocol!r}")

    def __str__(self) -> str:
        return f"{self.number}/{self.protocol}"


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- values -------------------------------------------------------------------------------------------------


def encode(value: Any, where: str = "value") -> dict[str, Any]:
    """The `{"@data-type", "data"}` object of a Python value (see the module docstring's table)."""
    if value is None:
        return {DATA_TYPE: "none", "data": {}}
    if isinstance(value, bool):
        return {DATA_TYPE: "boolean", "data": value}
    if isinstance(value, Count):
        return {DATA_TYPE: "count", "data": int(value)}
    if isinstance(value, int):
        return {DATA_TYPE: "integer", "data": int(Integer(value))}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError(f"{where}: a real must be finite, got {value!r}")
        return {DATA_TYPE: "real", "data": value}
    if isinstance(value, str):
        return {DATA_TYPE: "string", "data": value}
    if isinstance(value, Timespan | timedelta):
        return {DATA_TYPE: "timespan", "data": format_timespan(value)}
    if isinstance(value, datetime):
        return {DATA_TYPE: "timestamp", "data": format_timestamp(value)}
    if isinstance(value, Enum):
        return {DATA_TYPE: "enum-value", "data": value.name}
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return {DATA_TYPE: "address", "data": str(value)}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return {DATA_TYPE: "subnet", "data": str(value)}
    if isinstance(value, Port):
        return {DATA_TYPE: "port", "data": str(value)}
    if isinstance(value, list | tuple):
        return {DATA_TYPE: "vector", "data": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, set | frozenset):
        return {DATA_TYPE: "set", "data": [encode(v, f"{where}{{}}") for v in value]}
    if isinstance(value, dict):
        return {
            DATA_TYPE: "table",
            "data": [
                {"key": encode(k, f"{where}.key"), "value": encode(v, f"{where}[{k!r}]")}
                for k, v in value.items()
            ],
        }
    raise CodecError(f"{where}: no Broker type for Python {type(value).__name__}")


def decode(obj: Any, where: str = "value", hashable: bool = False) -> Any:
    """The Python value of a `{"@data-type", "data"}` object; `hashable` turns vectors into tuples (set
    elements and table keys)."""
    if not isinstance(obj, dict):
        raise CodecError(f"{where}: expected an object with {DATA_TYPE!r}, got {type(obj).__name__}")
    kind = obj.get(DATA_TYPE)
    if "data" not in obj or not isinstance(kind, str):
        raise CodecError(f"{where}: an object needs {DATA_TYPE!r} (a string) and 'data'")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise CodecError(f"{where}: unknown {DATA_TYPE} {kind!r}")
    return decoder(obj["data"], where, hashable)


def _expect(data: Any, types: type | tuple[type, ...], kind: str, where: str) -> None:
    if isinstance(data, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CodecError(f"{where}: {kind} data must be {_names(types)}, got bool")
    if not isinstance(data, types):
        raise CodecError(f"{where}: {kind} data must be {_names(types)}, got {type(data).__name__} {data!r}")


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def _decode_none(data: Any, where: str, hashable: bool) -> None:
    if data != {}:
        raise CodecError(f"{where}: none data must be {{}}, got {data!r}")
    return None


def _decode_boolean(data: Any, where: str, hashable: bool) -> bool:
    if not isinstance(data, bool):
        raise CodecError(f"{where}: boolean data must be true or false, got {data!r}")
    return data


def _decode_count(data: Any, where: str, hashable: bool) -> Count:
    _expect(data, int, "count", where)  # a JSON number with a decimal point is a float: refused
    if not 0 <= data <= COUNT_MAX:
        raise CodecError(f"{where}: count out of range: {data}")
    return Count(data)


def _decode_integer(data: Any, where: str, hashable: bool) -> Integer:
    _expect(data, int, "integer", where)
    if not INT64_MIN <= data <= INT64_MAX:
        raise CodecError(f"{where}: integer out of range: {data}")
    return Integer(data)


def _decode_real(data: Any, where: str, hashable: bool) -> float:
    _expect(data, (int, float), "real", where)  # an integral real may be written without a decimal point
    value = float(data)
    if not math.isfinite(value):
        raise CodecError(f"{where}: real must be finite, got {data!r}")
    return value


def _decode_string(data: Any, where: str, hashable: bool) -> str:
    _expect(data, str, "string", where)
    return str(data)


def _decode_timespan(data: Any, where: str, hashable: bool) -> Timespan:
    _expect(data, str, "timespan", where)
    return parse_timespan(data, where)


def _decode_timestamp(data: Any, where: str, hashable: bool) -> datetime:
    _expect(data, str, "timestamp", where)
    return parse_timestamp(data, where)


def _decode_enum(data: Any, where: str, hashable: bool) -> Enum:
    _expect(data, str, "enum-value", where)
    if not data:
        raise CodecError(f"{where}: empty enum-value")
    return Enum(data)


def _decode_address(data: Any, where: str, hashable: bool) -> Address:
    _expect(data, str, "address", where)
    try:
        return ipaddress.ip_address(data)
    except ValueError:
        raise CodecError(f"{where}: not an IPv4 or IPv6 address: {data!r}") from None


def _decode_subnet(data: Any, where: str, hashable: bool) -> Subnet:
    _expect(data, str, "subnet", where)
    if "/" not in data:
        raise CodecError(f"{where}: a subnet needs a prefix length: {data!r}")
    try:
        return ipaddress.ip_network(data, strict=False)
    except ValueError:
        raise CodecError(f"{where}: not a subnet: {data!r}") from None


def _decode_port(data: Any, where: str, hashable: bool) -> Port:
    _expect(data, str, "port", where)
    match = _PORT.match(data)
    if match is None or int(match.group(1)) > 65535:
        raise CodecError(f"{where}: a port is NUMBER/tcp|udp|icmp|?, got {data!r}")
    return Port(int(match.group(1)), match.group(2))


def _decode_vector(data: Any, where: str, hashable: bool) -> list[Any] | tuple[Any, ...]:
    _expect(data, list, "vector", where)
    items = [decode(item, f"{where}[{i}]", hashable) for i, item in enumerate(data)]
    return tuple(items) if hashable else items


def _decode_set(data: Any, where: str, hashable: bool) -> frozenset[Any]:
    _expect(data, list, "set", where)
    try:
        return frozenset(decode(item, f"{where}{{{i}}}", True) for i, item in enumerate(data))
    except TypeError as exc:  # a table inside a set
        raise CodecError(f"{where}: set element is not hashable ({exc})") from None


def _decode_table(data: Any, where: str, hashable: bool) -> dict[Any, Any]:
    _expect(data, list, "table", where)
    table: dict[Any, Any] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or set(entry) != {"key", "value"}:
            raise CodecError(f"{where}[{i}]: a table entry is an object with exactly 'key' and 'value'")
        key = decode(entry["key"], f"{where}[{i}].key", True)
        try:
            table[key] = decode(entry["value"], f"{where}[{i}].value", hashable)
        except TypeError as exc:
            raise CodecError(f"{where}[{i}].key is not hashable ({exc})") from None
    return table


_DECODERS = {
    "none": _decode_none,
    "boolean": _decode_boolean,
    "count": _decode_count,
    "integer": _decode_integer,
    "real": _decode_real,
    "timespan": _decode_timespan,
    "timestamp": _decode_timestamp,
    "string": _decode_string,
    "enum-value": _decode_enum,
    "address": _decode_address,
    "subnet": _decode_subnet,
    "port": _decode_port,
    "vector": _decode_vector,
    "set": _decode_set,
    "table": _decode_table,
}
DATA_TYPES = tuple(_DECODERS)


def format_timespan(value: Timespan | timedelta) -> str:
    """An integer count of the largest unit that represents the span exactly, e.g. "1500ms", "2min"."""
    if isinstance(value, timedelta):
        nanoseconds = (value // timedelta(microseconds=1)) * 1_000
    else:
        nanoseconds = value.nanoseconds
    for unit in ("d", "h", "min", "s", "ms", "us"):
        scale = TIMESPAN_UNITS_NS[unit]
        if nanoseconds % scale == 0 and nanoseconds != 0:
            return f"{nanoseconds // scale}{unit}"
    return f"{nanoseconds}ns"


def parse_timespan(text: str, where: str = "timespan") -> Timespan:
    match = _TIMESPAN.match(text)
    if match is None:
        raise CodecError(f"{where}: a timespan is NUMBER followed by ns|us|ms|s|min|h|d, got {text!r}")
    number, unit = match.groups()
    scale = TIMESPAN_UNITS_NS[unit]
    if "." in number:
        whole, fraction = number.split(".")
        sign = -1 if whole.startswith("-") else 1
        nanos = abs(int(whole)) * scale + round(int(fraction) * scale / 10 ** len(fraction))
        return Timespan(sign * nanos)
    return Timespan(int(number) * scale)


def format_timestamp(value: datetime) -> str:
    """UTC with millisecond resolution, as Broker writes it (naive datetimes are taken as UTC)."""
    utc = value.astimezone(UTC) if value.tzinfo is not None else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def parse_timestamp(text: str, where: str = "timestamp") -> datetime:
    match = _TIMESTAMP.match(text)
    if match is None:
        raise CodecError(f"{where}: a timestamp is YYYY-MM-DDTHH:MM:SS[.fff] (UTC), got {text!r}")
    year, month, day, hour, minute, second, fraction = match.groups()
    micro = int((fraction or "0").ljust(9, "0")[:6])
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC
        )
    except ValueError as exc:
        raise CodecError(f"{where}: {exc}: {text!r}") from None


# --- messages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A Zeek event: its name, its arguments (Python values) and Zeek 8's optional metadata vector."""

    name: str
    args: list[Any]
    metadata: list[Any] | None = (
        None  # None: the two-element form (Zeek <= 8.0); a list: the three-element form
    )


@dataclass(frozen=True)
class Ack:
    endpoint: str
    version: str


@dataclass(frozen=True)
class ErrorMessage:
    code: str
    context: str


@dataclass(frozen=True)
class DataMessage:
    """A data message; `event` is set when its content is an event (the only content Zeek handles)."""

    topic: str
    value: Any
    event: Event | None = field(default=None)


Message = Ack | ErrorMessage | DataMessage


def encode_event_message(topic: str, event: Event) -> dict[str, Any]:
    """The JSON object of a data message that carries `event` (two or three inner elements per its metadata)."""
    inner = [encode(event.name), encode(list(event.args), f"event {event.name} arguments")]
    if event.metadata is not None:
        inner.append(encode(list(event.metadata), f"event {event.name} metadata"))
    return {
        "type": "data-message",
        "topic": topic,
        DATA_TYPE: "vector",
        "data": [
            {DATA_TYPE: "count", "data": EVENT_FORMAT_VERSION},
            {DATA_TYPE: "count", "data": EVENT_MESSAGE_TYPE},
            {DATA_TYPE: "vector", "data": inner},
        ],
    }


def decode_message(obj: Any) -> Message:
    """An ack, an error or a data message from one parsed JSON value; anything else is a `CodecError`."""
    if not isinstance(obj, dict):
        raise CodecError(f"message: expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "ack":
        return Ack(_text_field(obj, "endpoint", "ack"), _text_field(obj, "version", "ack"))
    if kind == "error":
        return ErrorMessage(_text_field(obj, "code", "error"), _text_field(obj, "context", "error"))
    if kind == "data-message":
        topic = _text_field(obj, "topic", "data-message")
        value = decode({DATA_TYPE: obj.get(DATA_TYPE), "data": obj.get("data")}, f"data-message on {topic}")
        return DataMessage(topic, value, event_of(value, f"data-message on {topic}"))
    raise CodecError(f"message: unknown type {kind!r}")


def _text_field(obj: dict[str, Any], name: str, kind: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise CodecError(f"{kind} message: field {name!r} must be a string, got {value!r}")
    return value


def event_of(value: Any, where: str = "data") -> Event | None:
    """The event a decoded data-message value carries, or None when it is not an event (1, 1, [name, args...]).
    A value shaped as an event whose parts have wrong types is a `CodecError`."""
    if not (isinstance(value, list) and len(value) == 3):
        return None
    version, kind, inner = value
    if not (isinstance(version, Count) and isinstance(kind, Count)):
        return None
    if (version, kind) != (EVENT_FORMAT_VERSION, EVENT_MESSAGE_TYPE):
        raise CodecError(f"{where}: event format ({version}, {kind}) is not (1, 1)")
    if not isinstance(inner, list) or len(inner) not in (2, 3):
        raise CodecError(f"{where}: an event is a vector of 2 or 3 elements (name, arguments[, metadata])")
    name, args = inner[0], inner[1]
    if not isinstance(name, str) or not name:
        raise CodecError(f"{where}: event name must be a non-empty string, got {name!r}")
    if not isinstance(args, list):
        raise CodecError(f"{where}: event {name} arguments must be a vector")
    metadata = inner[2] if len(inner) == 3 else None
    if metadata is not None and not isinstance(metadata, list):
        raise CodecError(f"{where}: event {name} metadata must be a vector")
    return Event(name, args, metadata)
