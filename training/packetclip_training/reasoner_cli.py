"""The `packetclip-train reasoner` command and the fitting function the evaluation reuses.

Owns assembling the reasoner's inputs from a dataset, a frozen encoder checkpoint and frozen alignment heads
(`fit_reasoner`), quick split metrics, and the command's outputs (`reasoner.pt`, `reasoner_metrics.json`). The model
and its loop live in `reasoner`; embeddings and contexts in `reasoner_data`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import Mission, load_missions
from packetclip_training.align import AlignmentHeads, load_heads
from packetclip_training.baselines.scoring import mean_auc, one_vs_rest_auc
from packetclip_training.model_options import align_option, cache_option, dataset_option, encoder_option
from packetclip_training.models.encoder import load_checkpoint
from packetclip_training.reasoner import (
    MissionGraphs,
    Reasoner,
    ReasonerConfig,
    TrainConfig,
    TrainingArrays,
    concept_targets,
    predict,
    save_reasoner,
    train_reasoner,
)
from packetclip_training.reasoner_data import (
    SplitEmbeddings,
    cached_split,
    captured_part,
    mirrored_rows,
    reasoner_training_split,
)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "reasoner.pt"
METRICS_NAME = "reasoner_metrics.json"


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
    head = torch.nn.Linear(heads.packet_dim, heads.packet_head.out_features)
    head.load_state_dict(heads.packet_head.state_dict())
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


@click.command("reasoner")
@dataset_option
@encoder_option
@align_option
@click.option(
    "--missions",
    "missions_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mission KG directory (default: the shipped rules/missions).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@cache_option
@click.option("--epochs", type=click.IntRange(min=1), default=TrainConfig.epochs, show_default=True)
@click.option(
    "--max-per-class", type=click.IntRange(min=1), default=TrainConfig.max_per_class, show_default=True
)
@click.option(
    "--one-sided/--two-sided-only",
    default=TrainConfig.one_sided,
    show_default=True,
    help="Also train on the originator-only view of every training connection (replies missing).",
)
@click.option(
    "--behaviour-dropout",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.behaviour_dropout,
    show_default=True,
    help="Share of training rows whose packet embeddings are hidden (behaviour features only).",
)
@click.option(
    "--tool-invariance",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.tool_invariance,
    show_default=True,
    help="Share of training connections whose source port and TCP window are redrawn before embedding (and, for"
    " another such share, the data their SYNs carry).",
)
@click.option(
    "--rate-jitter",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.rate_jitter,
    show_default=True,
    help="Share of training rows towards a busy responder whose victim-side rate is rescaled (up to "
    f"{TrainConfig.rate_jitter_factor:g}x either way).",
)
@click.option(
    "--real-share",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.real_share,
    show_default=True,
    help="Share of each class's rows per epoch drawn from real captures where the class has any (at most "
    f"{TrainConfig.real_repeats:g} draws per real row on average).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's choice).")
def reasoner(
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    missions_dir: Path | None,
    out: Path,
    cache: Path | None,
    epochs: int,
    max_per_class: int,
    one_sided: bool,
    behaviour_dropout: float,
    tool_invariance: float,
    rate_jitter: float,
    real_share: float,
    seed: int,
    threads: int | None,
) -> None:
    """Train the mission-graph + temporal reasoner on frozen embeddings; writes OUT/reasoner.pt."""
    from packetclip_training.text.encoder import TextEncoder  # loads MiniLM: only when the command runs

    if threads:
        torch.set_num_threads(threads)
    encoder, _ = load_checkpoint(encoder_path)
    heads, _ = load_heads(align_path)
    if heads.heads != "both":
        raise click.ClickException(f"{align_path}: the reasoner needs alignment trained with --heads both")
    missions = load_missions(missions_dir)
    # the test split is embedded (or read from the cache) only once training is done: the training views of a
    # large dataset are what fill memory
    splits = {s: cached_split(encoder, encoder_path, dataset, s, cache) for s in ("train", "val")}
    concept_text = concept_embeddings(missions, heads, TextEncoder().encode)
    settings = TrainConfig(
        epochs=epochs,
        max_per_class=max_per_class,
        one_sided=one_sided,
        behaviour_dropout=behaviour_dropout,
        tool_invariance=tool_invariance,
        rate_jitter=rate_jitter,
        real_share=real_share,
        seed=seed,
    )
    train = reasoner_training_split(
        encoder, encoder_path, dataset, splits["train"], cache, one_sided, tool_invariance
    )
    result = fit_reasoner(train, splits["val"], heads, missions, concept_text, settings)
    del train, splits
    test = cached_split(encoder, encoder_path, dataset, "test", cache)
    coarse, fine, _, _ = predict(result.model, training_arrays(test, FINE_CLASSES))
    metrics = {
        "train_config": asdict(settings),
        "train_rows": result.train_rows,
        "seconds": round(result.seconds, 1),
        "curve": result.curve,
        "test": quick_metrics(test.columns["fine"], coarse, fine),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_reasoner(
        out / CHECKPOINT_NAME, result.model, missions, {k: v for k, v in metrics.items() if k != "curve"}
    )
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    t = metrics["test"]
    click.echo(
        f"reasoner: test coarse mAUC {t['coarse_mauc']:.4f}, fine top-1 {t['fine_top1']:.4f}, "
        f"coarse accuracy {t['coarse_accuracy']:.4f} → {out}"
    )
