"""The sidecar fed the requests the Zeek scripts send for the btest suite's edge-case captures (issue 20), through
the Zeek-faithful peer: a capture in Linux cooked-capture framing sent at its end, and fragmented UDP, whose frames
Zeek hands over as the fragment that completed each datagram. Every connection gets a real verdict, no `error`.

The requests are computed by tests/zeekscripts/zeek_view.py, the reasoning the btest baselines are checked
against, so the sidecar sees what the btests show Zeek sending.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from pathlib import Path

import pytest

from packetclip.engine import Engine
from packetclip.featurizer import ParseStats, featurize_frames
from packetclip.zeek.codec import Count, Event, Port
from packetclip.zeek.service import HELLO_EVENT, VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import runtime_bundle
from tests.zeek_peer.peer import ZeekPeer
from tests.zeekscripts.zeek_view import ZeekRequest, zeek_requests

HERE = Path(__file__).resolve().parent

TRACES = HERE.parent / "zeek" / "traces"
SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def request_event(request: ZeekRequest, uid: str, link_type: int | None = None) -> Event:
    return Event(
        "PacketCLIP::request",
        [
            "zeek",
            uid,
            ipaddress.ip_address(request.orig_h),
            Port(request.orig_p, request.proto),
            ipaddress.ip_address(request.resp_h),
            Port(request.resp_p, request.proto),
            Count(request.link_type if link_type is None else link_type),
            [float(t) for t in request.ts],
            list(request.is_orig),
            [base64.b64encode(frame).decode() for frame in request.frames],
        ],
    )


def answers(bundle: Path, events: list[Event]) -> dict[str, list]:
    """Publish the events as Zeek does and return each uid's verdict arguments."""

    async def main() -> dict[str, list]:
        async with ZeekPeer() as peer:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            sidecar = Sidecar(ServeSettings(zeek=peer.url, reconnect_initial=0.05), Engine(bundle))
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                await peer.wait_for(lambda got: any(r.event.name == HELLO_EVENT for r in got))
                for event in events:
                    await peer.publish("packetclip/request/", event)
                uids = {event.args[1] for event in events}
                await peer.wait_for(
                    lambda got: uids <= {r.event.args[0] for r in got if r.event.name == VERDICT_EVENT}, 30
                )
                return {r.event.args[0]: r.event.args for r in peer.events(VERDICT_EVENT)}
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

    return asyncio.run(main())


def test_short_sll_capture_and_fragmented_udp_get_real_verdicts(bundle_path: Path) -> None:
    """Link type 113 read while the source was open, and a UDP flow of reassembled datagrams whose frames are
    later fragments (and one first fragment): both classify."""
    requests = zeek_requests(TRACES / "packetclip-short.pcap") + zeek_requests(
        TRACES / "packetclip-fragments.pcap"
    )
    events = [request_event(request, f"C{index}") for index, request in enumerate(requests)]
    got = answers(bundle_path, events)
    assert len(got) == len(events)
    for uid, args in got.items():
        assert args[1] != "error", (uid, args[4])


def test_link_type_zero_is_what_made_short_captures_errors(bundle_path: Path) -> None:
    """The check above can fail: the same requests with the link type the scripts used to cache at the end of
    a capture (0) are all answered with the error the real Zeek run logged."""
    requests = zeek_requests(TRACES / "packetclip-short.pcap")
    events = [request_event(request, f"C{index}", link_type=0) for index, request in enumerate(requests)]
    got = answers(bundle_path, events)
    assert {args[1] for args in got.values()} == {"error"}
    assert all("no usable frame (link type 0)" in args[4] for args in got.values())


def test_a_connection_of_later_fragments_is_featurized_with_the_sensors_ports() -> None:
    """featurize_frames with Zeek's directions takes later fragments as packets of the connection, oriented by
    is_orig and with the ports Zeek gave; without directions (no sensor attribution) they are left out."""
    (request,) = zeek_requests(TRACES / "packetclip-fragments.pcap")
    later = [i for i, frame in enumerate(request.frames) if (frame[14 + 6] & 0x1F) or frame[14 + 7]]
    ts = [request.ts[i] for i in later]
    frames = [request.frames[i] for i in later]
    directions = [request.is_orig[i] for i in later]
    assert len(later) == 2 and all(directions)
    stats = ParseStats()
    connection = featurize_frames(1, ts, frames, directions, stats=stats, ports=(5000, 6000))
    assert connection is not None and len(connection.pkt_ts) == 2
    assert (connection.orig_h, connection.orig_p, connection.resp_h, connection.resp_p) == (
        "10.2.0.1",
        5000,
        "10.2.0.2",
        6000,
    )
    assert connection.proto == "udp" and connection.pkt_dir.tolist() == [1, 1]
    skipped = ParseStats()
    assert featurize_frames(1, ts, frames, None, stats=skipped) is None
    assert skipped.skipped["fragment_in_explicit_connection"] == 2
