"""Delivery accounting of `packetclip serve` against a hostile Zeek-faithful peer: a verdict counts as confirmed
only after a pong proves Zeek's endpoint read it; what a connection ends without confirming is sent again on the
next one (at-least-once), what the sidecar stops with is counted lost, and oversized messages are counted, in
either direction. Every test waits on state (polling with generous timeouts), never on how fast the sidecar is.

The identity checked after each hostile moment: every request read has a verdict at the peer; verdicts sent
(first writes) = confirmed + lost; the peer received each verdict once, plus at most the ones sent again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from packetclip.engine import Engine, Verdict
from packetclip.zeek.delivery import Unconfirmed
from packetclip.zeek.service import VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import ZeekPeer, event_message, requests_from_capture

HERE = Path(__file__).resolve().parent

SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]
HELLO = "PacketCLIP::hello"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


def run_hostile(
    engine: Any, body: Callable[[ZeekPeer, Sidecar], Awaitable[None]], **settings: Any
) -> tuple[ZeekPeer, Sidecar]:
    """A peer and a sidecar (arrival order: no reorder window); `body` plays the hostile part; then stop."""
    settings = {"order_hold": 0.0, "reconnect_initial": 0.05, "reconnect_max": 0.2, **settings}

    async def main() -> tuple[ZeekPeer, Sidecar]:
        async with ZeekPeer() as peer:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            sidecar = Sidecar(ServeSettings(zeek=peer.url, **settings), engine)
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                await until(lambda: bool(peer.events(HELLO)))
                await body(peer, sidecar)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            return peer, sidecar

    return asyncio.run(main())


def verdict_counts(peer: ZeekPeer) -> Counter[str]:
    return Counter(r.event.args[0] for r in peer.events(VERDICT_EVENT))


def lab_requests(count: int) -> list[Any]:
    return list(requests_from_capture(LAB_CAPTURE))[:count]


def test_the_unconfirmed_tail_is_let_go_only_by_its_own_pong() -> None:
    tail: Unconfirmed[int] = Unconfirmed(every=3)
    for item in (1, 2):
        tail.written(item)
    assert not tail.wants_ping(idle=False) and tail.wants_ping(idle=True)
    tail.written(3)
    assert tail.wants_ping(idle=False)
    generation = tail.pinged()
    tail.written(4)  # after the ping: its pong does not confirm it
    assert not tail.wants_ping(idle=True)  # one ping at a time
    assert tail.ponged(generation) == [1, 2, 3] and len(tail) == 1
    old = tail.pinged()
    assert tail.take_all() == [4]  # the connection ended before the pong
    tail.written(5)
    assert tail.ponged(old) == [] and len(tail) == 1  # a late pong of the old connection confirms nothing


def test_a_stalled_peer_then_reset_gets_every_verdict_on_the_next_connection(bundle_path: Path) -> None:
    """Zeek stops reading; the sidecar writes every verdict into the socket buffers, where no pong can confirm
    them; the connection is reset with all of them unread. They were counted sent, never confirmed, and are sent
    again on the next connection: each arrives exactly once, and then all are confirmed."""
    requests = lab_requests(120)
    uids = {r.uid for r in requests}

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        peer.pause_reading()
        for request in requests:
            await peer.publish(request.topic, request.event)
        await until(lambda: sidecar.metrics.verdicts.total() == len(requests))
        assert sidecar.metrics.verdicts_confirmed == 0 and sidecar.metrics.unconfirmed == len(requests)
        peer.abort_clients()
        await until(lambda: uids <= set(verdict_counts(peer)))
        await until(lambda: sidecar.metrics.verdicts_confirmed == len(requests))

    peer, sidecar = run_hostile(Engine(bundle_path), body)
    metrics = sidecar.metrics
    assert metrics.reconnects == 1
    assert metrics.verdicts.total() == len(requests)  # counted sent once each
    assert metrics.verdicts_resent == len(requests)  # all of them were sent again
    assert metrics.verdicts_confirmed == len(requests) and metrics.verdicts_lost.total() == 0
    assert set(verdict_counts(peer).values()) == {1}  # the reset lost every first copy: none arrived twice


def test_a_reset_mid_burst_loses_nothing_and_duplicates_only_what_was_sent_again(bundle_path: Path) -> None:
    """The connection is reset while verdicts are flowing (the peer reading): whatever was unconfirmed then is
    sent again; every request has a verdict, and the peer got each once plus at most the ones sent again."""
    requests = lab_requests(300)
    uids = {r.uid for r in requests}

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        for request in requests:
            await peer.publish(request.topic, request.event)
        await until(lambda: sidecar.metrics.requests == len(requests))
        await until(lambda: sidecar.metrics.verdicts.total() > 0)
        peer.abort_clients()
        await until(lambda: uids <= set(verdict_counts(peer)))
        await until(lambda: sidecar.metrics.verdicts_confirmed == len(requests))

    peer, sidecar = run_hostile(Engine(bundle_path), body)
    metrics = sidecar.metrics
    counts = verdict_counts(peer)
    assert set(counts) == uids
    assert metrics.verdicts.total() == metrics.verdicts_confirmed == len(requests)
    assert metrics.verdicts_lost.total() == 0
    assert sum(counts.values()) - len(uids) <= metrics.verdicts_resent


def test_verdicts_unconfirmed_at_shutdown_are_counted_lost(bundle_path: Path) -> None:
    """A sidecar that stops while Zeek reads nothing gives up after drain_timeout and counts each unconfirmed
    verdict as lost: sent = confirmed + lost."""
    requests = lab_requests(40)

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        peer.pause_reading()
        for request in requests:
            await peer.publish(request.topic, request.event)
        await until(lambda: sidecar.metrics.verdicts.total() == len(requests))

    _, sidecar = run_hostile(Engine(bundle_path), body, drain_timeout=0.5)
    metrics = sidecar.metrics
    assert metrics.verdicts_lost == Counter(shutdown=len(requests))
    assert metrics.verdicts.total() == metrics.verdicts_confirmed + metrics.verdicts_lost.total()
    assert "packetclip_serve_verdicts_lost_total" in metrics.exposition()


def test_an_oversized_message_from_zeek_is_counted_and_the_sidecar_serves_on(bundle_path: Path) -> None:
    """A message over max_message_bytes closes the connection (websockets sends 1009): counted by direction, not
    only seen as a reconnect; the next connection serves as before."""
    request = lab_requests(1)[0]

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await peer.broadcast_raw(
            b'{"type":"data-message","topic":"packetclip/request/","pad":"' + b"x" * 70_000
        )
        await until(lambda: sidecar.metrics.oversized["received"] == 1)
        await until(lambda: len(peer.events(HELLO)) == 2)
        await peer.publish(request.topic, request.event)
        await until(lambda: request.uid in verdict_counts(peer))

    _, sidecar = run_hostile(Engine(bundle_path), body, max_message_bytes=65_536)
    assert sidecar.metrics.errors["oversized_message"] == 1 and sidecar.metrics.reconnects == 1


class WordyEngine:
    """The real engine, with explanations longer than any message may be."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def classify(self, connections: Any, sensor: str = "") -> list[Verdict]:
        verdicts = self.engine.classify(connections, sensor)
        return [dataclasses.replace(v, explanation="x" * 100_000) for v in verdicts]


