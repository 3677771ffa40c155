"""Allowlists on the Zeek path, through the Zeek-faithful peer and `script_stand_in.OfflineZeek` (transport.zeek's
bookkeeping): a verdict the sidecar's allowlist allows is preceded by `PacketCLIP::allowed(uid, reason)` with the
types transport.zeek declares (the peer drops an event whose types differ), its `packetclip.log` row has `allowed` set
with label and score as sent, and neither it nor its user-written missions raise a notice; the scripts' own
`allow_*` options allow what the sidecar did not, naming themselves in the explanation; an edit of the allowlist
reaches a running sidecar between batches, and a broken edit keeps the list in force and is counted in the
metrics. The real scripts' side is the btest tests/zeek/tests/allowlist.zeek.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from packetclip.allowlist import AllowlistFile
from packetclip.bundle import Bundle
from packetclip.engine import Engine
from packetclip.missions import load_missions
from packetclip.user_missions import UserMissionScorer
from packetclip.zeek.service import ALLOWED_EVENT, MISSION_SCORES_EVENT, VERDICT_EVENT, Sidecar
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.support import hashed_text_vectors
from tests.zeek_peer.peer import ScriptOptions, ZeekPeer, requests_from_capture
from tests.zeek_peer.script_stand_in import publication_schedule
from tests.zeek_peer.test_serve import replay as publish_and_wait
from tests.zeek_peer.test_serve import run_live
from tests.zeek_peer.test_user_missions_zeek import replay

HERE = Path(__file__).resolve().parent

REPO = HERE.parents[1]
SAMPLE_ALLOWLIST = REPO / "samples" / "allowlist.toml"
SCANNER, NTP_SERVER, DNS_SERVER = "198.18.3.68", "198.18.2.16", "198.18.2.14"
SCANNER_REASON = "att3 is the security team's scanner: its scans are scheduled"
NTP_REASON = "the NTP server is load-tested by operations"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def scored_missions(bundle: Bundle) -> UserMissionScorer:
    """The sample's NTP-flood mission with the stand-in text encoder: every verdict gets a mission score."""
    return UserMissionScorer(bundle, hashed_text_vectors, load_missions(REPO / "samples" / "missions"))


def sample_reason(request: Any, label: str) -> str | None:
    """samples/allowlist.toml, written out independently: att3's recon, then UDP to the NTP server's port 123."""
    orig_h, resp_h, resp_p = (str(request.event.args[i]) for i in (2, 4, 5))
    if orig_h == SCANNER and label == "recon":
        return SCANNER_REASON
    if resp_h == NTP_SERVER and resp_p == "123/udp":
        return NTP_REASON
    return None


def test_allowed_verdicts_reach_zeeks_log_marked_and_raise_no_notice(bundle_path: Path) -> None:
    requests = [p.request for p in publication_schedule(LAB_CAPTURE, 0, ScriptOptions(node="zeek"))]
    engine = Engine(bundle_path, user_missions=scored_missions, allowlist=AllowlistFile(SAMPLE_ALLOWLIST))
    zeek, peer = replay(
        engine,
        requests,
        allow_resp_nets={
            ipaddress.ip_network(f"{DNS_SERVER}/32")
        },  # the scripts' own option, beside the sidecar's
        mission_thresholds={"ntp_flood": 0.0},  # every mission score would raise a notice
    )
    assert peer.type_errors == [] and zeek.requests_lost == 0 and zeek.verdicts_unmatched == 0
    assert sorted(row.uid for row in zeek.rows) == sorted(request.uid for request in requests)

    # on the verdict topic, per connection: allowed (when allowed), mission scores, verdict
    order = [(r.event.name, r.event.args) for r in peer.received if r.event.name != "PacketCLIP::hello"]
    sent_reasons: dict[str, str] = {}
    for position, (name, args) in enumerate(order):
        if name == ALLOWED_EVENT:
            assert order[position + 1][0] == MISSION_SCORES_EVENT and order[position + 2][0] == VERDICT_EVENT
            assert order[position + 1][1][0] == order[position + 2][1][0] == args[0]
            sent_reasons[args[0]] = args[1]

    by_uid = {request.uid: request for request in requests}
    notices = {uid for _, _, uid in zeek.notices}
    would_alert = 0
    for row in zeek.rows:
        request = by_uid[row.uid]
        reason = sample_reason(request, row.label)
        assert sent_reasons.get(row.uid) == reason, row
        if reason is not None:
            assert row.allowed and row.explanation.endswith(f" Allowed: {reason}.")
            assert "PacketCLIP::allow_" not in row.explanation  # the sidecar's reason, not the option's
            assert row.uid not in notices
            would_alert += row.label != "benign" and row.score >= 0.8
        elif str(request.event.args[4]) == DNS_SERVER and row.label != "error":
            assert row.allowed and row.explanation.endswith(" Allowed: PacketCLIP::allow_resp_nets.")
            assert row.uid not in notices
        else:
            assert not row.allowed and "Allowed:" not in row.explanation
            assert ("PacketCLIP::UserMission", str(request.event.args[2]), row.uid) in zeek.notices
    # what the allowlist kept back would have raised notices: the flood to the NTP server, the scanner's scans
    assert would_alert > 40
    assert len(sent_reasons) == sum(sample_reason(by_uid[r.uid], r.label) is not None for r in zeek.rows)
    assert any(note != "PacketCLIP::UserMission" for note, _, _ in zeek.notices)


