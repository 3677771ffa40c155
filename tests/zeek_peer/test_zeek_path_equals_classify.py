"""The Zeek path gives every connection the verdict `packetclip classify` gives it (issue 20, item 2: one
definition of what the model sees, then an equality test between the Zeek path, driven exactly as the scripts
collect, and classify with no special order flag).

Zeek path: each capture's requests as collection.zeek collects and transport.zeek publishes them, with the scripts' defaults
(`max_packets` 30, `max_wait` 5 s: a connection's first 30 frames among those within 5 s of its first, published
at its 30th frame, when it ends, by the timer or at the end of the capture), in a publication order a real Zeek
could produce (`script_stand_in.publication_schedule`); each capture is a Zeek node of its own, published one after
the other through the Zeek-faithful peer to a sidecar with `packetclip serve`'s defaults (`max_wait` 5 s,
`order_slack` 0.5 s, `order_hold` 5.5 s; only its queue is made long enough for every request, since the peer
publishes far faster than the engine classifies and an overloaded sidecar answers `error`). Reference: `classify_captures` with its defaults, as `packetclip
classify` runs with no flag. Both run the shipped default bundle with `featurizer.window` set to 5 s in a copy
(the model, the scripts and classify then cut connections alike, whichever bundle is shipped).

Asserted per capture: the same connections (uids) on both sides, each with one verdict; identical label, attack
and explanation; scores within 1e-5 (the two sides batch differently, and onnxruntime sums batches of other
shapes in another order); no request arrived after its place had passed or left the reorder window early; no
error verdict. The same comparison with the bundle's window removed on the classify side (classify keeps 30
packets whatever their time, Zeek sends 5 s) gives other labels (asserted), so the comparison can fail.

Fragments, the one thing the two paths cannot agree on: for a fragmented datagram Zeek raises `new_packet` once,
with the fragment that completed it, while classify keeps every fragment. The peer's emulation refuses such a
connection (`FragmentedConnection`) rather than invent frames Zeek would not send, and a capture holding one is
not compared; the test lists those captures and checks that each really has a connection the tracker attributed a
later fragment to (with the extended corpus: packet-captures/amp.dns.RRSIG.fragmented.pcap). Every other capture
in CAPTURES is compared in full.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from packetclip.engine import Engine, Verdict
from packetclip.pipeline import classify_captures
from packetclip.zeek.service import HELLO_EVENT, VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import FragmentedConnection, ScriptOptions, ScriptRequest, ZeekPeer
from tests.zeek_peer.script_stand_in import publication_schedule
from tests.zeek_peer.windowed_bundle import windowed_copy

HERE = Path(__file__).resolve().parent

SCRIPT_MAX_WAIT = ScriptOptions().max_wait  # PacketCLIP::max_wait's default, 5 s
# the real captures compared, relative to the real-capture folder; those of the extended corpus only when it is there
CAPTURES = (
    "zeek/testing/btest/Traces/ssh/sshguess.pcap",  # SSH password guessing (issue 20's example of disagreement)
    "zeek/testing/btest/Traces/nmap-vsn.pcap",
    "zeek/testing/btest/Traces/ftp/bruteforce.pcap",
    "nDPI/tests/cfgs/default/pcap/android.pcap",
    "suricata-verify/tests/firewall/tcp-session-syn-flood-drop-precedence/input.pcap",
    "packet-captures/amp.UDP.isakmp.pcap",  # public DDoS captures (extended corpus)
    "packet-captures/amp.UDP.snmp.src161.pcapng",
    "packet-captures/amp.dns.RRSIG.fragmented.pcap",
    "packet-captures/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",
)
SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]
SCORE_TOLERANCE = 1e-5
Answer = tuple[str, str, float, str]  # label, attack, score, explanation


@pytest.fixture(scope="module")
def windowed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped default bundle with the default recipe's window, 5 s: the scripts' max_wait."""
    source = runtime_bundle(tmp_path_factory)
    return windowed_copy(source, tmp_path_factory.mktemp("windowed") / "bundle", SCRIPT_MAX_WAIT)


