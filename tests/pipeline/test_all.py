"""`packetclip-train all` end to end on the committed dataset sample: every stage runs through its own command
(the real text encoder included), the bundle verifies, and a second run reuses every stage's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packetclip.bundle import check_fixtures, load_bundle
from packetclip_training.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


@pytest.mark.slow
def test_all_builds_a_verified_bundle_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    args = ["all", "--dataset", str(SAMPLE), "--work", str(work), "--bundle", str(bundle), "--pretrain-steps", "3",
            "--reasoner-epochs", "1", "--skip-evaluate"]  # fmt: skip
    assert main(args) == 0
    loaded = load_bundle(bundle)
    assert set(loaded.roles) == {"encoder", "reasoner"}
    assert max(check_fixtures(loaded).values()) < 1e-4
    assert loaded.manifest["training"]["encoder"]["steps"] == 3
    for stage in ("encoder/encoder.pt", "align/align.pt", "reasoner/reasoner.pt"):
        assert (work / stage).is_file(), stage
    capsys.readouterr()
    assert main([*args[:6], str(tmp_path / "bundle2"), *args[7:]]) == 0
    out = capsys.readouterr().out
    assert "[pretrain] reusing" in out and "[align] reusing" in out and "[reasoner] reusing" in out


@pytest.mark.slow
def test_evaluate_command_writes_its_report(tmp_path: Path) -> None:
    """`packetclip-train evaluate` through its CLI on checkpoints `all` made from the sample (the heavy parts —
    retraining for data scarcity and unseen classes, comparisons, timing — are skipped here and covered by
    tests/evaluation): the report folder holds README.md, results.json, headline.json and the figures."""
    work = tmp_path / "work"
    assert main(["all", "--dataset", str(SAMPLE), "--work", str(work), "--bundle", str(tmp_path / "bundle"),
                 "--pretrain-steps", "2", "--reasoner-epochs", "1", "--skip-evaluate"]) == 0  # fmt: skip
    reports = tmp_path / "reports"
    skips = [arg for part in ("comparisons", "scarcity", "unseen", "efficiency") for arg in ("--skip", part)]
    assert main(["evaluate", "--dataset", str(SAMPLE), "--encoder", str(work / "encoder" / "encoder.pt"),
                 "--align", str(work / "align" / "align.pt"), "--reasoner", str(work / "reasoner" / "reasoner.pt"),
                 "--out", str(reports), "--cache", str(work / "cache"), *skips]) == 0  # fmt: skip
    headline = json.loads((reports / "headline.json").read_text())
    assert 0.0 <= headline["4-class mAUC (coarse)"] <= 1.0
    text = (reports / "README.md").read_text()
    assert "## Headline" in text and "Zero-shot classification" in text
    for figure in ("roc_coarse.png", "confusion_fine.png", "embeddings.png"):
        assert (reports / figure).is_file()
