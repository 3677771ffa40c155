"""Zero-shot classification with aligned heads: class text embeddings, top-k fine accuracy, coarse accuracy.

Owns turning class prompts into one unit vector per fine class (prompts through g_T, normalised, averaged,
renormalised), scoring connections against them, and the accuracy figures. Does not train anything and does not
encode text itself: callers pass an encode function (the frozen text encoder, or a stand-in in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip_training.describe.describe import class_prompts
from packetclip_training.models.heads import AlignmentHeads

log = logging.getLogger(__name__)


def prompt_embeddings(
    encode: Callable[[list[str]], np.ndarray], classes: Sequence[str] = FINE_CLASSES
) -> np.ndarray:
    """Frozen text embeddings of every class's prompts, stacked in class order: float32 (all prompts, text_dim)."""
    texts = [prompt for fine in classes for prompt in class_prompts(fine)]
    return encode(texts)


def class_matrix(
    heads: AlignmentHeads, prompt_vectors: np.ndarray, classes: Sequence[str] = FINE_CLASSES
) -> torch.Tensor:
    """(C, D) unit class vectors: each class's prompts projected by g_T, averaged, renormalised."""
    counts = [len(class_prompts(fine)) for fine in classes]
    with torch.no_grad():
        projected = heads.project_texts(torch.from_numpy(prompt_vectors))
        means = [chunk.mean(dim=0) for chunk in torch.split(projected, counts)]
        return F.normalize(torch.stack(means), dim=-1)


def scores(heads: AlignmentHeads, packet_embeddings: np.ndarray, classes: torch.Tensor) -> np.ndarray:
    """(B, C) scaled cosine similarities (logits) of connections to class vectors."""
    with torch.no_grad():
        projected = heads.project_packets(torch.from_numpy(packet_embeddings))
        return (heads.logit_scale() * projected @ classes.T).numpy()


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose true class index is among the k highest logits (ties broken by class order)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def coarse_predictions(logits: np.ndarray, classes: Sequence[str] = FINE_CLASSES) -> np.ndarray:
    """Coarse class index per row: fine softmax probabilities summed per coarse class, then the largest."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    membership = np.zeros((len(classes), len(COARSE_CLASSES)), np.float64)
    for i, fine in enumerate(classes):
        membership[i, COARSE_CLASSES.index(FINE_TO_COARSE[fine])] = 1.0
    return np.argmax(probabilities @ membership, axis=1)


def evaluate(
    logits: np.ndarray, fine_labels: Sequence[str] | np.ndarray, classes: Sequence[str] = FINE_CLASSES
) -> dict[str, Any]:
    """Top-1/top-5 fine, coarse accuracy, and per-class top-1 of zero-shot logits against true fine labels.

    Labels outside `classes` are counted and left out with a warning.
    """
    index = {fine: i for i, fine in enumerate(classes)}
    known = np.asarray([str(label) in index for label in fine_labels], bool)
    if not known.all():
        log.warning(
            "%d rows have fine labels outside the classes; left out of zero-shot scores", int((~known).sum())
        )
    labels = np.asarray(
        [index[str(label)] for label, ok in zip(fine_labels, known, strict=True) if ok], np.int64
    )
    logits = logits[known]
    predicted = np.argmax(logits, axis=1) if len(labels) else np.zeros(0, np.int64)
    coarse_truth = np.asarray([COARSE_CLASSES.index(FINE_TO_COARSE[classes[i]]) for i in labels], np.int64)
    per_class = {
        fine: {"count": int((labels == i).sum()), "top1": float(np.mean(predicted[labels == i] == i))}
        for i, fine in enumerate(classes)
        if (labels == i).any()
    }
    return {
        "count": len(labels),
        "skipped_unknown_labels": int((~known).sum()),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "coarse_accuracy": float(np.mean(coarse_predictions(logits, classes) == coarse_truth))
        if len(labels)
        else 0.0,
        "mean_per_class_top1": float(np.mean([v["top1"] for v in per_class.values()])) if per_class else 0.0,
        "per_class_top1": per_class,
    }