def zeek_path(
    bundle: Path, nodes: dict[str, list[ScriptRequest]]
) -> tuple[dict[str, dict[str, Answer]], Sidecar]:
    """Every node's requests published in the order given, node after node, to a sidecar with serve's defaults;
    each node's verdicts by uid."""

    async def main() -> tuple[dict[str, dict[str, Answer]], Sidecar]:
        async with ZeekPeer() as peer:
            peer.script_subscriptions = list(SCRIPT_TOPICS)
            total = sum(len(requests) for requests in nodes.values())
            # the peer publishes far faster than the engine classifies: a queue for every request, so that none
            # is refused for overload (a load question, not what is compared)
            settings = ServeSettings(zeek=peer.url, max_queue=max(total, ServeSettings.max_queue))
            sidecar = Sidecar(settings, Engine(bundle))
            stop = asyncio.Event()
            task = asyncio.create_task(sidecar.run(stop))
            try:
                await peer.wait_for(lambda received: any(r.event.name == HELLO_EVENT for r in received))
                for requests in nodes.values():
                    for request in requests:
                        await peer.publish(request.topic, request.event)
                # the last requests of each node leave the reorder window after order_hold (5.5 s)
                await peer.wait_for(
                    lambda received: sum(r.event.name == VERDICT_EVENT for r in received) >= total, 600
                )
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
            verdicts = peer.events(VERDICT_EVENT)
            assert peer.type_errors == [] and peer.errors_sent == []
            answers: dict[str, dict[str, Answer]] = {}
            for received in verdicts:
                node = received.topic.removeprefix("packetclip/verdict/").removesuffix("/")
                uid, label, attack, score, explanation, _ = received.event.args
                assert uid not in answers.setdefault(node, {}), f"{node} {uid}: two verdicts"
                answers[node][uid] = (label, attack, score, explanation)
            return answers, sidecar

    return asyncio.run(main())


def classify_path(bundle: Path, capture: Path) -> dict[str, Answer]:
    verdicts: list[Verdict] = []
    classify_captures(Engine(bundle), [capture], verdicts.append)  # no order flag: classify's default
    answers = {v.uid: (v.label, v.attack, v.score, v.explanation) for v in verdicts}
    assert len(answers) == len(verdicts), f"{capture.name}: a uid with two verdicts"
    return answers


def differences(got: dict[str, Answer], expected: dict[str, Answer]) -> list[str]:
    """The uids whose label, attack or explanation differ, or whose scores differ by more than the tolerance."""
    assert got.keys() == expected.keys()
    return [
        uid
        for uid, answer in expected.items()
        if got[uid][:2] != answer[:2]
        or got[uid][3] != answer[3]
        or abs(got[uid][2] - answer[2]) > SCORE_TOLERANCE
    ]


def test_the_zeek_path_gives_every_connection_classifys_verdict(
    windowed_bundle: Path, real_data: Path, tmp_path: Path
) -> None:
    captures = [LAB_CAPTURE, *(real_data / name for name in CAPTURES if (real_data / name).is_file())]
    assert len(captures) >= 6  # the lab sample and the committed real captures at least
    nodes: dict[str, list[ScriptRequest]] = {}
    fragmented: list[str] = []
    for seed, capture in enumerate(captures):
        try:
            schedule = publication_schedule(capture, seed, ScriptOptions(node=capture.name))
        except FragmentedConnection:
            fragmented.append(capture.name)
            continue
        nodes[capture.name] = [published.request for published in schedule]
    assert len(nodes) == len(captures) - len(fragmented) and len(nodes) >= 6
    assert set(fragmented) <= {"amp.dns.RRSIG.fragmented.pcap"}, fragmented

    answers, sidecar = zeek_path(windowed_bundle, nodes)
    assert sidecar.metrics.order_late == 0 and sidecar.metrics.order_forced == 0
    assert sidecar.metrics.errors.total() == 0 and "error" not in sidecar.metrics.verdicts
    paths = {capture.name: capture for capture in captures}
    agreement = {}
    for name, requests in nodes.items():
        expected = classify_path(windowed_bundle, paths[name])
        assert {request.uid for request in requests} == answers[name].keys() == expected.keys(), name
        assert differences(answers[name], expected) == [], name
        agreement[name] = len(expected)
    # the lab sample's 399 connections and the committed real captures' at least (the extended corpus adds
    # the public DDoS captures' thousands)
    assert agreement[LAB_CAPTURE.name] > 300 and sum(agreement.values()) > 600

    # the comparison can fail: classify without the window keeps 30 packets whatever their time
    unwindowed = windowed_copy(windowed_bundle, tmp_path / "unwindowed", None)
    name = LAB_CAPTURE.name
    assert differences(answers[name], classify_path(unwindowed, paths[name]))
