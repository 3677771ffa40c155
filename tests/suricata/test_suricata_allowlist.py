"""Allowlists on the Suricata path, against a real Suricata 7 (unix-socket pcap mode, packetclip's rules and
config) replaying the lab capture: the verdicts of the flows the sample allowlist names are written with `allowed`
and their reason, their labels and scores those of the same run without it, and their originator never reaches
Suricata's dataset while the other attackers' do; `packetclip suricata run --allowlist` writes the same flags.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from packetclip.allowlist import AllowlistFile
from packetclip.commands.suricata import suricata as suricata_group
from packetclip.engine import Engine
from packetclip.suricata.agreement import whole_frames_capture
from packetclip.suricata.control import CommandRefused, SuricataControl
from packetclip.suricata.datasets import DatasetFeedback
from packetclip.suricata.follow import EveFileFollower
from packetclip.suricata.sidecar import SidecarSettings, SuricataSidecar
from packetclip.suricata.verdicts import FileSink
from tests.runtime.test_engine import runtime_bundle
from tests.suricata.suricata_lab import LAB, SURICATA, SuricataProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SURICATA is None, reason="suricata is not installed (scripts/install-suricata)"),
]
SCANNER = "198.18.3.68"  # the lab sample's att3: port scan, DNS and NTP floods, SSH password guessing
ALLOWLIST = """
[[allow]]
reason = "att3 is the red team's box"
orig_nets = "198.18.3.68"
"""


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_sidecar(engine: Engine, eve: Path, verdicts: Path, feedback: DatasetFeedback | None) -> None:
    """Follow the finished eve file to its end and classify every flow."""
    sidecar = SuricataSidecar(
        engine,
        EveFileFollower(eve),
        FileSink(verdicts),
        feedback,
        SidecarSettings(sensor="lab-quick-whole.pcap", poll_timeout=0.05),
    )
    sidecar.run(threading.Event(), stop_after_idle=1.0)


def test_allowed_flows_are_marked_and_their_originator_stays_out_of_the_dataset(
    bundle_path: Path, tmp_path: Path
) -> None:
    capture = tmp_path / "lab-quick-whole.pcap"
    whole_frames_capture(LAB / "capture.pcap", capture)
    allowlist = tmp_path / "allow.toml"
    allowlist.write_text(ALLOWLIST)
    suricata = SuricataProcess(tmp_path / "suricata")
    try:
        suricata.start()
        suricata.replay(capture)
        plain, allowed = tmp_path / "plain.json", tmp_path / "allowed.json"
        run_sidecar(Engine(bundle_path), suricata.eve, plain, None)
        control = SuricataControl(suricata.socket)
        feedback = DatasetFeedback(control, threshold=0.0, ttl=600.0)
        try:
            run_sidecar(
                Engine(bundle_path, allowlist=AllowlistFile(allowlist)), suricata.eve, allowed, feedback
            )
            reference = {r["flow_id"]: r for r in records(plain)}
            written = records(allowed)
            assert {r["flow_id"] for r in written} == set(reference) and len(written) > 300
            for record in written:
                verdict, before = record["packetclip"], reference[record["flow_id"]]["packetclip"]
                assert before["allowed"] is False
                for key in ("label", "attack", "score", "scores"):
                    assert verdict[key] == before[key], key
                assert verdict["allowed"] is (record["src_ip"] == SCANNER)
                if verdict["allowed"]:
                    assert verdict["allow_reason"] == "att3 is the red team's box"
                    assert (
                        verdict["explanation"]
                        == f"{before['explanation']} Allowed: att3 is the red team's box."
                    )
            attackers = {r["src_ip"] for r in written if r["packetclip"]["label"] != "benign"}
            assert SCANNER in attackers and len(attackers) >= 3  # it would have been flagged, with the others
            assert set(feedback.expires) == attackers - {SCANNER}
            assert feedback.counts.allowed == sum(
                r["packetclip"]["allowed"] and r["packetclip"]["label"] != "benign" for r in written
            )
            with pytest.raises(CommandRefused):  # Suricata's own answer: not in its dataset
                suricata.control.command(
                    "dataset-lookup",
                    {"setname": "packetclip-flagged-v4", "settype": "ipv4", "datavalue": SCANNER},
                )
            for address in attackers - {SCANNER}:
                suricata.control.command(
                    "dataset-lookup",
                    {"setname": "packetclip-flagged-v4", "settype": "ipv4", "datavalue": address},
                )
        finally:
            control.close()
    finally:
        suricata.stop()

    # the command as an operator runs it, over the eve file that Suricata wrote: the same flags
    by_command = tmp_path / "command.json"
    result = CliRunner().invoke(
        suricata_group,
        [
            "run",
            "--eve",
            str(suricata.eve),
            "--verdicts",
            str(by_command),
            "--model",
            str(bundle_path),
            "--stop-after-idle",
            "1",
            "--sensor",
            capture.name,
            "--allowlist",
            str(allowlist),
        ],
    )
    assert result.exit_code == 0, result.output
    flags = {r["flow_id"]: r["packetclip"]["allowed"] for r in records(by_command)}
    assert flags == {r["flow_id"]: r["packetclip"]["allowed"] for r in records(allowed)}
    assert json.loads(result.stderr[result.stderr.index("{") :])["allowlist"]["allowed"] == sum(
        flags.values()
    )
