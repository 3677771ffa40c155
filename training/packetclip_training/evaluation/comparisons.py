"""Every model the evaluation compares, trained on the same rows of the same splits and scored on the same test rows.

Owns the "other" classifiers of the report: flow-feature boosting (what NSM teams deploy on conn.log facts), the
paper's Table II rows (PacketCLIP connection embeddings + XGBoost / LightGBM / a small DNN) and a frozen-encoder
linear probe. Each returns fine-class probabilities for the test rows in `FINE_CLASSES` order, so one metric code
path scores them all. Does not own metrics, figures or the reasoner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from packetclip.classes import FINE_CLASSES
from packetclip_training.baselines.flow_models import BoostingConfig
from packetclip_training.baselines.flow_models import train as train_boosting
from packetclip_training.models.probe import fit_linear_probe

log = logging.getLogger(__name__)

TABULAR_MODELS = ("lightgbm", "xgboost", "dnn", "linear")


@dataclass
class Scored:
    """One comparison model's output on the test rows."""

    name: str
    fine: np.ndarray  # float64 (n_test, 11) probabilities in FINE_CLASSES order
    seconds: float
    train_rows: int


def class_indices(labels: Sequence[object] | np.ndarray, classes: Sequence[str] = FINE_CLASSES) -> np.ndarray:
    """Index into `classes` per label, -1 for a label outside them."""
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index.get(str(label), -1) for label in labels], np.int64)


def capped_rows(labels: np.ndarray, cap: int, seed: int, fraction: float = 1.0) -> np.ndarray:
    """A stratified `fraction` of every class (≥ 1 row), then at most `cap` rows per class; labels < 0 dropped."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == label)
        count = min(cap, max(1, round(fraction * len(rows))))
        kept.append(rng.choice(rows, count, replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def _widen(probabilities: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Probabilities over the classes a model was trained on → all fine classes (absent classes get 0)."""
    out = np.zeros((len(probabilities), len(FINE_CLASSES)), np.float64)
    out[:, present] = probabilities
    return out


def fit_tabular(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    test_x: np.ndarray,
    seed: int = 0,
) -> Scored:
    """Train one tabular model on fine-class indices and score `test_x`; see TABULAR_MODELS."""
    started = time.monotonic()
    present = np.unique(train_y)
    remap = {int(c): i for i, c in enumerate(present)}
    y = np.asarray([remap[int(v)] for v in train_y], np.int64)
    val_keep = np.isin(val_y, present)
    vy = np.asarray([remap[int(v)] for v in val_y[val_keep]], np.int64)
    vx = val_x[val_keep]
    if name in ("lightgbm", "xgboost"):
        classes = [FINE_CLASSES[c] for c in present]
        model = train_boosting(name, train_x, y, vx, vy, classes, BoostingConfig(seed=seed))
        probabilities = model.predict_proba(test_x)
    elif name == "dnn":
        probabilities = _fit_dnn(train_x, y, vx, vy, test_x, len(present), seed)
    elif name == "linear":
        layer, mean, scale = fit_linear_probe(train_x.astype(np.float32), y, len(present))
        with torch.no_grad():
            logits = layer(torch.from_numpy(((test_x - mean) / scale).astype(np.float32)))
        probabilities = logits.softmax(dim=-1).numpy().astype(np.float64)
    else:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(TABULAR_MODELS)}")
    seconds = time.monotonic() - started
    log.info("%s: %d train rows, %.1f s", name, len(y), seconds)
    return Scored(name, _widen(probabilities, present), seconds, len(y))


def _fit_dnn(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    test_x: np.ndarray,
    classes: int,
    seed: int,
    epochs: int = 30,
) -> np.ndarray:
    """A two-hidden-layer MLP (the paper's DNN row) with early stopping on validation loss."""
    torch.manual_seed(seed)
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) / scale).astype(np.float32))

    x, y = tensor(train_x), torch.from_numpy(train_y)
    vx, vy = tensor(val_x), torch.from_numpy(val_y)
    model = nn.Sequential(
        nn.Linear(x.shape[1], 256),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, patience = float("inf"), None, 0
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(len(x), generator=generator).split(256):
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(vx), vy)) if len(vy) else 0.0
        if val_loss < best - 1e-4:
            best, best_state, patience = val_loss, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            patience += 1
            if patience >= 4:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        return model(tensor(test_x)).softmax(dim=-1).numpy().astype(np.float64)
