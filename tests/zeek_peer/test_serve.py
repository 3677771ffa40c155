"""`packetclip serve` against a Zeek-faithful WebSocket peer: exact topics and argument types; hello after
subscribe; bad input counted and survived; a Zeek restart loses no queued request; overload answered and counted;
shards; metrics; hot reload wiring; the warning for a model trained on more seconds than Zeek sends. That its
verdicts equal `packetclip classify`'s is test_zeek_path_equals_classify.py.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from packetclip.commands.serve import open_serving_engine, serve
from packetclip.config import ConfigError
from packetclip.engine import Engine, Verdict
from packetclip.zeek.client import open_session
from packetclip.zeek.codec import Count, ErrorMessage, Event, Port, decode_message, encode_event_message
from packetclip.zeek.service import HELLO_EVENT, VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings, read_serve_table, serve_settings
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import PeerOptions, ScriptOptions, ZeekPeer, requests_from_capture, shard_of
from tests.zeek_peer.windowed_bundle import windowed_copy

HERE = Path(__file__).resolve().parent

SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]  # what the Zeek scripts subscribe to


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


class GatedEngine:
    """The real engine behind a gate: classification waits until the test opens it (requests stay queued)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.gate = threading.Event()
        self.reloads: list[Path] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def classify(self, connections: Any, sensor: str = "") -> list[Verdict]:
        self.gate.wait(30)
        return self.engine.classify(connections, sensor)

    def reload(self, path: Path) -> None:
        self.reloads.append(path)
        self.engine.reload(path)


def run_live(
    engine: Any,
    body: Callable[[ZeekPeer, Sidecar], Awaitable[None]],
    options: PeerOptions | None = None,
    watcher: Any = None,
    **settings: Any,
) -> Sidecar:
    """Start the peer and a sidecar, wait for its hello, run `body`, stop the sidecar (it drains)."""

    async def main() -> Sidecar:
        async with ZeekPeer(options) as peer:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            config = ServeSettings(zeek=peer.url, reconnect_initial=0.05, reconnect_max=0.2, **settings)
            sidecar = Sidecar(config, engine, watcher)
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                await peer.wait_for(lambda received: any(r.event.name == HELLO_EVENT for r in received))
                await body(peer, sidecar)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)
            return sidecar

    return asyncio.run(main())


async def replay(peer: ZeekPeer, requests: list[Any], timeout: float = 60.0) -> dict[str, Event]:
    """Publish the requests as Zeek does and wait for one verdict per uid."""
    for request in requests:
        await peer.publish(request.topic, request.event)
    uids = {request.uid for request in requests}
    await peer.wait_for(lambda received: uids <= _verdict_uids(received), timeout)
    return {r.event.args[0]: r.event for r in peer.events(VERDICT_EVENT) if r.event.args[0] in uids}


def _verdict_uids(received: list[Any]) -> set[str]:
    return {r.event.args[0] for r in received if r.event.name == VERDICT_EVENT}


def test_zeek7_peer_three_element_events_and_no_unicode_escapes(bundle_path: Path) -> None:
    """Three-element events (metadata vector) are read; non-ASCII text travels raw (Zeek <= 7 refuses \\uXXXX
    escapes, so an escaped verdict would be answered with an error and never handled): here a node name."""
    requests = list(requests_from_capture(LAB_CAPTURE, ScriptOptions(node="wörker-1")))[:40]

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        answers = await replay(peer, requests)
        assert len(answers) == 40
        assert peer.errors_sent == []
        assert {r.topic for r in peer.events(VERDICT_EVENT)} == {"packetclip/verdict/wörker-1/"}

    options = PeerOptions(version="7.0.5", metadata=True, reject_unicode_escapes=True)
    run_live(Engine(bundle_path), body, options)


