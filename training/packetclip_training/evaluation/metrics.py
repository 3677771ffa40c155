"""Metrics of one model's class probabilities on labelled rows, as JSON-ready dicts with a count beside every number.

Owns: per-class one-vs-rest ROC AUC, mAUC with and without benign, per-class precision/recall/F1, macro-F1,
accuracy, top-k accuracy, the confusion matrix, the fine→coarse roll-up of probabilities, metrics on a subset of rows
(held-out variants, one source file) and the unseen-class detection score. The AUC and mAUC definitions are the flow
baselines' (`baselines.scoring`), imported so that model and baselines are judged by the same code.

Does not own: training, scoring rows with a model, figures or markdown.

A class with no positive or no negative row gets AUC None and a reason, and is left out of mAUC: there is no honest
number for it. Rows whose label is not a known class, or whose scores are not finite, are counted and skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from packetclip_training.baselines.scoring import BENIGN, coarse_scores, mean_auc, one_vs_rest_auc

log = logging.getLogger(__name__)

# Below this many rows a subset's numbers swing by several points when one row changes; the report flags them.
MIN_SUBSET_ROWS = 30
# The false-positive budget of an unseen-class detector: a sensor alerting on more than 1 % of other traffic
# would be switched off.
UNSEEN_FPR_LIMIT = 0.01


def as_class_names(truth: Sequence | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Truth as an object array of class names; integer labels are read as indices into `classes`.

    An index outside the class list becomes None, so that `clean_rows` counts and skips it.
    """
    values = np.asarray(truth)
    if values.dtype.kind in "iu":
        names = np.empty(len(values), dtype=object)
        inside = (values >= 0) & (values < len(classes))
        names[inside] = np.asarray(classes, dtype=object)[values[inside]]
        return names
    return values.astype(object)


def clean_rows(
    truth: Sequence | np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Rows fit to score: (truth names, probabilities, counts of skipped rows by reason).

    A shape mismatch is a caller's bug and raises; an unknown label or a non-finite score is bad data and is counted.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    names = as_class_names(truth, classes)
    if probabilities.ndim != 2 or probabilities.shape != (len(names), len(classes)):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}; expected ({len(names)}, {len(classes)}) "
            f"for {len(names)} truth rows and classes {list(classes)}"
        )
    known = np.isin(names, np.asarray(classes, dtype=object))
    finite = np.isfinite(probabilities).all(axis=1)
    skipped = {"unknown_label": int((~known).sum()), "non_finite_scores": int((known & ~finite).sum())}
    if any(skipped.values()):
        unknown = sorted({str(n) for n in names[~known]})[:5]
        log.warning("skipping rows: %s (unknown labels such as %s)", skipped, unknown)
    keep = known & finite
    return names[keep], probabilities[keep], skipped


def per_class_auc(truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """One-vs-rest ROC AUC per class with its positive and negative counts, and why it is None when it is."""
    aucs = one_vs_rest_auc(truth, probabilities, list(classes))
    out: dict[str, dict] = {}
    for name in classes:
        positives = int((truth == name).sum())
        negatives = len(truth) - positives
        reason = None
        if positives == 0:
            reason = "no positive rows"
        elif negatives == 0:
            reason = "no negative rows"
        out[name] = {
            "auc": aucs[name],
            "positives": positives,
            "negatives": negatives,
            "undefined_because": reason,
        }
    return out


def predicted_names(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The argmax class name of every row."""
    return np.asarray(classes, dtype=object)[np.asarray(probabilities).argmax(axis=1)]


def per_class_classification(
    truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, dict]:
    """Precision, recall, F1 and support (truth rows) of every class from argmax predictions.

    A class never predicted has precision 0; a class absent from truth has recall 0 and support 0.
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(classes), zero_division=0
    )
    predicted_counts = Counter(predicted.tolist())
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted_counts.get(name, 0)),
        }
        for i, name in enumerate(classes)
    }


def macro_f1(per_class: Mapping[str, Mapping], truth: np.ndarray) -> float | None:
    """Mean F1 over the classes present in truth (the baselines' definition): an absent class has no F1 to average."""
    present = [name for name, row in per_class.items() if row["support"] > 0]
    if not present or len(truth) == 0:
        return None
    return float(np.mean([per_class[name]["f1"] for name in present]))


