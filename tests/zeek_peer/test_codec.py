"""The Broker v1 JSON codec: every data type round-trips through JSON text, exact types are kept apart, the
documented wire forms are produced and read, and bad input is a CodecError that names where it is."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetclip.zeek.codec import (
    COUNT_MAX,
    DATA_TYPES,
    INT64_MAX,
    INT64_MIN,
    Ack,
    CodecError,
    Count,
    DataMessage,
    Enum,
    ErrorMessage,
    Event,
    Integer,
    Port,
    Timespan,
    decode,
    decode_message,
    encode,
    encode_event_message,
)
from tests.zeek_peer.peer import zeek_json

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
subnets = st.builds(
    lambda a, bits: ipaddress.ip_network(f"{a}/{bits % (33 if a.version == 4 else 129)}", strict=False),
    addresses,
    st.integers(0, 128),
)
timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, fold=0))  # the wire's resolution is 1 ms
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, COUNT_MAX).map(Count),
    st.integers(INT64_MIN, INT64_MAX).map(Integer),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.integers(-(10**15), 10**15).map(Timespan),
    timestamps,
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]*(::[A-Za-z0-9_]+)?", fullmatch=True).map(Enum),
    addresses,
    subnets,
    st.builds(Port, st.integers(0, 65535), st.sampled_from(["tcp", "udp", "icmp", "?"])),
)
hashable_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=8)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.frozensets(hashable_values, max_size=4),
        st.dictionaries(hashable_values, inner, max_size=4),
    ),
    max_leaves=12,
)


def typed(value: Any) -> Any:
    """A value with its Broker type attached to every part (Count(1) == Integer(1) == True in Python)."""
    if isinstance(value, list | tuple):
        return ("vector", tuple(typed(v) for v in value))
    if isinstance(value, frozenset):  # element order on the wire is arbitrary: compare canonically
        return ("set", tuple(sorted(repr(typed(v)) for v in value)))
    if isinstance(value, dict):
        return ("table", tuple(sorted(repr((typed(k), typed(v))) for k, v in value.items())))
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_value_round_trips_through_json_text(value: Any) -> None:
    wire = json.loads(json.dumps(encode(value), ensure_ascii=False))
    assert typed(decode(wire)) == typed(value)


@settings(max_examples=100, deadline=None)
@given(values)
def test_values_round_trip_through_zeeks_encoder(value: Any) -> None:
    """What Zeek writes (its own escaping) decodes to the same value, unless a string holds \\v or a control
    byte Zeek does not escape, which no JSON reader accepts (and which the contract keeps off the wire)."""
    text = zeek_json(encode(value))
    try:
        wire = json.loads(text)
    except ValueError:
        assert b"\\v" in text or any(byte < 0x20 for byte in text)
        return
    assert typed(decode(wire)) == typed(value)


def test_each_data_type_has_its_documented_wire_form() -> None:
    v4 = ipaddress.ip_address("192.0.2.1")
    cases = [
        (None, "none", {}),
        (True, "boolean", True),
        (Count(5), "count", 5),
        (-5, "integer", -5),
        (1.5, "real", 1.5),
        (Timespan(1_500_000_000), "timespan", "1500ms"),
        (timedelta(minutes=2), "timespan", "2min"),
        (datetime(2022, 4, 10, 7, 0, 0, 123456, tzinfo=UTC), "timestamp", "2022-04-10T07:00:00.123"),
        ("x", "string", "x"),
        (Enum("Notice::ACTION_LOG"), "enum-value", "Notice::ACTION_LOG"),
        (v4, "address", "192.0.2.1"),
        (ipaddress.ip_address("2001:db8::1"), "address", "2001:db8::1"),
        (ipaddress.ip_network("10.0.0.0/8"), "subnet", "10.0.0.0/8"),
        (Port(8080, "tcp"), "port", "8080/tcp"),
        ([Count(1)], "vector", [{"@data-type": "count", "data": 1}]),
        ({"a"}, "set", [{"@data-type": "string", "data": "a"}]),
        (
            {"a": 1},
            "table",
            [{"key": {"@data-type": "string", "data": "a"}, "value": {"@data-type": "integer", "data": 1}}],
        ),
    ]
    for value, kind, data in cases:
        assert encode(value) == {"@data-type": kind, "data": data}
    assert {kind for _, kind, _ in cases} == set(DATA_TYPES)


def test_timespans_in_every_unit_and_fractions() -> None:
    for text, seconds in [
        ("3ns", 3e-9),
        ("2us", 2e-6),
        ("7ms", 0.007),
        ("1.5s", 1.5),
        ("2min", 120),
        ("1h", 3600),
        ("1d", 86400),
        ("-250ms", -0.25),
    ]:
        assert decode({"@data-type": "timespan", "data": text}).seconds == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"@data-type": "count", "data": -1}, "count out of range"),
        ({"@data-type": "count", "data": 1.0}, "count data must be int"),
        ({"@data-type": "count", "data": True}, "got bool"),
        ({"@data-type": "integer", "data": 2**63}, "integer out of range"),
        ({"@data-type": "real", "data": "1.0"}, "real data must be"),
        ({"@data-type": "boolean", "data": 1}, "boolean data"),
        ({"@data-type": "none", "data": None}, "none data"),
        ({"@data-type": "timespan", "data": "5 parsecs"}, "timespan is NUMBER"),
        ({"@data-type": "timestamp", "data": "2022-04-10 07:00:00"}, "timestamp is"),
        ({"@data-type": "address", "data": "10.0.0.256"}, "not an IPv4 or IPv6"),
        ({"@data-type": "subnet", "data": "10.0.0.0"}, "prefix length"),
        ({"@data-type": "port", "data": "80"}, "NUMBER/tcp"),
        ({"@data-type": "port", "data": "70000/tcp"}, "NUMBER/tcp"),
        ({"@data-type": "vector", "data": [{"@data-type": "count", "data": "x"}]}, r"value\[0\]: count"),
        (
            {"@data-type": "table", "data": [{"key": {"@data-type": "none", "data": {}}}]},
            "exactly 'key' and 'value'",
        ),
        ({"@data-type": "record", "data": []}, "unknown @data-type 'record'"),
        ({"data": 1}, "needs '@data-type'"),
        ([1], "expected an object"),
    ],
)
def test_bad_values_name_the_field(obj: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(obj)


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(CodecError, match="finite"):
        encode(float("nan"))
    with pytest.raises(CodecError, match="no Broker type"):
        encode(object())
    with pytest.raises(CodecError):
        Count(-1)
    with pytest.raises(CodecError):
        Port(80, "sctp")


def test_event_messages_with_two_or_three_elements_ack_and_error() -> None:
    event = Event("PacketCLIP::hello", ["s", "v"])
    two = encode_event_message("packetclip/control/", event)
    assert len(two["data"][2]["data"]) == 2
    message = decode_message(json.loads(json.dumps(two)))
    assert isinstance(message, DataMessage) and message.event == event
    three = encode_event_message("packetclip/control/", Event("PacketCLIP::hello", ["s", "v"], []))
    assert len(three["data"][2]["data"]) == 3
    decoded = decode_message(three)
    assert isinstance(decoded, DataMessage) and decoded.event == Event("PacketCLIP::hello", ["s", "v"], [])
    assert decode_message({"type": "ack", "endpoint": "e", "version": "8.0.10"}) == Ack("e", "8.0.10")
    assert decode_message({"type": "error", "code": "c", "context": "x"}) == ErrorMessage("c", "x")
    plain = decode_message({"type": "data-message", "topic": "t", "@data-type": "count", "data": 1})
    assert isinstance(plain, DataMessage) and plain.event is None


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "ack", "endpoint": 1, "version": "8"}, "field 'endpoint'"),
        ({"type": "hello"}, "unknown type 'hello'"),
        ({"type": "data-message", "@data-type": "count", "data": 1}, "field 'topic'"),
        (
            {
                "type": "data-message",
                "topic": "t",
                "@data-type": "vector",
                "data": [
                    {"@data-type": "count", "data": 1},
                    {"@data-type": "count", "data": 1},
                    {"@data-type": "vector", "data": [{"@data-type": "string", "data": "E"}]},
                ],
            },
            "2 or 3 elements",
        ),
    ],
)
def test_bad_messages_say_what_is_wrong(message: Any, text: str) -> None:
    with pytest.raises(CodecError, match=text):
        decode_message(message)