def test_the_peer_mimicking_zeek7_refuses_unicode_escapes() -> None:
    """The check above can fail: the same peer answers an ASCII-escaped message with Zeek's error."""

    async def main() -> list[dict[str, str]]:
        async with ZeekPeer(PeerOptions(reject_unicode_escapes=True)) as peer:
            session = await open_session(peer.url, ["packetclip/verdict/"], "test")
            escaped = json.dumps(encode_event_message("packetclip/control/", Event(HELLO_EVENT, ["é", "v"])))
            await session.send_text(escaped)
            message = decode_message(json.loads(await session.receive()))
            await session.close()
            assert message == ErrorMessage("deserialization_failed", "failed to decode JSON object")
            return peer.errors_sent

    assert len(asyncio.run(main())) >= 1


def _request(uid: str, frames: list[str], node: str = "worker-1", **changes: Any) -> Event:
    args: dict[str, Any] = {
        "node": node,
        "uid": uid,
        "orig_h": ipaddress.ip_address("10.0.0.1"),
        "orig_p": Port(40000, "tcp"),
        "resp_h": ipaddress.ip_address("10.0.0.2"),
        "resp_p": Port(22, "tcp"),
        "link_type": Count(1),
        "ts": [1.0 + i for i in range(len(frames))],
        "is_orig": [True] * len(frames),
        "frames": frames,
    }
    args.update(changes)
    return Event("PacketCLIP::request", list(args.values()))


def test_bad_input_is_counted_answered_when_possible_and_the_sidecar_keeps_serving(bundle_path: Path) -> None:
    """Invalid JSON (Zeek's raw \\v escape, non-UTF-8 bytes), JSON nested past the decoders' recursion, a
    non-event, an unknown event, wrong argument types, bad base64, an oversized frame, frames that carry no IP and
    an error message from Zeek are each counted by kind; the requests with a readable uid and node get an "error" verdict with the reason; a good request sent
    afterwards still gets its verdict."""
    good = next(iter(requests_from_capture(LAB_CAPTURE, ScriptOptions(node="worker-1"))))
    arp = base64.b64encode(bytes(12) + b"\x08\x06" + bytes(28)).decode()
    topic = "packetclip/request/"

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await peer.broadcast_raw(b'{"type":"data-message","topic":"x\x0b","@data-type":"none","data":{}}')
        await peer.broadcast_raw(b"[" * 100_000)  # deeper than the decoder recurses (RecursionError)
        await peer.broadcast_raw(
            b'{"type":"data-message","topic":"packetclip/request/","@data-type":"vector","data":'
            + b'[{"@data-type":"vector","data":' * 3000
            + b"[]"
            + b"}]" * 3000
            + b"}"
        )  # valid JSON whose Broker vectors nest deeper than the codec recurses
        await peer.broadcast_raw(b'{"type":"error","code":"x","context":"\xff\xfe"}')
        await peer.broadcast_raw(
            b'{"type":"error","code":"deserialization_failed","context":"failed to create Zeek event"}'
        )
        await peer.send_raw(
            topic, b'{"type":"data-message","topic":"packetclip/request/","@data-type":"count","data":1}'
        )
        await peer.publish(topic, Event("PacketCLIP::unknown", ["x"]))
        await peer.publish(topic, _request("Cwrongtype", [arp], link_type=1))  # integer where count is due
        await peer.publish(topic, _request("Cbadb64", ["not base64!"]))
        await peer.publish(topic, _request("Coversized", [base64.b64encode(bytes(70_000)).decode()]))
        await peer.publish(topic, _request("Cnoip", [arp]))
        await peer.publish(topic, _request("Cbadnode", [arp], node="a/b"))
        # node "": its verdicts' topic would be packetclip/verdict//
        await peer.publish(topic, _request("Cemptynode", [arp], node=""))
        await peer.publish(good.topic, good.event)
        await peer.wait_for(lambda received: good.uid in _verdict_uids(received))
        await peer.wait_for(
            lambda received: {"Cwrongtype", "Cbadb64", "Coversized", "Cnoip"} <= _verdict_uids(received)
        )

    sidecar = run_live(Engine(bundle_path), body)
    errors = sidecar.metrics.errors
    assert errors["invalid_json"] == 2 and errors["too_deep"] == 2
    assert errors["peer_error"] == 1
    assert errors["not_an_event"] == 1 and errors["unknown_event"] == 1
    assert errors["wrong_type"] == 1 and errors["bad_base64"] == 1 and errors["oversized_frame"] == 1
    assert errors["no_usable_frame"] == 1 and errors["bad_node"] == 2
    assert sidecar.metrics.requests == 7
    assert sidecar.metrics.verdicts["error"] == 4
    assert sum(count for label, count in sidecar.metrics.verdicts.items() if label != "error") == 1


