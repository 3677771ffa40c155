"""One alignment run: a dataset and a frozen packet encoder → trained heads g_P, g_T and their zero-shot scores.

Owns choosing the connections a run reads (at most so many per fine class, `load_subset`), caching their
embeddings, the run's outputs (`align.pt`, `align_metrics.json`, `align_curve.png`) and `run_alignment`, which
the `align` command and the evaluation both call. The loop lives in `align.train`, the heads and the loss in
`models.heads`; the zero-shot scores in `align.zeroshot`; option parsing in `align.cli`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from packetclip_training.align.train import (
    AlignConfig,
    build_description_pool,
    connection_embeddings,
    save_heads,
    train_alignment,
)
from packetclip_training.align.zeroshot import class_matrix, evaluate, prompt_embeddings, scores
from packetclip_training.dataset.store import load_rows, read_columns
from packetclip_training.describe.facts import FACT_COLUMNS
from packetclip_training.models.encoder import PacketEncoder

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "align.pt"
METRICS_NAME = "align_metrics.json"
CURVE_NAME = "align_curve.png"
INPUT_NAMES = ("bytes", "direction", "iat", "length", "valid")


def per_class_rows(fine: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices keeping at most `limit` random rows of each fine class (the data is flood-dominated)."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted(set(fine.tolist())):
        rows = np.flatnonzero(fine == label)
        kept.append(rows if len(rows) <= limit else rng.choice(rows, limit, replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def load_subset(
    dataset: Path,
    split: str,
    limit: int,
    seed: int,
    columns: tuple[str, ...],
    exclude: tuple[str, ...] = (),
    exclude_sources: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """At most `limit` connections per fine class of a split, leaving out the classes in `exclude` and the
    connections of the sources (capture files, lab runs) in `exclude_sources`."""
    labels = read_columns(dataset, split, ("fine", "source"))
    kept = ~np.isin(labels["source"].astype(str), list(exclude_sources))
    rows = np.flatnonzero(kept)[per_class_rows(labels["fine"][kept], limit, seed)]
    rows = rows[~np.isin(labels["fine"][rows], list(exclude))]
    log.info("%s: %d of %d connections (≤ %d per fine class)", split, len(rows), len(labels["fine"]), limit)
    return load_rows(dataset, split, rows, columns=tuple(dict.fromkeys(("fine", "source", *columns))))


def _facts(arrays: dict[str, np.ndarray]) -> list[dict[str, object]]:
    count = len(arrays["fine"])
    return [{name: arrays[name][i] for name in FACT_COLUMNS} for i in range(count)]


def _split_metrics(
    heads: Any, classes: torch.Tensor, embedded: np.ndarray, arrays: dict[str, np.ndarray]
) -> dict:
    logits = scores(heads, embedded, classes)
    result = evaluate(logits, arrays["fine"])
    held_out = arrays["heldout"].astype(bool)
    if held_out.any():
        # held-out variants: attack tools or settings never seen in training
        result["heldout_variants"] = {
            k: v
            for k, v in evaluate(logits[held_out], arrays["fine"][held_out]).items()
            if k != "per_class_top1"
        }
    return result


def run_alignment(
    dataset: Path,
    encoder: PacketEncoder,
    out: Path,
    config: AlignConfig,
    encode_texts: Callable[[list[str]], np.ndarray],
    max_per_class: int,
    max_eval_per_class: int,
    descriptions_per_bucket: int,
    exclude: tuple[str, ...] = (),
    exclude_sources: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole run; writes the three outputs into `out` and returns the metrics.

    Classes in `exclude` are left out of training (never described, never a positive), for the unseen-class
    evaluation, and so are the connections of the sources in `exclude_sources`, for the leave-one-source-family-
    out evaluation; validation and test still score every class.
    """
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    train = load_subset(dataset, "train", max_per_class, config.seed, FACT_COLUMNS, exclude, exclude_sources)
    pool = build_description_pool(train["fine"].tolist(), _facts(train), descriptions_per_bucket, config.seed)
    train_packets = connection_embeddings(encoder, {k: train[k][pool.kept] for k in INPUT_NAMES})
    log.info("encoding %d distinct descriptions and the class prompts", len(pool.texts))
    text_vectors = encode_texts(pool.texts)
    prompts = prompt_embeddings(encode_texts)
    evaluation = {}
    for split in ("val", "test"):
        arrays = load_subset(dataset, split, max_eval_per_class, config.seed, ("heldout",))
        evaluation[split] = (connection_embeddings(encoder, arrays), arrays)

    def on_epoch(_: int, heads: Any) -> dict[str, float]:
        embedded, arrays = evaluation["val"]
        return {
            "val_top1": evaluate(scores(heads, embedded, class_matrix(heads, prompts)), arrays["fine"])[
                "top1"
            ]
        }

    _, labels = np.unique(train["fine"][pool.kept].astype(str), return_inverse=True)
    heads, curve = train_alignment(train_packets, text_vectors, pool.choices, config, on_epoch, labels)
    classes = class_matrix(heads, prompts)
    metrics = {
        "config": asdict(config),
        "train_connections": len(pool.kept),
        "skipped_undescribable": pool.skipped,
        "distinct_descriptions": len(pool.texts),
        "max_per_class": max_per_class,
        "excluded_classes": list(exclude),
        "excluded_sources": len(exclude_sources),
        "max_eval_per_class": max_eval_per_class,
        "curve": curve,
        "zeroshot": {split: _split_metrics(heads, classes, *evaluation[split]) for split in evaluation},
        "seconds": round(time.monotonic() - started, 1),
    }
    save_heads(out / CHECKPOINT_NAME, heads, {k: v for k, v in metrics.items() if k != "curve"})
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    plot_curve(curve, out / CURVE_NAME, config.heads)
    return metrics


def plot_curve(curve: list[dict[str, Any]], path: Path, heads: str) -> None:
    """Training loss and validation zero-shot top-1 per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    epochs = [p["epoch"] for p in curve]
    figure, loss_axis = plt.subplots(figsize=(6, 4))
    loss_axis.plot(epochs, [p["loss"] for p in curve], color="tab:blue", label="InfoNCE loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss")
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot(
        epochs,
        [p.get("val_top1", float("nan")) for p in curve],
        color="tab:orange",
        label="val zero-shot top-1",
    )
    accuracy_axis.set_ylabel("val zero-shot top-1")
    accuracy_axis.set_ylim(0, 1)
    figure.legend(loc="upper right")
    loss_axis.set_title(f"Alignment ({heads} heads)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
