"""Evaluation metrics: AUC extremes, undefined classes, macro-F1 by hand, confusion counts, the coarse roll-up,
recall at 1 % false positives, skipped rows, and subsets of the committed sample's real test labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip_training.baselines.scoring import level_report
from packetclip_training.evaluation.metrics import (
    aggregate_to_coarse,
    grouped_metrics,
    level_metrics,
    subset_metrics,
    top_k_accuracy,
    unseen_class_metrics,
)

SAMPLE_TEST = Path(__file__).resolve().parents[2] / "samples" / "dataset-default" / "test.parquet"
ABC = ["a", "b", "c"]


def _one_hot(truth: list[str], classes: list[str]) -> np.ndarray:
    return np.array([[1.0 if name == c else 0.0 for c in classes] for name in truth])


def test_perfect_scorer_has_auc_one_and_reversed_scorer_zero():
    truth = ["a", "b", "c", "a", "b", "c", "a"]
    perfect = _one_hot(truth, ABC)
    assert level_metrics(truth, perfect, ABC)["auc"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    reversed_scores = 1.0 - perfect
    metrics = level_metrics(truth, reversed_scores, ABC)
    assert metrics["auc"] == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert metrics["mauc"] == 0.0


def test_class_absent_from_truth_has_no_auc_and_is_left_out_of_mauc():
    classes = [*ABC, "d"]
    truth = ["a", "b", "c", "a", "b", "c"]
    scores = _one_hot(truth, classes)
    scores[:, 3] = np.linspace(0, 1, len(truth))  # any number for d would be made up
    metrics = level_metrics(truth, scores, classes)
    assert metrics["auc"]["d"] is None
    assert metrics["auc_undefined"] == {"d": "no positive rows"}
    assert metrics["auc_classes_counted"] == 3
    assert metrics["mauc"] == 1.0
    assert metrics["test_rows_per_class"]["d"] == 0


def test_only_benign_rows_leave_benign_without_auc():
    metrics = level_metrics(["benign"] * 4, np.full((4, 2), 0.5), ["benign", "dos"])
    assert metrics["auc_undefined"] == {"benign": "no negative rows", "dos": "no positive rows"}
    assert metrics["mauc"] is None and metrics["mauc_without_benign"] is None


def test_mauc_without_benign_drops_only_benign():
    classes = ["benign", "dos", "recon"]
    truth = ["benign", "benign", "dos", "dos", "recon", "recon"]
    scores = _one_hot(truth, classes)
    scores[:, 0] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # benign scored lowest where it is true: AUC 0
    metrics = level_metrics(truth, scores, classes)
    assert metrics["auc"]["benign"] == 0.0
    assert metrics["mauc"] == pytest.approx(2 / 3)
    assert metrics["mauc_without_benign"] == 1.0


def test_macro_f1_and_per_class_scores_match_a_hand_computation():
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    metrics = level_metrics(truth, _one_hot(predicted, ABC), ABC)
    # a: tp 2, fp 0, fn 1 → P 1, R 2/3, F1 0.8. b: tp 1, fp 1, fn 1 → 0.5. c: tp 1, fp 1, fn 0 → P 1/2, R 1, F1 2/3.
    assert metrics["per_class"]["a"]["precision"] == 1.0
    assert metrics["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert metrics["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert [metrics["per_class"][c]["support"] for c in ABC] == [3, 2, 1]
    assert [metrics["per_class"][c]["predicted"] for c in ABC] == [2, 2, 2]


def test_confusion_counts_have_truth_rows_and_add_up():
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    confusion = level_metrics(truth, _one_hot(predicted, ABC), ABC)["confusion_matrix"]
    assert confusion["rows_true_columns_predicted"] == ABC
    assert confusion["counts"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    counts = np.array(confusion["counts"])
    assert counts.sum() == len(truth)
    assert counts.sum(axis=1).tolist() == [3, 2, 1]  # rows are truth
    assert counts.sum(axis=0).tolist() == [2, 2, 2]  # columns are predictions


def test_top_k_accuracy_counts_the_true_class_among_the_k_best():
    scores = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    truth = np.array(["a", "a", "c"], dtype=object)
    assert top_k_accuracy(truth, scores, ABC, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(truth, scores, ABC, 2) == pytest.approx(2 / 3)
    metrics = level_metrics(truth, scores, ABC, top_k=(1, 2, 3, 5))
    assert set(metrics["top_k_accuracy"]) == {"1", "2"}  # k ≥ 3 classes would be 1 by construction


def test_coarse_aggregation_sums_fine_probabilities_in_the_given_order():
    rng = np.random.default_rng(3)
    fine = rng.dirichlet(np.ones(len(FINE_CLASSES)), size=20)
    coarse, names = aggregate_to_coarse(fine, FINE_CLASSES, FINE_TO_COARSE)
    assert names == list(COARSE_CLASSES)  # first-appearance order, not alphabetical
    dos_columns = [FINE_CLASSES.index(c) for c in FINE_CLASSES if FINE_TO_COARSE[c] == "dos"]
    assert np.allclose(coarse[:, names.index("dos")], fine[:, dos_columns].sum(axis=1))
    assert np.allclose(coarse[:, names.index("bruteforce")], fine[:, FINE_CLASSES.index("dictionary_attack")])
    assert np.allclose(coarse.sum(axis=1), 1.0)
    reordered, order = aggregate_to_coarse(
        fine, FINE_CLASSES, FINE_TO_COARSE, ["recon", "dos", "bruteforce", "benign"]
    )
    assert np.allclose(reordered[:, 0], coarse[:, 2]) and order[0] == "recon"
    with pytest.raises(ValueError, match="benign"):
        aggregate_to_coarse(fine, FINE_CLASSES, FINE_TO_COARSE, ["dos", "recon", "bruteforce"])


def test_unseen_class_recall_at_one_percent_false_positives():
    negatives = np.arange(100) / 100  # 0.00 … 0.99
    positives = np.array([1.5, 1.2, 0.985, 0.975, 0.5])
    truth = np.array(["benign"] * 100 + ["new_attack"] * 5, dtype=object)
    result = unseen_class_metrics(truth, np.concatenate([negatives, positives]), "new_attack")
    # 1 % of 100 negatives allows one false positive (0.99): the lowest such threshold is the positive 0.985,
    # which flags 3 of 5 positives. Catching 0.975 would also flag the negative 0.98: 2 % false positives.
    assert result["threshold"] == pytest.approx(0.985)
    assert result["false_positive_rate"] == pytest.approx(0.01)
    assert result["recall_at_fpr"] == pytest.approx(3 / 5)
    # AUC by pair counting: 100 + 100 + 99 + 98 + 50.5 (0.5 ties with one negative) wins of 500 pairs.
    assert result["auc"] == pytest.approx(447.5 / 500)
    assert (result["positives"], result["negatives"]) == (5, 100)


def test_unseen_class_absent_from_truth_reports_counts_not_a_number():
    result = unseen_class_metrics(np.array(["benign"] * 5), np.linspace(0, 1, 5), "new_attack")
    assert result["auc"] is None and result["recall_at_fpr"] is None
    assert (result["positives"], result["negatives"]) == (0, 5)


def test_unknown_labels_and_non_finite_scores_are_counted_and_skipped():
    truth = ["a", "b", "zzz", "c", "a"]
    scores = _one_hot(["a", "b", "a", "c", "a"], ABC)
    scores[4, 1] = np.nan
    metrics = level_metrics(truth, scores, ABC)
    assert metrics["skipped_rows"] == {"unknown_label": 1, "non_finite_scores": 1}
    assert metrics["rows"] == 3
    assert metrics["accuracy"] == 1.0


def test_integer_truth_is_read_as_class_indices():
    by_name = level_metrics(["a", "b", "c", "b"], _one_hot(["a", "c", "c", "b"], ABC), ABC)
    by_index = level_metrics(np.array([0, 1, 2, 1]), _one_hot(["a", "c", "c", "b"], ABC), ABC)
    assert by_name == by_index


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="expected"):
        level_metrics(["a", "b"], np.zeros((2, 2)), ABC)


@pytest.fixture(scope="module")
def sample_test_labels() -> dict[str, np.ndarray]:
    table = pq.read_table(SAMPLE_TEST, columns=["fine", "coarse", "heldout", "source_file"])
    return {name: np.asarray(table[name].to_pylist(), dtype=object) for name in table.column_names}


def _noisy_scores(truth: np.ndarray, classes: tuple[str, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.dirichlet(np.ones(len(classes)), size=len(truth))
    scores[np.arange(len(truth)), [classes.index(name) for name in truth]] += rng.random(len(truth))
    return scores / scores.sum(axis=1, keepdims=True)


def test_level_metrics_agree_with_the_flow_baselines_definitions_on_real_labels(sample_test_labels):
    truth = sample_test_labels["fine"]
    scores = _noisy_scores(truth, FINE_CLASSES, seed=5)
    ours = level_metrics(truth, scores, FINE_CLASSES)
    theirs = level_report(truth, scores, list(FINE_CLASSES), sample_test_labels["heldout"].astype(bool))
    for key in ("classes", "test_rows_per_class", "auc", "mauc", "mauc_without_benign", "accuracy"):
        assert ours[key] == theirs[key], key
    assert ours["macro_f1"] == pytest.approx(theirs["macro_f1"])
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    json.dumps(ours, allow_nan=False)  # JSON-ready as it is


def test_per_file_and_heldout_subsets_say_when_numbers_are_thin(sample_test_labels):
    truth = sample_test_labels["fine"]
    scores = _noisy_scores(truth, FINE_CLASSES, seed=6)
    per_file = grouped_metrics(truth, scores, FINE_CLASSES, sample_test_labels["source_file"])
    assert sum(subset["rows"] for subset in per_file.values()) == len(truth)
    largest = next(iter(per_file.values()))
    _, counts = np.unique(np.asarray(sample_test_labels["source_file"], dtype=str), return_counts=True)
    assert largest["rows"] == counts.max() > 100 and largest["status"] == "ok"
    single_rows = [s for s in per_file.values() if s["rows"] == 1]
    assert single_rows and all(s["status"] == "too_few_rows" for s in single_rows)
    for subset in per_file.values():
        assert sum(subset["truth_distribution"].values()) == subset["rows"]
        assert sum(subset["predicted_distribution"].values()) == subset["rows"]
    mask = sample_test_labels["heldout"].astype(bool)
    heldout = subset_metrics(truth, scores, FINE_CLASSES, mask)
    assert 0 < heldout["rows"] == heldout["metrics"]["rows"] == int(mask.sum()) < len(truth)


def test_subset_of_one_class_is_flagged_and_an_empty_subset_has_no_metrics():
    truth = np.array(["a"] * 40 + ["b"] * 40, dtype=object)
    scores = _one_hot(list(truth), ["a", "b"])
    one_class = subset_metrics(truth, scores, ["a", "b"], truth == "a")
    assert one_class["status"] == "single_class" and one_class["metrics"]["accuracy"] == 1.0
    assert one_class["metrics"]["mauc"] is None
    empty = subset_metrics(truth, scores, ["a", "b"], np.zeros(len(truth), dtype=bool))
    assert empty["status"] == "empty" and empty["metrics"] is None and empty["rows"] == 0