def test_without_an_allowlist_the_sidecar_sends_no_allowed_event(bundle_path: Path) -> None:
    requests = [p.request for p in publication_schedule(LAB_CAPTURE, 0, ScriptOptions(node="zeek"))][:60]
    zeek, peer = replay(Engine(bundle_path), requests)
    assert peer.events(ALLOWED_EVENT) == [] and not any(row.allowed for row in zeek.rows)
    assert len(zeek.rows) == len(requests)


def test_an_edit_reaches_a_running_sidecar_and_a_broken_one_is_counted(
    bundle_path: Path, tmp_path: Path
) -> None:
    """Three rounds of the scanner's connections through one running sidecar: before the edit nothing is
    allowed, after it every one of them is, and after a broken edit the list before it still holds; the metrics
    endpoint reports the reload and the refused edit."""
    path = tmp_path / "allow.toml"
    path.write_text('[[allow]]\nreason = "someone else"\norig_nets = "192.0.2.1"\n')
    engine = Engine(bundle_path, allowlist=AllowlistFile(path, check_every=0.0))  # looked at every batch
    scanner = [r for r in requests_from_capture(LAB_CAPTURE) if str(r.event.args[2]) == SCANNER]
    rounds = [scanner[:25], scanner[25:50], scanner[50:75]]
    assert all(len(part) == 25 for part in rounds)
    allowed_per_round: list[int] = []
    scraped: list[str] = []

    def replace(text: str) -> None:
        partial = path.with_suffix(".new")
        partial.write_text(text)
        os.replace(partial, path)

    async def body(peer: ZeekPeer, sidecar: Sidecar) -> None:
        for number, part in enumerate(rounds):
            seen = len(peer.events(ALLOWED_EVENT))
            await publish_and_wait(peer, part)
            allowed = peer.events(ALLOWED_EVENT)[seen:]
            allowed_per_round.append(len({r.event.args[0] for r in allowed} & {r.uid for r in part}))
            if number == 0:
                replace('[[allow]]\nreason = "the scanner"\norig_nets = "198.18.3.0/24"\n')
            elif number == 1:
                replace('[[allow]]\nreason = "the scanner"\norig_nets = "198.18.3.0/24"\nclasses = "scan"\n')
        url = f"http://127.0.0.1:{sidecar.metrics_port}/metrics"
        scraped.append(
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
        )

    sidecar = run_live(engine, body, order_hold=0.0, metrics_port=0)
    assert allowed_per_round == [0, 25, 25]
    metrics = sidecar.metrics
    assert (metrics.allowlist_reloads, metrics.allowlist_errors, metrics.allowed) == (1, 1, 50)
    assert metrics.allowlist_entries == 1
    text = scraped[0]
    assert "packetclip_serve_allowlist_reloads_total 1" in text
    assert "packetclip_serve_allowlist_errors_total 1" in text
    assert "packetclip_serve_allowed_total 50" in text
