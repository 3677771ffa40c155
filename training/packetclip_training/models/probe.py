"""A quick frozen-encoder sanity check: a linear probe on connection embeddings.

Owns `probe_dataset`: embed the `train` split of a dataset with a frozen encoder, split those connections
class-stratified in two halves, fit a multinomial logistic regression on one half and score the other (averaged
over several seeded halvings), next to the same probe on a randomly initialised encoder of the same architecture
(the control that says whether pretraining helped). The halves share captures and episodes, so the numbers are
optimistic and only a sanity check; the project's evaluation, on flow- and time-disjoint splits, is elsewhere.
Connections of classes with fewer than 4 examples are left out (counted).

Run: `python -m packetclip_training.models.probe --checkpoint OUT/encoder.pt --dataset DIR [--dataset DIR2]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from packetclip_training.dataset.store import load_split
from packetclip_training.models.encoder import PacketEncoder, batch_tensors, load_checkpoint

log = logging.getLogger(__name__)

MIN_PER_CLASS = 4  # two per half, at least


def embed_connections(
    encoder: PacketEncoder, arrays: dict[str, np.ndarray], batch_size: int = 512
) -> np.ndarray:
    """(B, E) connection embeddings of `pack()`-shaped arrays."""
    encoder.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(arrays["valid"]), batch_size):
            chunk = {name: arrays[name][start : start + batch_size] for name in arrays}
            parts.append(encoder(*batch_tensors(chunk))[1].numpy())
    return np.concatenate(parts) if parts else np.zeros((0, encoder.config.embed_dim), np.float32)


def stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves holding about half of every class each."""
    rng = np.random.default_rng(seed)
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    for name in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == name))
        cut = len(rows) // 2
        first.append(rows[:cut])
        second.append(rows[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def fit_linear_probe(
    features: np.ndarray, labels: np.ndarray, classes: int, weight_decay: float = 1e-3, steps: int = 300
) -> tuple[torch.nn.Linear, np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised features; returns (layer, mean, scale)."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / scale).float()
    y = torch.from_numpy(labels).long()
    layer = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer, mean, scale


def classification_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 over the classes present in `truth`."""
    recalls, f1s = [], []
    for name in np.unique(truth):
        true_positive = float(np.sum((predicted == name) & (truth == name)))
        recall = true_positive / max(float(np.sum(truth == name)), 1.0)
        precision = true_positive / max(float(np.sum(predicted == name)), 1.0)
        recalls.append(recall)
        f1s.append(0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision))
    return {
        "accuracy": float(np.mean(truth == predicted)),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
    }


def _probe_scores(embeddings: np.ndarray, labels: np.ndarray, seed: int, repeats: int) -> dict[str, float]:
    """Scores averaged over `repeats` seeded halvings: on a few hundred connections one split is noise."""
    names, codes = np.unique(labels, return_inverse=True)
    runs = []
    for repeat in range(repeats):
        fit_rows, score_rows = stratified_halves(labels, seed + repeat)
        layer, mean, scale = fit_linear_probe(embeddings[fit_rows], codes[fit_rows], len(names))
        with torch.no_grad():
            logits = layer(torch.from_numpy((embeddings[score_rows] - mean) / scale).float())
        runs.append(classification_scores(codes[score_rows], logits.argmax(dim=1).numpy()))
    scores = {name: float(np.mean([r[name] for r in runs])) for name in runs[0]}
    scores["macro_f1_spread"] = float(np.std([r["macro_f1"] for r in runs]))
    return scores


def probe_dataset(
    encoder: PacketEncoder, directory: Path, seed: int = 0, label: str = "fine", repeats: int = 5
) -> dict[str, Any]:
    """Probe scores of `encoder` and of a random encoder of its architecture on `directory`'s train split."""
    arrays = load_split(directory, "train", columns=(label,))
    labels = arrays.pop(label).astype(str)
    names, counts = np.unique(labels, return_counts=True)
    kept_names = names[counts >= MIN_PER_CLASS]
    keep = np.isin(labels, kept_names) & arrays["valid"].any(axis=1)
    arrays = {name: values[keep] for name, values in arrays.items()}
    labels = labels[keep]
    torch.manual_seed(seed)
    random_encoder = PacketEncoder(encoder.config).eval()
    result: dict[str, Any] = {
        "dataset": str(directory),
        "label": label,
        "connections": int(keep.sum()),
        "left_out_rare_classes": {
            str(n): int(c) for n, c in zip(names, counts, strict=True) if c < MIN_PER_CLASS
        },
        "classes": {str(n): int(c) for n, c in zip(*np.unique(labels, return_counts=True), strict=True)},
    }
    if len(kept_names) < 2:
        result["skipped"] = "fewer than two classes with enough connections"
        return result
    result["repeats"] = repeats
    result["pretrained"] = _probe_scores(embed_connections(encoder, arrays), labels, seed, repeats)
    result["random_init"] = _probe_scores(embed_connections(random_encoder, arrays), labels, seed, repeats)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--dataset", action="append", required=True, type=Path)
    parser.add_argument("--label", default="fine", choices=("fine", "coarse"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="seeded halvings averaged")
    args = parser.parse_args(argv)
    encoder, _ = load_checkpoint(args.checkpoint)
    results = [probe_dataset(encoder, d, args.seed, args.label, args.repeats) for d in args.dataset]
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
