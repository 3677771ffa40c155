"""The flow baselines run end to end on the committed sample, write every metric, and beat chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from packetclip_training.baselines.cli import baseline
from packetclip_training.baselines.flow_models import subsample_per_class
from packetclip_training.baselines.scoring import coarse_scores, one_vs_rest_auc

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
LEVEL_KEYS = {
    "classes",
    "test_rows_per_class",
    "auc",
    "mauc",
    "mauc_without_benign",
    "macro_f1",
    "accuracy",
    "confusion_matrix",
    "heldout_variant_rows",
    "heldout_variant_accuracy",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("flows")
    result = CliRunner().invoke(
        baseline, ["flows", "--dataset", str(SAMPLE), "--out", str(out), "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "flows_lightgbm.md").is_file() and (out / "flows_xgboost.md").is_file()
    return {name: json.loads((out / f"flows_{name}.json").read_text()) for name in ("lightgbm", "xgboost")}


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_json_holds_every_metric(results, name):
    result = results[name]
    assert result["model"] == name and result["features"]["resp_port"] is True
    assert result["training"]["seconds"] > 0 and result["training"]["rounds"] >= 1
    assert 0 < len(result["feature_importance_top15"]) <= 15
    for level, count in (("coarse", 4), ("fine", 11)):
        report = result[level]
        assert set(report) >= LEVEL_KEYS
        assert len(report["classes"]) == count and set(report["auc"]) == set(report["classes"])
        matrix = np.array(report["confusion_matrix"]["counts"])
        assert matrix.shape == (count, count) and matrix.sum() == result["rows"]["test"]
        assert report["heldout_variant_rows"] > 0 and 0 <= report["heldout_variant_accuracy"] <= 1
        assert 0 <= report["macro_f1"] <= 1


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_beats_chance_on_coarse_classes(results, name):
    aucs = results[name]["coarse"]["auc"]
    assert all(value is not None and value > 0.75 for value in aucs.values()), aucs
    assert results[name]["coarse"]["macro_f1"] > 0.5


def test_no_resp_port_run_is_written_separately(tmp_path):
    args = [
        "flows",
        "--dataset",
        str(SAMPLE),
        "--out",
        str(tmp_path),
        "--model",
        "lightgbm",
        "--no-resp-port",
    ]
    result = CliRunner().invoke(baseline, args)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "flows_lightgbm_no_resp_port.json").read_text())
    assert "resp_p" not in written["features"]["names"] and written["features"]["resp_port"] is False


def _pairwise_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_auc_matches_brute_force_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    truth = rng.choice(classes, size=300)
    scores = rng.integers(0, 5, size=(300, 3)).astype(float)  # few distinct values: many ties
    aucs = one_vs_rest_auc(truth, scores, classes)
    for column, name in enumerate(classes):
        assert aucs[name] == pytest.approx(_pairwise_auc(truth == name, scores[:, column]))


def test_auc_is_none_for_a_class_absent_from_test():
    truth = np.array(["a", "a", "b", "b"])
    aucs = one_vs_rest_auc(truth, np.random.default_rng(1).random((4, 3)), ["a", "b", "c"])
    assert aucs["c"] is None and aucs["a"] is not None


def test_coarse_scores_sum_their_fine_classes():
    fine = np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    scores, classes = coarse_scores(
        fine, ["syn", "udp", "calm"], {"syn": "dos", "udp": "dos", "calm": "benign"}
    )
    assert classes == ["benign", "dos"]
    np.testing.assert_allclose(scores, [[0.7, 0.3], [0.1, 0.9]])


def test_subsample_caps_large_classes_and_keeps_rare_ones():
    labels = np.array(["big"] * 100 + ["rare"] * 3)
    kept = subsample_per_class(labels, max_per_class=10, seed=5)
    assert (labels[kept] == "big").sum() == 10 and (labels[kept] == "rare").sum() == 3
    np.testing.assert_array_equal(kept, subsample_per_class(labels, max_per_class=10, seed=5))
    assert not np.array_equal(kept, subsample_per_class(labels, max_per_class=10, seed=6))
