"""`packetclip-train all` end to end on the committed dataset sample: every stage runs through its own command
(the real text encoder included), the bundle verifies, and a second run reuses every stage's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packetclip.bundle import check_fixtures, load_bundle, load_mission_space
from packetclip_training.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


def _train_rows() -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(SAMPLE / "train.parquet").num_rows


@pytest.mark.slow
def test_all_builds_a_verified_bundle_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    args = [
        "all",
        "--dataset",
        str(SAMPLE),
        "--work",
        str(work),
        "--bundle",
        str(bundle),
        "--pretrain-steps",
        "3",
        "--reasoner-epochs",
        "1",
        "--skip-evaluate",
    ]
    assert main(args) == 0
    loaded = load_bundle(bundle)
    assert set(loaded.roles) == {"encoder", "reasoner"}
    assert max(check_fixtures(loaded).values()) < 1e-4
    assert loaded.manifest["training"]["encoder"]["steps"] == 3
    for stage in ("encoder/encoder.pt", "align/align.pt", "align-missions/align.pt", "reasoner/reasoner.pt"):
        assert (work / stage).is_file(), stage
    # user missions get their own space: a second alignment of the encoder, with CLIP's one positive per pair
    assert loaded.manifest["training"]["alignment"]["config"]["class_weight"] == 1.0
    assert loaded.manifest["training"]["mission_alignment"]["config"]["class_weight"] == 0.0
    space = load_mission_space(loaded)
    assert space is not None and space.prototypes.shape[0] == len(loaded.fine_classes)
    record = json.loads((work / "reasoner" / "reasoner_metrics.json").read_text())
    assert record["train_config"]["one_sided"] and record["train_config"]["behaviour_dropout"] == 0.3
    assert record["train_config"]["rate_jitter"] == 0.5
    assert record["train_rows"] == 2 * _train_rows()  # every connection as captured and one-sided
    capsys.readouterr()
    assert main([*args[:6], str(tmp_path / "bundle2"), *args[7:]]) == 0
    out = capsys.readouterr().out
    assert "[pretrain] reusing" in out and "[align] reusing" in out and "[reasoner] reusing" in out
    assert "[align for user missions] reusing" in out


@pytest.mark.slow
def test_evaluate_command_writes_its_report(tmp_path: Path) -> None:
    """`packetclip-train evaluate` through its CLI on checkpoints `all` made from the sample (the heavy parts —
    retraining for data scarcity and unseen classes, comparisons, timing — are skipped here and covered by
    tests/evaluation): the report folder holds README.md, results.json, headline.json and the figures."""
    work = tmp_path / "work"
    assert (
        main(
            [
                "all",
                "--dataset",
                str(SAMPLE),
                "--work",
                str(work),
                "--bundle",
                str(tmp_path / "bundle"),
                "--pretrain-steps",
                "2",
                "--reasoner-epochs",
                "1",
                "--skip-evaluate",
            ]
        )
        == 0
    )
    reports = tmp_path / "reports"
    skips = [arg for part in ("comparisons", "scarcity", "unseen", "efficiency") for arg in ("--skip", part)]
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                str(SAMPLE),
                "--encoder",
                str(work / "encoder" / "encoder.pt"),
                "--align",
                str(work / "align" / "align.pt"),
                "--reasoner",
                str(work / "reasoner" / "reasoner.pt"),
                "--out",
                str(reports),
                "--cache",
                str(work / "cache"),
                *skips,
            ]
        )
        == 0
    )
    two_sided = tmp_path / "two-sided"
    assert (
        main(
            [
                "reasoner",
                "--dataset",
                str(SAMPLE),
                "--encoder",
                str(work / "encoder" / "encoder.pt"),
                "--align",
                str(work / "align" / "align.pt"),
                "--out",
                str(two_sided),
                "--cache",
                str(work / "cache"),
                "--epochs",
                "1",
                "--two-sided-only",
                "--behaviour-dropout",
                "0",
                "--rate-jitter",
                "0",
            ]
        )
        == 0
    )
    record = json.loads((two_sided / "reasoner_metrics.json").read_text())
    assert not record["train_config"]["one_sided"] and record["train_config"]["behaviour_dropout"] == 0.0
    assert record["train_config"]["rate_jitter"] == 0.0
    assert record["train_rows"] == _train_rows()
    headline = json.loads((reports / "headline.json").read_text())
    assert 0.0 <= headline["4-class mAUC (coarse)"] <= 1.0
    text = (reports / "README.md").read_text()
    assert "## Headline" in text and "Zero-shot classification" in text
    for figure in ("roc_coarse.png", "confusion_fine.png", "embeddings.png"):
        assert (reports / figure).is_file()
    # the operating point: chosen on the validation split's real benign connections, judged on the test split
    decision = json.loads((reports / "decision.json").read_text())
    assert 0.0 < decision["attack_threshold"] <= 1.0 and decision["calibration_false_alarms"] == 0.0
    assert "## Operating point" in text and "operating point: benign false alarms, lab test split" in headline
    assert "## Real traffic" in text and "| PacketCLIP at its operating point |" in text
    exported = tmp_path / "bundle-with-point"
    assert (
        main(
            [
                "export",
                "--dataset",
                str(SAMPLE),
                "--encoder",
                str(work / "encoder" / "encoder.pt"),
                "--align",
                str(work / "align" / "align.pt"),
                "--reasoner",
                str(work / "reasoner" / "reasoner.pt"),
                "--decision",
                str(reports / "decision.json"),
                "--out",
                str(exported),
                "--cache",
                str(work / "cache"),
            ]
        )
        == 0
    )
    assert load_bundle(exported).attack_threshold == decision["attack_threshold"]
