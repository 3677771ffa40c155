"""The sidecar's stream handling without Suricata: eve parsing with malformed lines counted, a followed file
that is rotated and truncated, the unix-socket eve listener across a reconnect, and flow assembly (N packets,
flow end, max wait, duplicates, late packets)."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path

from packetclip.ordering import FirstPacketOrder
from packetclip.suricata.eve import EveFlowEnd, EvePacket, EveParser, format_timestamp, parse_timestamp
from packetclip.suricata.flows import FlowAssembler
from packetclip.suricata.follow import EveFileFollower, EveSocketListener
from packetclip.suricata.sidecar import DEFAULT_MAX_WAIT, _first_ts, _tie, flow_max_wait

FRAME = bytes(range(60))


def packet_line(flow_id: int, ts: float, src: str = "10.0.0.1", frame: bytes = FRAME) -> bytes:
    record = {
        "timestamp": format_timestamp(ts),
        "flow_id": flow_id,
        "event_type": "packet",
        "src_ip": src,
        "src_port": 1234,
        "dest_ip": "10.0.0.2",
        "dest_port": 80,
        "proto": "TCP",
        "packet": base64.b64encode(frame).decode(),
        "packet_info": {"linktype": 1},
    }
    return json.dumps(record).encode()


def test_timestamps_round_trip_and_zones() -> None:
    assert parse_timestamp("2026-11-27T02:09:05.055434+0000") == 1795745345 + 55434 * 1e-6
    assert parse_timestamp("2026-11-27T03:09:05.000001+0100") == 1795745345 + 1e-6
    assert format_timestamp(1795745345.055434) == "2026-11-27T02:09:05.055434+0000"


def test_malformed_lines_are_counted_by_reason_and_other_events_ignored() -> None:
    parser = EveParser()
    good = parser.parse(packet_line(7, 100.5))
    assert isinstance(good, EvePacket) and good.frame == FRAME and good.flow_id == 7 and good.ts == 100.5
    end = parser.parse(b'{"event_type":"flow","flow_id":7,"timestamp":"2026-11-27T02:09:05.0+0000"}')
    assert isinstance(end, EveFlowEnd)
    bad = [
        b"{not json",
        b"[1,2]",
        b'{"event_type":"packet","packet":"AAAA"}',
        packet_line(7, 1.0).replace(b'"packet": "', b'"packet": "!!'),
        b'{"event_type":"dns","flow_id":1}',
        b'{"event_type":"alert","flow_id":1}',
    ]
    assert [parser.parse(line) for line in bad] == [None] * len(bad)
    counts = parser.counts
    assert counts.malformed == {
        "not_json": 1,
        "not_an_object": 1,
        "missing_flow_id": 1,
        "bad_base64_packet": 1,
    }
    assert counts.ignored == {"dns": 1, "alert_without_packet": 1}
    assert counts.packets == 1 and counts.flow_ends == 1 and counts.lines == 8


def test_file_follower_survives_rotation_and_truncation(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    follower = EveFileFollower(eve, from_start=True, poll_interval=0.01)
    assert follower.poll(0.05) == []  # not there yet
    eve.write_bytes(b"a\nb\npart")
    assert follower.poll(0.1) == [b"a", b"b"]
    with eve.open("ab") as out:
        out.write(b"ial\n")
    assert follower.poll(0.1) == [b"partial"]
    with eve.open("ab") as out:
        out.write(b"last-before-rotation\nhalf")
    os.rename(eve, tmp_path / "eve.json.1")
    eve.write_bytes(b"new-1\n")
    assert follower.poll(0.1) == [b"last-before-rotation", b"new-1"]
    assert follower.counts.reopened == 1 and follower.counts.partial_lines == 1
    eve.write_bytes(b"x\n")  # truncated in place, then written again
    assert follower.poll(0.1) == [b"x"]
    follower.close()


def test_from_end_skips_what_is_already_there(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    eve.write_bytes(b"old\n")
    follower = EveFileFollower(eve, from_start=False, poll_interval=0.01)
    assert follower.poll(0.05) == []
    with eve.open("ab") as out:
        out.write(b"new\n")
    assert follower.poll(0.1) == [b"new"]
    follower.close()


def test_socket_listener_accepts_a_reconnecting_suricata(tmp_path: Path) -> None:
    listener = EveSocketListener(tmp_path / "eve.sock")
    received: list[bytes] = []
    for connections, chunk in enumerate((b"one\ntw", b"two\n"), start=1):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(tmp_path / "eve.sock"))
        client.sendall(chunk)
        client.close()
        deadline = time.monotonic() + 2
        while listener.counts.disconnects < connections:
            received += listener.poll(0.05)
            assert time.monotonic() < deadline
    assert received == [b"one", b"two"]
    assert listener.counts.reopened == 2 and listener.counts.disconnects == 2
    assert listener.counts.partial_lines == 1  # "tw" was cut by the first connection's end
    listener.close()
    assert not (tmp_path / "eve.sock").exists()


def test_flows_leave_at_n_packets_at_their_end_or_after_max_wait() -> None:
    parser = EveParser()
    assembler = FlowAssembler(max_packets=3, max_wait=2.0)

    def add(flow_id: int, ts: float, src: str = "10.0.0.1", frame: bytes = FRAME, wall: float = 0.0):  # type: ignore[no-untyped-def]
        item = parser.parse(packet_line(flow_id, ts, src, frame))
        assert isinstance(item, EvePacket)
        return assembler.add(item, wall)

    assert add(1, 10.0) == [] and add(1, 10.0) == []  # the same packet twice (alert + tagged record)
    assert assembler.counts.duplicate_packets == 1
    assert add(1, 10.1, src="10.0.0.2", frame=FRAME[::-1]) == []
    done = add(1, 10.2, frame=FRAME[:40])
    assert [f.reason for f in done] == ["max_packets"] and done[0].is_orig() == [True, False, True]
    assert add(1, 10.3) == [] and assembler.counts.late_packets == 1
    add(2, 11.0)
    ended = assembler.end(2)
    assert ended is not None and ended.reason == "flow_end" and len(ended.frames) == 1
    add(3, 11.5, wall=50.0)
    assert assembler.expire(wall_now=50.5, idle=False) == []
    add(4, 13.6, frame=FRAME[:50], wall=50.5)  # packet time moves on: flow 3 waited 2.1 s
    assert [f.flow_id for f in assembler.expire(wall_now=50.5, idle=False)] == [3]
    assert [f.flow_id for f in assembler.expire(wall_now=53.0, idle=True)] == [4]  # idle: wall time counts
    assert assembler.end(99) is None and assembler.counts.flow_ends_unknown == 1


def test_oldest_open_flow_is_what_ready_flows_wait_for() -> None:
    parser = EveParser()
    assembler = FlowAssembler(max_packets=2, max_wait=5.0)

    def add(flow_id: int, ts: float):  # type: ignore[no-untyped-def]
        item = parser.parse(packet_line(flow_id, ts, frame=FRAME[: 40 + flow_id]))
        assert isinstance(item, EvePacket)
        return assembler.add(item, 0.0)

    assert assembler.oldest_open_ts() == float("inf")
    add(1, 10.0)  # a slow flow opens first
    add(2, 11.0)
    assert [f.flow_id for f in add(2, 11.1)] == [2]  # the second is ready first
    assert assembler.oldest_open_ts() == 10.0  # so it must wait for flow 1
    assert assembler.end(1) is not None
    assert assembler.oldest_open_ts() == float("inf")


def test_a_flows_packets_are_handed_out_in_time_order() -> None:
    parser = EveParser()
    assembler = FlowAssembler(max_packets=3, max_wait=5.0)
    for ts, size in ((1.0, 40), (1.2, 44), (1.1, 48)):  # the third packet's record was written late
        item = parser.parse(packet_line(7, ts, frame=FRAME[:size]))
        assert isinstance(item, EvePacket)
        ready = assembler.add(item, 0.0)
    (flow,) = ready
    assert flow.ts == [1.0, 1.1, 1.2] and [len(f) for f in flow.frames] == [40, 48, 44]
    assert assembler.counts.reordered_flows == 1


def test_flows_wait_for_the_bundles_window_unless_told_otherwise(caplog) -> None:
    assert flow_max_wait(None, 5.0) == 5.0  # the packets the model was trained on
    assert flow_max_wait(None, None) == DEFAULT_MAX_WAIT  # a bundle without a window
    assert flow_max_wait(8.0, 5.0) == 8.0 and not caplog.records
    assert flow_max_wait(1.0, 5.0) == 1.0
    assert "trained on the packets of the first 5.00 s" in caplog.text


def test_flows_starting_at_one_time_leave_in_endpoint_order_whatever_order_they_finished() -> None:
    """Ties of first-packet time are broken as `classify` and the Zeek sidecar break them (`endpoint_tie`), not by
    which flow Suricata finished first: the originator histories, and so the verdicts, do not depend on it."""
    parser = EveParser()

    def flows() -> list:  # type: ignore[type-arg]
        assembler = FlowAssembler(max_packets=1, max_wait=5.0)
        out = []
        for flow_id, src in ((3, "10.0.0.9"), (1, "10.0.0.1"), (2, "10.0.0.5")):
            item = parser.parse(packet_line(flow_id, 20.0, src=src))
            assert isinstance(item, EvePacket)
            out += assembler.add(item, 0.0)
        return out

    finished = flows()
    orders = []
    for arrival in (finished, finished[::-1], finished[1:] + finished[:1]):
        order = FirstPacketOrder(_first_ts, tie=_tie)
        order.push(arrival)
        orders.append([flow.first.src_ip for flow in order.drain()])
    assert orders[0] == ["10.0.0.1", "10.0.0.5", "10.0.0.9"] and orders[1:] == orders[:1] * 2


def test_lines_that_once_stopped_suricata_run_are_counted_and_skipped() -> None:
    """A packet record whose timestamp lies past year 9999 once it is moved to UTC (datetime cannot write it back)
    and a line nested deeper than the JSON decoder recurses: each is counted by reason, and the next good line is
    still read."""
    parser = EveParser()
    late = json.loads(packet_line(1, 1.0))
    late["timestamp"] = "9999-12-31T23:59:59.999999-2359"
    early = dict(late, timestamp="1969-12-31T23:59:59.000000+0000")
    assert parser.parse(json.dumps(late)) is None and parser.parse(json.dumps(early)) is None
    assert parser.parse(b"[" * 100_000) is None
    assert isinstance(parser.parse(packet_line(2, 1_700_000_000.25)), EvePacket)
    assert parser.counts.malformed == {"bad_timestamp": 2, "too_deep": 1}
    last_day = "9999-12-30T23:59:59.000000+0000"
    assert format_timestamp(parse_timestamp(last_day)).startswith("9999-12-30T23:59:59")