def top_k_accuracy(
    truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], k: int
) -> float | None:
    """Share of rows whose true class is among the k highest-scored classes; ties broken by class order."""
    if len(truth) == 0:
        return None
    index = {name: i for i, name in enumerate(classes)}
    true_column = np.array([index[name] for name in truth])
    # Stable sort on the negated scores keeps the earlier class first among equal scores, as argmax does.
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float((top == true_column[:, None]).any(axis=1).mean())


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict:
    """Confusion counts with rows = truth and columns = prediction, both in `classes` order."""
    labels = list(classes)
    counts = confusion_matrix(truth, predicted, labels=labels).tolist() if len(truth) else []
    return {"rows_true_columns_predicted": labels, "counts": [[int(c) for c in row] for row in counts]}


def aggregate_to_coarse(
    fine_probabilities: np.ndarray,
    fine_classes: Sequence[str],
    fine_to_coarse: Mapping[str, str],
    coarse_classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Coarse probabilities as the sum of their fine classes' probabilities, columns in `coarse_classes` order.

    Without `coarse_classes` the order is that of first appearance in `fine_classes` (benign, dos, recon,
    bruteforce for the project's classes). A coarse class with no fine class gets a column of zeros.
    """
    summed, sorted_coarse = coarse_scores(
        np.asarray(fine_probabilities), list(fine_classes), dict(fine_to_coarse)
    )
    if coarse_classes is None:
        coarse_classes = list(dict.fromkeys(fine_to_coarse[c] for c in fine_classes))
    missing = set(sorted_coarse) - set(coarse_classes)
    if missing:
        raise ValueError(
            f"fine classes roll up to coarse classes {sorted(missing)} missing from {coarse_classes}"
        )
    out = np.zeros((summed.shape[0], len(coarse_classes)))
    for column, name in enumerate(coarse_classes):
        if name in sorted_coarse:
            out[:, column] = summed[:, sorted_coarse.index(name)]
    return out, list(coarse_classes)


def level_metrics(
    truth: Sequence | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    top_k: Sequence[int] = (1, 3, 5),
    benign: str = BENIGN,
) -> dict:
    """Every metric of one label level (coarse or fine), JSON-serialisable.

    Keys shared with `baselines.scoring.level_report` (`classes`, `test_rows_per_class`, `auc`, `mauc`,
    `mauc_without_benign`, `macro_f1`, `accuracy`, `confusion_matrix`) mean the same, so model and baseline
    results compare key by key. Top-k is reported only for k below the number of classes: at k = C it is 1 by
    construction.
    """
    classes = list(classes)
    names, scores, skipped = clean_rows(truth, probabilities, classes)
    auc_rows = per_class_auc(names, scores, classes)
    aucs = {name: row["auc"] for name, row in auc_rows.items()}
    predicted = predicted_names(scores, classes) if len(names) else np.empty(0, dtype=object)
    per_class = per_class_classification(names, predicted, classes) if len(names) else {}
    for name, row in per_class.items():
        row.update(auc=auc_rows[name]["auc"], negatives=auc_rows[name]["negatives"])
    undefined = {name: row["undefined_because"] for name, row in auc_rows.items() if row["auc"] is None}
    return {
        "classes": classes,
        "rows": len(names),
        "skipped_rows": skipped,
        "test_rows_per_class": {name: row["positives"] for name, row in auc_rows.items()},
        "auc": aucs,
        "auc_undefined": undefined,
        "auc_classes_counted": len(classes) - len(undefined),
        "mauc": mean_auc(aucs),
        "mauc_without_benign": mean_auc(aucs, exclude=(benign,)),
        "macro_f1": macro_f1(per_class, names),
        "accuracy": float((predicted == names).mean()) if len(names) else None,
        "top_k_accuracy": {
            str(k): top_k_accuracy(names, scores, classes, k) for k in top_k if k == 1 or k < len(classes)
        },
        "per_class": per_class,
        "confusion_matrix": confusion_counts(names, predicted, classes),
    }


def subset_metrics(
    truth: Sequence | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    mask: np.ndarray,
    *,
    min_rows: int = MIN_SUBSET_ROWS,
    top_k: Sequence[int] = (1, 3, 5),
) -> dict:
    """`level_metrics` on the rows where `mask` is True, with a status that says when the numbers are thin.

    status: "ok", "empty" (no rows; metrics None), "too_few_rows" (under `min_rows`), "single_class" (one true
    class: AUC is undefined, accuracy still means something). Also the true and predicted label counts, which
    is what a per-file table shows.
    """
    mask = np.asarray(mask, dtype=bool)
    names = as_class_names(truth, classes)
    if mask.shape != names.shape:
        raise ValueError(f"mask has shape {mask.shape}; truth has {names.shape}")
    scores = np.asarray(probabilities)[mask]
    metrics = level_metrics(names[mask], scores, classes, top_k=top_k) if mask.any() else None
    return {
        "rows": int(mask.sum()),
        **_subset_status(metrics, min_rows),
        "truth_distribution": _distribution(names[mask]),
        "predicted_distribution": _distribution(predicted_names(scores, classes)) if mask.any() else {},
        "metrics": metrics,
    }


def _subset_status(metrics: dict | None, min_rows: int) -> dict:
    """The first caveat is the status; the note names every caveat, so a thin one-class subset says both."""
    if metrics is None or metrics["rows"] == 0:
        return {"status": "empty", "note": "no scorable rows"}
    caveats: list[tuple[str, str]] = []
    if metrics["rows"] < min_rows:
        caveats.append(("too_few_rows", f"only {metrics['rows']} rows (< {min_rows}); numbers are noisy"))
    present = [name for name, count in metrics["test_rows_per_class"].items() if count > 0]
    if len(present) == 1:
        caveats.append(("single_class", f"only class {present[0]!r} present; AUC undefined"))
    if not caveats:
        return {"status": "ok", "note": ""}
    return {"status": caveats[0][0], "note": "; ".join(note for _, note in caveats)}


def _distribution(names: np.ndarray) -> dict[str, int]:
    return {
        str(name): int(count)
        for name, count in sorted(Counter(names.tolist()).items(), key=lambda kv: -kv[1])
    }


def grouped_metrics(
    truth: Sequence | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    groups: Sequence | np.ndarray,
    *,
    min_rows: int = MIN_SUBSET_ROWS,
) -> dict[str, dict]:
    """`subset_metrics` for every distinct value of `groups` (a source file, a held-out variant), largest first."""
    groups = np.asarray(groups).astype(str)
    order = sorted(Counter(groups.tolist()).items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        group: subset_metrics(truth, probabilities, classes, groups == group, min_rows=min_rows)
        for group, _ in order
    }


def unseen_class_metrics(
    truth: Sequence | np.ndarray,
    score_for_class: np.ndarray,
    class_name: str,
    *,
    fpr_limit: float = UNSEEN_FPR_LIMIT,
) -> dict:
    """How well one score separates a class the model never trained on from every other row.

    Returns its ROC AUC and the recall at the lowest threshold whose false-positive rate stays ≤ `fpr_limit`
    (a row is flagged when its score ≥ threshold), with the counts behind both. With fewer than 1/fpr_limit
    negatives the limit allows no false positive at all; the negative count shows it.
    """
    names = np.asarray(truth).astype(object)
    scores = np.asarray(score_for_class, dtype=np.float64)
    if scores.shape != names.shape:
        raise ValueError(f"score_for_class has shape {scores.shape}; truth has {names.shape}")
    finite = np.isfinite(scores)
    if not finite.all():
        log.warning(
            "unseen class %s: skipping %d rows with non-finite scores", class_name, int((~finite).sum())
        )
    positive = names[finite] == class_name
    scores = scores[finite]
    result = {
        "class": class_name,
        "positives": int(positive.sum()),
        "negatives": int((~positive).sum()),
        "skipped_rows": int((~finite).sum()),
        "fpr_limit": fpr_limit,
        "auc": None,
        "recall_at_fpr": None,
        "threshold": None,
        "false_positive_rate": None,
    }
    if result["positives"] == 0 or result["negatives"] == 0:
        log.warning(
            "unseen class %s: %d positives, %d negatives; no AUC",
            class_name,
            result["positives"],
            result["negatives"],
        )
        return result
    false_positive_rate, true_positive_rate, thresholds = roc_curve(positive, scores, drop_intermediate=False)
    within = np.flatnonzero(false_positive_rate <= fpr_limit)[-1]  # fpr never decreases; index 0 has fpr 0
    result.update(
        auc=float(roc_auc_score(positive, scores)),
        recall_at_fpr=float(true_positive_rate[within]),
        threshold=float(thresholds[within]) if np.isfinite(thresholds[within]) else None,
        false_positive_rate=float(false_positive_rate[within]),
    )
    return result
