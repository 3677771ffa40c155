"""The Suricata sidecar against a real Suricata 7 (unix-socket pcap mode, packetclip's rules and config).

Proves, end to end: Suricata's sampled packets become one verdict per flow (eve-style records with Suricata's
flow_id and Community ID) for every attacker of the lab capture; the verdicts are those `packetclip classify`
gives the same capture (same flows by 5-tuple and first timestamp); flagged originators go into Suricata's
dataset and the next pass raises `packetclip.rules` alerts for exactly them, and leave it when their time is up;
a malformed eve line and a Suricata crash with a restart are survived and counted.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest

from packetclip.engine import Engine
from packetclip.output import verdict_record
from packetclip.pipeline import classify_captures
from packetclip.suricata.agreement import compare, whole_frames_capture
from packetclip.suricata.control import CommandRefused, SuricataControl
from packetclip.suricata.datasets import DatasetFeedback
from packetclip.suricata.eve import parse_timestamp
from packetclip.suricata.follow import EveFileFollower
from packetclip.suricata.sidecar import SidecarSettings, SuricataSidecar
from packetclip.suricata.verdicts import FileSink
from tests.runtime.test_engine import runtime_bundle
from tests.suricata.suricata_lab import LAB, SURICATA, SuricataProcess, eve_records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SURICATA is None, reason="suricata is not installed (scripts/install-suricata)"),
]
FLAG_SID = 9470010
NO_WAIT = 3600.0  # max_wait longer than the capture: flows end at max_packets or Suricata's flow record only


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attackers() -> set[str]:
    with (LAB / "labels.tsv").open() as handle:
        return {row["attacker_ip"] for row in csv.DictReader(handle, delimiter="\t")}


def wait_for(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "lab-quick-whole.pcap"
    assert (
        whole_frames_capture(LAB / "capture.pcap", path) > 0
    )  # the lab capture has cut frames (snaplen 256)
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_live_verdicts_feedback_expiry_and_restart(bundle_path: Path, capture: Path, tmp_path: Path) -> None:
    suricata = SuricataProcess(tmp_path / "suricata")
    verdicts = tmp_path / "verdicts.json"
    clock = FakeClock()
    feedback = DatasetFeedback(SuricataControl(suricata.socket), threshold=0.0, ttl=600.0, clock=clock)
    engine = Engine(bundle_path)
    sidecar = SuricataSidecar(
        engine,
        EveFileFollower(suricata.eve),
        FileSink(verdicts),
        feedback,
        SidecarSettings(sensor=capture.name, max_wait=NO_WAIT, poll_timeout=0.05),
    )
    stop = threading.Event()
    thread = threading.Thread(target=sidecar.run, args=(stop,), daemon=True)
    try:
        suricata.start()
        thread.start()
        # pass 1: every sampled flow gets a verdict once Suricata logs its end
        suricata.replay(capture)
        flows_pass1 = len(eve_records(suricata.eve, "flow"))
        wait_for(lambda: sidecar.counts.flows_classified >= flows_pass1)
        first = records(verdicts)
        assert len(first) == flows_pass1 > 300
        assert {r["event_type"] for r in first} == {"packetclip"}
        suricata_flows = {r["flow_id"]: r for r in eve_records(suricata.eve, "flow")}
        for record in first:
            assert record["community_id"] == suricata_flows[record["flow_id"]]["community_id"]
            verdict = record["packetclip"]
            assert set(verdict) >= {"label", "attack", "score", "scores", "explanation", "model"}
            assert abs(sum(verdict["scores"].values()) - 1.0) < 1e-4 and verdict["explanation"]
        assert attackers() <= {r["src_ip"] for r in first}  # every attacker's flows were judged

        # agreement with `packetclip classify` on the same capture (fresh engine, same sensor name)
        reference: list[dict] = []
        classify_captures(Engine(bundle_path), [capture], lambda v: reference.append(verdict_record(v)))
        for record in first:
            record["ts"] = parse_timestamp(record["timestamp"])
        agreement = compare(reference, first)
        print("agreement with classify:", json.dumps(agreement.as_dict()))
        assert agreement.matched == len(first) == len(reference), agreement.as_dict()
        # same packets, same first-packet order, same model: the same verdicts
        assert agreement.label_agreement == agreement.attack_agreement == 1.0, agreement.as_dict()
        assert agreement.max_score_difference < 1e-5, agreement.as_dict()

        # verdicts back: flagged originators are in the dataset; pass 2 alerts on exactly them
        flagged = {r["src_ip"] for r in first if r["packetclip"]["label"] != "benign"}
        assert flagged and set(feedback.expires) == flagged
        suricata.replay(capture)
        flows_pass2 = len(eve_records(suricata.eve, "flow"))
        # pass 2's own verdicts re-flag hosts: let them all land before the clock moves past the TTL
        wait_for(lambda: sidecar.counts.flows_classified >= flows_pass2)
        alerts = [r for r in eve_records(suricata.eve, "alert") if r["alert"]["signature_id"] == FLAG_SID]
        assert {r["src_ip"] for r in alerts} == flagged

        # a malformed line in the stream is counted and skipped
        with suricata.eve.open("ab") as eve:
            eve.write(b'{"event_type": "alert", "packet": \n')
        wait_for(lambda: sidecar.parser.counts.malformed["not_json"] == 1)

        # expiry: past the TTL every address leaves Suricata's dataset
        some = sorted(flagged)[0]
        clock.now += 601.0
        wait_for(lambda: not feedback.expires and feedback.counts.removed >= len(flagged))
        with pytest.raises(CommandRefused):
            suricata.control.command(
                "dataset-lookup", {"setname": "packetclip-flagged-v4", "settype": "ipv4", "datavalue": some}
            )

        # Suricata crashes and comes back: the sidecar keeps following and re-flags after the restart
        classified = sidecar.counts.flows_classified
        suricata.crash()
        suricata.start()
        suricata.replay(capture)
        flows_now = len(eve_records(suricata.eve, "flow"))
        wait_for(lambda: sidecar.counts.flows_classified >= flows_now)
        assert sidecar.counts.flows_classified > classified
        wait_for(lambda: some in feedback.expires)
        suricata.control.command(
            "dataset-lookup", {"setname": "packetclip-flagged-v4", "settype": "ipv4", "datavalue": some}
        )
    finally:
        stop.set()
        thread.join(30)
        suricata.stop()
    stats = sidecar.stats()
    print(json.dumps(stats))
    assert stats["eve"]["malformed"] == {"not_json": 1}
    assert stats["sidecar"]["classify_errors"] == 0


def test_the_run_command_classifies_a_finished_eve_file(
    bundle_path: Path, capture: Path, tmp_path: Path
) -> None:
    """`packetclip suricata run` as an operator runs it, over the eve.json a real Suricata wrote for the capture:
    one eve-style verdict record per sampled flow, then it exits once the stream stays idle."""
    from click.testing import CliRunner

    from packetclip.commands.suricata import suricata as suricata_group

    process = SuricataProcess(tmp_path / "suricata")
    process.start()
    try:
        process.replay(capture)
    finally:
        process.stop()
    flows = {r["flow_id"] for r in eve_records(process.eve, "flow")}
    verdicts = tmp_path / "verdicts.json"
    result = CliRunner().invoke(
        suricata_group,
        [
            "run",
            "--eve",
            str(process.eve),
            "--verdicts",
            str(verdicts),
            "--model",
            str(bundle_path),
            "--stop-after-idle",
            "1",
            "--sensor",
            capture.name,
        ],
    )
    assert result.exit_code == 0, result.output
    written = records(verdicts)
    assert {r["flow_id"] for r in written} == flows and len(written) == len(flows)
    assert {r["event_type"] for r in written} == {"packetclip"}
    assert attackers() <= {r["src_ip"] for r in written if r["packetclip"]["label"] != "benign"}