def test_a_zeek_restart_loses_no_queued_request(bundle_path: Path) -> None:
    """Requests received before Zeek went away are classified while it is down, and their verdicts are sent
    after the sidecar has reconnected and re-subscribed (and said hello again)."""
    engine = GatedEngine(Engine(bundle_path))
    requests = list(requests_from_capture(LAB_CAPTURE))[:50]

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        for request in requests:
            await peer.publish(request.topic, request.event)
        while sidecar.metrics.requests < len(requests):
            await asyncio.sleep(0.01)
        await peer.stop()
        engine.gate.set()
        await asyncio.sleep(0.3)
        await peer.start()
        uids = {r.uid for r in requests}
        await peer.wait_for(lambda received: uids <= _verdict_uids(received), 30)
        assert len(peer.events(HELLO_EVENT)) == 2
        assert peer.handshakes == ["packetclip-sidecar", "packetclip-sidecar"]

    sidecar = run_live(engine, body)
    assert sidecar.metrics.reconnects >= 1
    assert sidecar.metrics.verdicts.total() == 50 and "error" not in sidecar.metrics.verdicts


def test_above_capacity_the_newest_requests_are_refused_counted_and_answered(bundle_path: Path) -> None:
    """With the engine held and a queue of 5, of 30 requests the first batch and the next 5 queued ones are
    classified, every later one is answered at once with an "overloaded" error verdict and counted as dropped
    (order_hold 0: requests go to the queue as they arrive)."""
    engine = GatedEngine(Engine(bundle_path))
    requests = list(requests_from_capture(LAB_CAPTURE))[:30]

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await peer.publish(requests[0].topic, requests[0].event)
        while sidecar.metrics.batches == 0 and not sidecar._inflight:
            await asyncio.sleep(0.005)
        for request in requests[1:]:
            await peer.publish(request.topic, request.event)
        uids = {r.uid for r in requests[6:]}
        await peer.wait_for(lambda received: uids <= _verdict_uids(received))
        engine.gate.set()
        await peer.wait_for(lambda received: len(_verdict_uids(received)) == 30)
        errors = [r.event.args for r in peer.events(VERDICT_EVENT) if r.event.args[1] == "error"]
        assert {args[0] for args in errors} == uids
        assert all("overloaded" in args[4] for args in errors)

    sidecar = run_live(engine, body, max_queue=5, order_hold=0.0)
    assert sidecar.metrics.dropped["queue_full"] == 24
    assert sidecar.metrics.verdicts.total() == 30 and sidecar.metrics.verdicts["error"] == 24


def test_a_shard_sees_only_its_topic_and_metrics_are_served(bundle_path: Path) -> None:
    """`--shard 1` subscribes to packetclip/request/1/: of a capture sharded in two by originator, only the
    connections whose originator maps to shard 1 are answered. The metrics endpoint reports them."""
    requests = list(requests_from_capture(LAB_CAPTURE, ScriptOptions(shards=2)))
    mine = [r for r in requests if r.topic == "packetclip/request/1/"]
    assert mine and len(mine) < len(requests)
    assert all(shard_of(str(r.event.args[2]), 2) == 1 for r in mine)
    scraped: list[str] = []

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        for request in requests:
            await peer.publish(request.topic, request.event)
        await peer.wait_for(lambda received: {r.uid for r in mine} <= _verdict_uids(received))
        await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
        scraped.append(
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        )

    sidecar = run_live(Engine(bundle_path), body, shard=1, metrics_port=0)
    assert sidecar.metrics.requests == len(mine)
    text = scraped[0]
    assert f"packetclip_serve_requests_total {len(mine)}" in text
    assert 'packetclip_serve_latency_seconds_bucket{le="+Inf"} ' + str(len(mine)) in text
    assert "packetclip_serve_connected 1" in text


