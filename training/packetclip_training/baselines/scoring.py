"""Scores of a flow baseline on a test split: per-class one-vs-rest AUC, mAUC, macro-F1, confusion matrices and
held-out-variant accuracy, for the fine classes and the coarse classes they roll up to.

Owns the metric definitions of the flow baselines. Does not train models. A class with no positive or no negative
row in the test split gets AUC None: there is no honest number for it.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

log = logging.getLogger(__name__)

BENIGN = "benign"


def coarse_scores(fine_scores: np.ndarray, fine_classes: list[str], fine_to_coarse: dict[str, str]):
    """Coarse class scores as the sum of their fine classes' scores; returns (scores, coarse class names)."""
    coarse_classes = sorted(set(fine_to_coarse[c] for c in fine_classes))
    scores = np.zeros((fine_scores.shape[0], len(coarse_classes)))
    for column, fine in enumerate(fine_classes):
        scores[:, coarse_classes.index(fine_to_coarse[fine])] += fine_scores[:, column]
    return scores, coarse_classes


def one_vs_rest_auc(truth: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for column, name in enumerate(classes):
        positive = truth == name
        if positive.all() or not positive.any():
            out[name] = None
            continue
        out[name] = float(roc_auc_score(positive, scores[:, column]))
    return out


def mean_auc(aucs: dict[str, float | None], exclude: tuple[str, ...] = ()) -> float | None:
    values = [v for k, v in aucs.items() if v is not None and k not in exclude]
    return float(np.mean(values)) if values else None


def level_report(truth: np.ndarray, scores: np.ndarray, classes: list[str], heldout: np.ndarray) -> dict:
    """Every metric for one label level (fine or coarse)."""
    predicted = np.asarray(classes, dtype=object)[scores.argmax(axis=1)]
    aucs = one_vs_rest_auc(truth, scores, classes)
    present = [c for c in classes if (truth == c).any()]
    report = {
        "classes": classes,
        "test_rows_per_class": {c: int((truth == c).sum()) for c in classes},
        "auc": aucs,
        "mauc": mean_auc(aucs),
        "mauc_without_benign": mean_auc(aucs, exclude=(BENIGN,)),
        # Averaged over the classes present in test: an absent class has no F1 to average.
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0))
        if present
        else None,
        "accuracy": float((predicted == truth).mean()) if len(truth) else None,
        "confusion_matrix": {
            "rows_true_columns_predicted": classes,
            "counts": confusion_matrix(truth, predicted, labels=classes).tolist() if len(truth) else [],
        },
        "heldout_variant_rows": int(heldout.sum()),
        "heldout_variant_accuracy": float((predicted[heldout] == truth[heldout]).mean())
        if heldout.any()
        else None,
    }
    return report
