"""Lab runs end to end: a tiny catalogue of our own (ping, and a variant aimed outside the lab that must be
refused), and the real `quick` profile through the CLI with the real attack catalogue."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dpkt
import pytest

from packetclip.classes import FINE_CLASSES
from packetclip_training.dataset.sources import LABELS_COLUMNS
from packetclip_training.lab.cli import lab as lab_group
from packetclip_training.lab.context import LabContext
from packetclip_training.lab.profiles import PROFILES
from packetclip_training.lab.runner import run_lab

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class PingVariant:
    fine: str = "icmp_flood"
    name: str = "icmp_flood/test-ping"
    tool: str = "ping"
    heldout: bool = False
    max_seconds: float = 20.0
    target: str = "web"

    def command(self, lab: LabContext, scale: float) -> list[str]:
        address = lab.servers.get(self.target, self.target)
        return ["ping", "-i", "0.05", "-c", "40", address]


def _read_tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]


def _count_frames(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in dpkt.pcap.Reader(handle))


def test_tiny_catalogue_run(
    lab_ready: None, tmp_path: Path, leftovers: Callable[[str], dict[str, list[str]]]
) -> None:
    profile = replace(
        PROFILES["quick"], variants_per_fine=None, warmup_s=2.0, cooldown_s=1.0, max_packets=50_000
    )
    catalogue = [PingVariant(), PingVariant(name="icmp_flood/test-outside", target="8.8.8.8")]
    document = run_lab(
        profile,
        tmp_path,
        seed=7,
        catalogue=catalogue,
    )

    labels = _read_tsv(tmp_path / "labels.tsv")
    assert (tmp_path / "labels.tsv").read_text().split("\n")[0].split("\t") == LABELS_COLUMNS
    assert [row["variant"] for row in labels] == ["icmp_flood/test-ping"]  # the outside target never ran
    refused = [e for e in document["episodes"] if e["refused"]]
    assert len(refused) == 1 and "8.8.8.8" in refused[0]["refused"]
    row = labels[0]
    assert row["coarse"] == "dos" and row["target"] == "198.18.2.10" and row["heldout"] == "0"
    assert float(row["start_ts"]) < float(row["end_ts"])

    hosts = _read_tsv(tmp_path / "hosts.tsv")
    assert {h["role"] for h in hosts} == {"router", "attacker", "benign_client", "server", "reflector"}
    assert _count_frames(tmp_path / "capture.pcap") == document["capture"]["packets_captured"] > 80
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["seed"] == 7 and run_json["episodes"][0]["exit_status"] == 0
    assert sum(sum(stats["ok"].values()) for stats in run_json["benign"].values()) > 0
    assert not any(leftovers(run_json["run_id"]).values()), leftovers(run_json["run_id"])


@pytest.mark.slow
def test_quick_profile_through_cli(
    lab_ready: None, tmp_path: Path, leftovers: Callable[[str], dict[str, list[str]]]
) -> None:
    pytest.importorskip("packetclip_training.lab.attacks", reason="attack catalogue not present")
    lab_group.main(
        ["run", "--profile", "quick", "--out", str(tmp_path), "--seed", "11"], standalone_mode=False
    )
    labels = _read_tsv(tmp_path / "labels.tsv")
    hosts = _read_tsv(tmp_path / "hosts.tsv")
    # Attack classes come from labels.tsv; benign is every benign_client -> server connection (hosts.tsv roles).
    classes = {row["fine"] for row in labels} | {"benign" for h in hosts if h["role"] == "benign_client"}
    assert classes == set(FINE_CLASSES)
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert _count_frames(tmp_path / "capture.pcap") == run_json["capture"]["packets_captured"] > 1000
    assert run_json["wall_s"] < 180
    assert not any(leftovers(run_json["run_id"]).values()), leftovers(run_json["run_id"])
