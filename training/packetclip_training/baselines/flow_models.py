"""Training of the LightGBM and XGBoost flow baselines: per-class subsampling, fixed seeds, early stopping on val.

Owns model construction and fitting. Does not build features (`features`) or score predictions (`scoring`).
One multiclass model is trained on the fine labels; coarse scores are sums of fine scores (`scoring`).
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODELS = ("lightgbm", "xgboost")


@dataclass(frozen=True)
class BoostingConfig:
    """Hyper-parameters shared by both libraries, kept equal so the two baselines differ only in the library."""

    max_rounds: int = 600  # an upper bound; early stopping on val picks the real number
    early_stopping_rounds: int = 30  # rounds without val log-loss improvement before stopping
    learning_rate: float = 0.1
    max_depth: int = 8  # deep enough for flag/port interactions, shallow enough to train in seconds
    seed: int = 0
    threads: int = 2  # fixed so that timings compare across runs and machines of the same kind


@dataclass
class TrainedModel:
    name: str
    model: Any  # a LightGBM or XGBoost classifier (sklearn interface): predict_proba, feature_importances_
    classes: list[str]
    seconds: float
    rounds: int

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(features), dtype=np.float64)

    def importances(self, feature_names: list[str], top: int = 15) -> list[dict]:
        """Gain importances, normalised to sum to one, highest first."""
        gains = np.asarray(self.model.feature_importances_, dtype=np.float64)
        total = gains.sum() or 1.0
        order = np.argsort(-gains, kind="stable")[:top]
        return [{"feature": feature_names[i], "gain_share": float(gains[i] / total)} for i in order]


def subsample_per_class(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices keeping at most `max_per_class` rows of each label, drawn with a fixed seed.

    The full training split is dominated by floods; capping classes keeps training short without
    dropping any rare class.
    """
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        if len(rows) > max_per_class:
            rows = rng.choice(rows, size=max_per_class, replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def train(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: list[str],
    config: BoostingConfig,
) -> TrainedModel:
    """Fit one library's multiclass model; `train_y`/`val_y` are indices into `classes`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (expected one of {', '.join(MODELS)})")
    started = time.perf_counter()
    if name == "lightgbm":
        model, rounds = _fit_lightgbm(train_x, train_y, val_x, val_y, len(classes), config)
    else:
        model, rounds = _fit_xgboost(train_x, train_y, val_x, val_y, len(classes), config)
    seconds = time.perf_counter() - started
    log.info("%s: %d rounds in %.1f s on %d rows", name, rounds, seconds, len(train_y))
    return TrainedModel(name=name, model=model, classes=classes, seconds=seconds, rounds=rounds)


def _fit_lightgbm(train_x, train_y, val_x, val_y, n_classes: int, config: BoostingConfig):
    import lightgbm

    model = lightgbm.LGBMClassifier(
        objective="multiclass",
        num_class=n_classes,
        n_estimators=config.max_rounds,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        num_leaves=min(2**config.max_depth - 1, 63),
        random_state=config.seed,
        n_jobs=config.threads,
        deterministic=True,
        force_row_wise=True,
        importance_type="gain",
        verbose=-1,
    )
    # LightGBM 4.6 renamed eval_set to eval_X/eval_y; keep both working.
    validation = (
        {"eval_X": (val_x,), "eval_y": (val_y,)}
        if "eval_X" in inspect.signature(model.fit).parameters
        else {"eval_set": [(val_x, val_y)]}
    )
    model.fit(
        train_x,
        train_y,
        callbacks=[lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)],
        **validation,
    )
    return model, int(model.best_iteration_ or config.max_rounds)


def _fit_xgboost(train_x, train_y, val_x, val_y, n_classes: int, config: BoostingConfig):
    import xgboost

    model = xgboost.XGBClassifier(
        objective="multi:softprob",
        num_class=n_classes,
        n_estimators=config.max_rounds,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        tree_method="hist",
        random_state=config.seed,
        n_jobs=config.threads,
        early_stopping_rounds=config.early_stopping_rounds,
        eval_metric="mlogloss",
        importance_type="gain",
    )
    model.fit(train_x, train_y, eval_set=[(val_x, val_y)], verbose=False)
    return model, int(model.best_iteration) + 1