class OneActivation:
    """A store watcher whose activation changes once (to the same bundle folder)."""

    def __init__(self, path: Path):
        self.path = path
        self.pending = True

    def changed(self) -> bool:
        changed, self.pending = self.pending, False
        return changed

    def active_bundle_path(self) -> Path:
        return self.path


def test_an_activation_reloads_between_batches_and_says_hello_again(bundle_path: Path) -> None:
    engine = GatedEngine(Engine(bundle_path))
    engine.gate.set()
    request = next(iter(requests_from_capture(LAB_CAPTURE)))

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await replay(peer, [request])
        await peer.wait_for(lambda received: sum(r.event.name == HELLO_EVENT for r in received) == 2)

    sidecar = run_live(engine, body, watcher=OneActivation(bundle_path))
    assert engine.reloads == [bundle_path] and sidecar.metrics.model_reloads == 1


def window_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "featurizer window" in r.getMessage()]


def test_a_model_trained_on_more_seconds_than_zeek_sends_is_warned_about_at_start(
    bundle_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bundle whose featurizer window is longer than max_wait (the scripts' PacketCLIP::max_wait) learnt from
    packets Zeek never sends: the sidecar says so when it starts; a window up to max_wait, or none, is quiet."""
    caplog.set_level(logging.WARNING, logger="packetclip.zeek.service")
    for window, max_wait, warned in (
        (8.0, 5.0, True),
        (5.0, 5.0, False),
        (8.0, 8.0, False),
        (None, 5.0, False),
    ):
        caplog.clear()
        bundle = windowed_copy(bundle_path, tmp_path / f"bundle-{window}-{max_wait}", window)
        Sidecar(ServeSettings(max_wait=max_wait), Engine(bundle))
        assert bool(window_warnings(caplog)) == warned, (window, max_wait)
    caplog.clear()
    Sidecar(ServeSettings(max_wait=1.5), Engine(windowed_copy(bundle_path, tmp_path / "bundle-5", 5.0)))
    assert window_warnings(caplog) == [
        f"model {Engine(bundle_path).model_version} was trained on the packets of each connection's first 5 s (its "
        "featurizer window), but Zeek sends a connection 1.5 s after its first packet (max_wait): set "
        "PacketCLIP::max_wait and --max-wait to at least 5 s"
    ]


def test_a_reload_to_a_model_with_a_longer_window_is_warned_about(
    bundle_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="packetclip.zeek.service")
    longer = windowed_copy(bundle_path, tmp_path / "bundle-longer", 8.0)
    engine = GatedEngine(Engine(windowed_copy(bundle_path, tmp_path / "bundle-5", 5.0)))
    engine.gate.set()
    request = next(iter(requests_from_capture(LAB_CAPTURE)))

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        assert window_warnings(caplog) == []  # the first model's window is max_wait
        await replay(peer, [request])

    sidecar = run_live(engine, body, watcher=OneActivation(longer), order_hold=0.0)
    assert engine.reloads == [longer] and sidecar.metrics.model_reloads == 1
    assert len(window_warnings(caplog)) == 1


def test_the_peer_refuses_a_wrong_path_and_the_sidecar_retries(bundle_path: Path) -> None:
    """Zeek's endpoint answers another path with invalid_uri and close 1008; the sidecar counts a failed connect
    and retries with backoff instead of giving up."""

    async def main() -> tuple[list[dict[str, str]], int]:
        async with ZeekPeer() as peer:
            settings = ServeSettings(
                zeek=peer.url.replace("/v1/messages/json", "/v1/other"), reconnect_initial=0.01
            )
            sidecar = Sidecar(settings, Engine(bundle_path))
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            while sidecar.metrics.errors["connect_failed"] < 2:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(task, 5)
            return peer.errors_sent, sidecar.metrics.errors["connect_failed"]

    errors, failures = asyncio.run(main())
    assert errors[0] == {
        "type": "error",
        "code": "invalid_uri",
        "context": "Invalid URI - use /v1/messages/json",
    }
    assert failures >= 2


def test_serve_table_of_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[serve]\nzeek = "ws://10.0.0.1:27759/v1/messages/json"\nshard = 2\nreconnect_max = 5\n'
    )
    assert read_serve_table(config) == {
        "zeek": "ws://10.0.0.1:27759/v1/messages/json",
        "shard": 2,
        "reconnect_max": 5.0,
    }
    config.write_text("[serve]\nshard = 1\nshards = 2\n")
    assert serve_settings(config).shards == 2  # the sidecar scales responder counts by it
    config.write_text("[serve]\nshard = 2\nshards = 2\n")
    with pytest.raises(ConfigError, match="shard 2 of 2 shards"):
        serve_settings(config)
    config.write_text("[serve]\nshard_count = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'shard_count'"):
        read_serve_table(config)
    config.write_text('[serve]\nmax_queue = "big"\n')
    with pytest.raises(ConfigError, match="max_queue"):
        read_serve_table(config)


def test_serve_command_refuses_a_bad_url(bundle_path: Path) -> None:
    result = CliRunner().invoke(serve, ["--zeek", "http://127.0.0.1:1/", "--model", str(bundle_path)])
    assert result.exit_code != 0 and "ws://" in result.output
    for url, words in (
        ("ws://127.0.0.1:99999/v1/messages/json", "0-65535"),
        ("wss:///v1/messages/json", "no host"),
    ):
        result = CliRunner().invoke(serve, ["--zeek", url, "--model", str(bundle_path)])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, url


def test_a_busy_metrics_port_is_a_one_line_error(bundle_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [
            "--zeek",
            "ws://127.0.0.1:1/v1/messages/json",
            "--model",
            str(bundle_path),
            "--metrics-port",
            str(port),
        ]
        result = CliRunner().invoke(serve, argv)
    assert result.exit_code == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in result.output
    assert isinstance(result.exception, SystemExit)


def test_metrics_on_a_non_loopback_address_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from packetclip.zeek.metrics import Metrics, MetricsServer

    with caplog.at_level(logging.WARNING):
        MetricsServer(Metrics(), "127.0.0.1", 0).start().close()
        assert "no authentication" not in caplog.text
        MetricsServer(Metrics(), "0.0.0.0", 0).start().close()
    assert "reachable from other hosts" in caplog.text


def test_request_json_from_the_emulation_is_what_zeek_would_send() -> None:
    """The emulated scripts' requests carry the contract's types in order (count link type, ports with protocol,
    vectors of double/bool/base64 string) and frames cut at snaplen."""
    request = next(iter(requests_from_capture(LAB_CAPTURE, ScriptOptions(snaplen=64))))
    args = request.event.args
    assert isinstance(args[6], Count) and isinstance(args[3], Port)
    assert all(isinstance(t, float) for t in args[7]) and all(isinstance(b, bool) for b in args[8])
    assert all(len(base64.b64decode(f)) <= 64 for f in args[9])
    assert args[0] == "capture.pcap" and request.topic == "packetclip/request/"


def test_the_serving_engine_scales_responder_counts_by_the_shard_count(bundle_path: Path) -> None:
    engine, _ = open_serving_engine(str(bundle_path), None, None, 16, shards=4)
    assert engine.inbound.shards == 4 and engine.shards == 4