def test_a_verdict_too_large_to_send_is_counted_and_answered_with_an_error(bundle_path: Path) -> None:
    requests = lab_requests(5)

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        for request in requests:
            await peer.publish(request.topic, request.event)
        await until(lambda: len(verdict_counts(peer)) == len(requests))

    peer, sidecar = run_hostile(WordyEngine(Engine(bundle_path)), body, max_message_bytes=65_536)
    verdicts = peer.events(VERDICT_EVENT)
    assert {v.event.args[1] for v in verdicts} == {"error"}
    assert all("too large" in v.event.args[4] for v in verdicts)
    assert sidecar.metrics.oversized["sent"] == len(requests)


def test_a_request_on_a_topic_not_subscribed_to_is_counted_and_not_answered(bundle_path: Path) -> None:
    """Only requests on the subscribed topic prefix are answered, whatever else reaches the sidecar."""
    foreign, own = lab_requests(2)

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await peer.broadcast_raw(event_message("packetclip/requests-elsewhere/", foreign.event))
        await until(lambda: sidecar.metrics.errors["foreign_topic"] == 1)
        await peer.publish(own.topic, own.event)
        await until(lambda: own.uid in verdict_counts(peer))

    peer, sidecar = run_hostile(Engine(bundle_path), body)
    assert foreign.uid not in verdict_counts(peer) and sidecar.metrics.requests == 1
