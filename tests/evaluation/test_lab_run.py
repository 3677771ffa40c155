"""`packetclip-train evaluate-lab-run`: a bundle on the committed quick lab run, variant by variant."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from packetclip.bundle import default_bundle_path
from packetclip.context import RESPONDER_FEATURES
from packetclip.engine import Engine, Verdict
from packetclip.pipeline import classify_captures
from packetclip_training.cli import cli
from packetclip_training.dataset.labelling import Drop
from packetclip_training.dataset.sources import load_lab_run
from packetclip_training.evaluation.lab_run import BENIGN_ROW, evaluate_lab_run

LAB_QUICK = Path(__file__).resolve().parents[2] / "samples" / "lab-quick"


@pytest.fixture(scope="module")
def results() -> dict:
    return evaluate_lab_run(default_bundle_path(), LAB_QUICK)


def test_every_verdict_is_counted_once(results: dict) -> None:
    variants = results["variants"]
    assert results["connections"] == sum(v["connections"] for v in variants.values()) + sum(
        results["dropped"].values()
    )
    assert BENIGN_ROW in variants and variants[BENIGN_ROW]["coarse"] == "benign"
    run = load_lab_run(LAB_QUICK)
    assert set(variants) - {BENIGN_ROW} <= {e.variant for e in run.episodes}
    assert results["file_errors"] == []


def test_verdicts_are_those_of_classify_labelled_by_the_lab_rule(results: dict) -> None:
    """The recorder that keeps the victim-side rows must not change a verdict: recount from `classify`'s own path."""
    run = load_lab_run(LAB_QUICK)
    labeller = run.labeller()
    verdicts: list[Verdict] = []
    classify_captures(Engine(default_bundle_path()), run.captures, verdicts.append)
    assert len(verdicts) == results["connections"]
    own_class: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for verdict in verdicts:
        label = labeller.label(verdict)
        if isinstance(label, Drop):
            continue
        name = label.variant or BENIGN_ROW
        total[name] += 1
        own_class[name] += verdict.label == label.coarse
    for name, row in results["variants"].items():
        assert row["connections"] == total[name], name
        assert row["coarse_recall"] == pytest.approx(own_class[name] / total[name]), name
        assert sum(row["labels"].values()) == sum(row["attacks"].values()) == total[name]


def test_victim_side_means_say_what_the_traffic_was(results: dict) -> None:
    variants = results["variants"]
    for row in variants.values():
        assert list(row["victim_side"]) == list(RESPONDER_FEATURES)
        assert all(0.0 <= value <= 1.1 for value in row["victim_side"].values())
    # hping3's UDP flood goes to a port nobody answers on; the benign clients' requests are answered
    assert variants["udp_flood/hping3-ntp-1kpps"]["victim_side"]["victim_unanswered"] > 0.5
    assert variants[BENIGN_ROW]["victim_side"]["victim_unanswered"] < 0.1


def test_command_writes_json_and_markdown(tmp_path: Path, results: dict) -> None:
    result = CliRunner().invoke(cli, ["evaluate-lab-run", str(LAB_QUICK), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "lab-quick.lab-run.json").read_text())
    assert written["variants"] == json.loads(json.dumps(results["variants"]))
    markdown = (tmp_path / "lab-quick.lab-run.md").read_text()
    assert markdown == result.output
    assert "| syn_flood/hping3-80-2kpps |" in markdown


def test_a_folder_that_is_no_lab_run_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["evaluate-lab-run", str(tmp_path)])
    assert result.exit_code == 1
    assert "no capture" in result.output
