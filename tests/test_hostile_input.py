"""Random and hostile input to both sidecars' readers: whatever a line of eve or a WebSocket message holds, the
reader counts it (or takes it) and returns; it never raises. A packet the eve reader takes has a time its verdict
record can be written with. Hypothesis draws raw bytes, arbitrary JSON and near-valid records (right event type,
random fields)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetclip.engine import Engine
from packetclip.suricata.eve import EvePacket, EveParser, format_timestamp
from packetclip.zeek.service import RequestQueue, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import runtime_bundle

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=25,
)
timestamps = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?[+-][0-9]{4}\Z"),
    st.integers(),
)
eve_records = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["packet", "alert", "flow", "drop", "netflow", "dns"]),
        "timestamp": timestamps,
        "flow_id": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=5)),
        "src_ip": st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
        "dest_ip": st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
        "proto": st.sampled_from(["TCP", "UDP", "ICMP", "IPv6-ICMP", "", "SCTP"]),
        "src_port": st.one_of(st.integers(min_value=-5, max_value=70_000), st.text(max_size=4)),
        "dest_port": st.one_of(st.integers(min_value=-5, max_value=70_000), st.none()),
        "packet": st.one_of(
            st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=20)
        ),
        "packet_info": st.one_of(st.fixed_dictionaries({"linktype": st.integers(-3, 300)}), json_values),
    },
    optional={"community_id": st.text(max_size=10)},
)
eve_lines = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda value: json.dumps(value)),
    eve_records.map(lambda record: json.dumps(record)),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: "[" * depth),
)


@settings(max_examples=400, deadline=None)
@given(eve_lines)
def test_the_eve_reader_never_raises(line: Any) -> None:
    parser = EveParser()
    taken = parser.parse(line)
    assert parser.counts.lines == 1
    if isinstance(taken, EvePacket):
        format_timestamp(taken.ts)  # its verdict record can be written
    elif taken is None:
        assert sum(parser.counts.malformed.values()) + sum(parser.counts.ignored.values()) == 1


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Sidecar:
    """A sidecar that is not connected: its message handler with a queue, as `run` sets it up."""
    sidecar = Sidecar(
        ServeSettings(zeek="ws://127.0.0.1:9/v1/messages/json"), Engine(runtime_bundle(tmp_path_factory))
    )
    sidecar._queue = RequestQueue(100_000)
    return sidecar


request_args = st.lists(json_values, max_size=11)


def event_message(name: str, args: list[Any]) -> bytes:
    """A data message shaped like an event (format version, type, then name and arguments), arguments as strings."""
    typed = [{"@data-type": "string", "data": str(arg)} for arg in args]
    event = {
        "@data-type": "vector",
        "data": [{"@data-type": "string", "data": name}, {"@data-type": "vector", "data": typed}],
    }
    header = [{"@data-type": "count", "data": 1}, {"@data-type": "count", "data": 1}]
    data = {
        "type": "data-message",
        "topic": "packetclip/request/",
        "@data-type": "vector",
        "data": [*header, event],
    }
    return json.dumps(data).encode()


messages = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: b"[" * depth),
    st.builds(
        lambda topic, kind, data: json.dumps(
            {"type": "data-message", "topic": topic, "@data-type": kind, "data": data}
        ).encode(),
        st.sampled_from(["packetclip/request/", "packetclip/request/3/", "x", ""]),
        st.sampled_from(["vector", "count", "string", "none", "table", "address", "port"]),
        json_values,
    ),
    st.builds(
        event_message, st.sampled_from(["PacketCLIP::request", "PacketCLIP::verdict", "other"]), request_args
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages)
def test_the_zeek_sidecar_never_raises_on_a_message(sidecar: Sidecar, raw: bytes) -> None:
    errors_before = sidecar.metrics.errors.total()
    requests_before = sidecar.metrics.requests
    sidecar.handle_message(raw, 0.0)
    assert sidecar.metrics.errors.total() + sidecar.metrics.requests > errors_before + requests_before
