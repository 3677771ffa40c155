"""Fitting a reasoner on frozen embeddings: what the `reasoner` command, the evaluation and the export share.

Owns assembling the reasoner's inputs from embedded splits (`training_arrays`; the concepts' text embeddings,
`concept_embeddings`), the stratified subsampling of the data-scarcity curve (`fraction_rows`), one fit with
validation during training (`fit_reasoner`) and the quick split metrics watched while training (`quick_metrics`).
Does not own the model (`models.reasoner`), its loop or its checkpoint (`reasoner.model`), embedding splits and
their contexts (`reasoner.data`), or the command and its outputs (`reasoner.cli`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import Mission
from packetclip_training.baselines.scoring import mean_auc, one_vs_rest_auc
from packetclip_training.models.heads import AlignmentHeads
from packetclip_training.models.reasoner import MissionGraphs, Reasoner, ReasonerConfig
from packetclip_training.reasoner.data import SplitEmbeddings, captured_part, mirrored_rows
from packetclip_training.reasoner.model import (
    TrainConfig,
    TrainingArrays,
    concept_targets,
    predict,
    train_reasoner,
)


def concept_embeddings(
    missions: Sequence[Mission], heads: AlignmentHeads, encode: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Every concept's words through the frozen text encoder and g_T: (K, D) unit rows, in graph order."""
    words = [concept for mission in missions for concept in mission.concepts()]
    with torch.no_grad():
        return heads.project_texts(torch.from_numpy(encode(words))).numpy()


def training_arrays(
    split: SplitEmbeddings, classes: Sequence[str], rows: np.ndarray | None = None
) -> TrainingArrays:
    """A split as the loop wants it; rows outside `rows` (or of classes not in `classes`) get label -1."""
    index = {fine: i for i, fine in enumerate(classes)}
    fine = np.asarray([index.get(str(label), -1) for label in split.columns["fine"]], np.int64)
    if rows is not None:
        keep = np.zeros(len(fine), bool)
        keep[rows] = True
        fine[~keep] = -1
    ts = split.columns["ts"].astype(np.float64)
    previous = split.previous
    age = np.where(previous >= 0, ts - ts[np.maximum(previous, 0)], np.inf)
    real = split.columns["source_kind"].astype(str) == "real" if "source_kind" in split.columns else None
    return TrainingArrays(split.connection, split.context, fine, previous, age, real)


def fraction_rows(fine: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified `fraction` of the rows of every fine class (at least one row per class)."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(fine):
        rows = np.flatnonzero(fine == label)
        picked.append(rng.choice(rows, max(1, round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


@dataclass
class FitResult:
    model: Reasoner
    curve: list[dict[str, Any]]
    classes: list[str]
    train_rows: int
    seconds: float


def fit_reasoner(
    train: SplitEmbeddings,
    val: SplitEmbeddings | None,
    heads: AlignmentHeads,
    missions: Sequence[Mission],
    concept_text: np.ndarray,
    train_config: TrainConfig,
    config: ReasonerConfig | None = None,
    classes: Sequence[str] = FINE_CLASSES,
    fraction: float = 1.0,
    exclude: np.ndarray | None = None,
) -> FitResult:
    """Train a reasoner on `train` (a stratified `fraction` of it, only `classes`, none of the rows `exclude`
    marks), validating on `val`."""
    started = time.monotonic()
    classes = list(classes)
    labels = np.asarray([str(v) for v in train.columns["fine"]])
    rows = None
    if fraction < 1.0:  # a share of the connections, each with all of its views
        captured = captured_part(train)
        rows = mirrored_rows(train, fraction_rows(labels[captured], fraction, train_config.seed))
    if exclude is not None:
        rows = np.arange(len(labels)) if rows is None else rows
        rows = rows[~exclude[rows]]
    arrays = training_arrays(train, classes, rows)
    if not (arrays.fine >= 0).any():
        raise ValueError("no training connection of the requested classes")
    graphs = MissionGraphs(missions, concept_text)
    packet_head = heads.packet_head
    if not isinstance(packet_head, torch.nn.Linear):
        raise ValueError("the reasoner needs a learned g_P: alignment trained with --heads packet or both")
    head = torch.nn.Linear(heads.packet_dim, packet_head.out_features)
    head.load_state_dict(packet_head.state_dict())
    settings = config or ReasonerConfig(embed_dim=train.connection.shape[1], aligned_dim=head.out_features)
    model = Reasoner(settings, graphs, head)
    targets = concept_targets(graphs, missions, classes)
    on_epoch = None
    if val is not None:
        val_arrays = training_arrays(val, classes)
        val_rows = _bounded_rows(val_arrays.fine, 3000, train_config.seed)

        def on_epoch(_: int, trained: Reasoner) -> dict[str, float]:
            coarse, fine, _, _ = predict(trained, val_arrays, val_rows)
            return quick_metrics(val.columns["fine"][val_rows], coarse, fine)

    curve = train_reasoner(model, arrays, classes, targets, train_config, on_epoch)
    return FitResult(model, curve, classes, int((arrays.fine >= 0).sum()), time.monotonic() - started)


def _bounded_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == label)
        picked.append(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def quick_metrics(truth_fine: np.ndarray, coarse: np.ndarray, fine: np.ndarray) -> dict[str, float]:
    """Coarse mAUC and fine top-1 (the numbers watched during training)."""
    truth = np.asarray([str(v) for v in truth_fine])
    coarse_truth = np.asarray([FINE_TO_COARSE.get(v, "") for v in truth])
    aucs = one_vs_rest_auc(coarse_truth, coarse, list(COARSE_CLASSES))
    predicted = np.asarray(FINE_CLASSES)[np.argmax(fine, axis=1)]
    return {
        "coarse_mauc": float(mean_auc(aucs) or float("nan")),
        "fine_top1": float(np.mean(predicted == truth)) if len(truth) else float("nan"),
        "coarse_accuracy": float(
            np.mean(np.asarray(COARSE_CLASSES)[np.argmax(coarse, axis=1)] == coarse_truth)
        )
        if len(truth)
        else float("nan"),
    }
