"""The `packetclip-train reasoner` command: train the reasoner on frozen embeddings and write its outputs.

Owns option parsing, loading the frozen encoder, alignment heads and missions, and the command's outputs
(`reasoner.pt`, `reasoner_metrics.json`). Fitting lives in `reasoner.fit`; the loop in `reasoner.model`,
the model in `models.reasoner`; embeddings and contexts in `reasoner.data`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import torch

from packetclip.classes import FINE_CLASSES
from packetclip.missions import load_missions
from packetclip_training.align.train import load_heads
from packetclip_training.model_options import align_option, cache_option, dataset_option, encoder_option
from packetclip_training.models.encoder import load_checkpoint
from packetclip_training.reasoner.data import cached_split, reasoner_training_split
from packetclip_training.reasoner.fit import (
    concept_embeddings,
    fit_reasoner,
    quick_metrics,
    training_arrays,
)
from packetclip_training.reasoner.model import TrainConfig, predict, save_reasoner

CHECKPOINT_NAME = "reasoner.pt"
METRICS_NAME = "reasoner_metrics.json"


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
    val = cached_split(encoder, encoder_path, dataset, "val", cache)
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
    train = reasoner_training_split(encoder, encoder_path, dataset, None, cache, one_sided, tool_invariance)
    result = fit_reasoner(train, val, heads, missions, concept_text, settings)
    del train, val
    test = cached_split(encoder, encoder_path, dataset, "test", cache)
    coarse, fine, _, _ = predict(result.model, training_arrays(test, FINE_CLASSES))
    metrics: dict[str, Any] = {
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
