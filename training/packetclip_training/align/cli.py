"""The `packetclip-train align` command: align a frozen packet encoder with the frozen text encoder.

Owns option parsing and the summary line. The run itself (subsets, cached embeddings, outputs) lives in
`align.run`; the loop and the description pool in `align.train`; the heads and the loss in `models.heads`; the
zero-shot scores in `align.zeroshot`.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from packetclip_training.align.run import run_alignment
from packetclip_training.align.train import AlignConfig
from packetclip_training.models.encoder import load_checkpoint
from packetclip_training.models.heads import HEAD_SETTINGS


@click.command("align")
@click.option(
    "--dataset",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A built dataset directory (train/val/test parquet).",
)
@click.option(
    "--encoder",
    "encoder_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A packet encoder checkpoint (encoder.pt); kept frozen.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@click.option(
    "--heads",
    type=click.Choice(HEAD_SETTINGS),
    default="both",
    show_default=True,
    help="Ablation: no head, packet head only, or both heads.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--max-per-class",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Train connections kept per fine class (random, seeded).",
)
@click.option(
    "--max-eval-per-class",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Val/test connections scored per fine class (random, seeded).",
)
@click.option(
    "--descriptions-per-bucket",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Distinct descriptions written per (class, protocol, state, service, size) bucket.",
)
@click.option(
    "--class-weight",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="Weight of the class-aware target: 0 is CLIP's one positive per pair, 1 makes every pair of a batch "
    "with the same fine class a positive.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch CPU threads; the heads are tiny, more threads mostly add contention.",
)
def align(
    dataset: Path,
    encoder_path: Path,
    out: Path,
    heads: str,
    epochs: int,
    max_per_class: int,
    max_eval_per_class: int,
    descriptions_per_bucket: int,
    class_weight: float,
    seed: int,
    threads: int | None,
) -> None:
    """Train the SSL heads g_P, g_T with symmetric InfoNCE and score zero-shot fine-class accuracy."""
    from packetclip_training.text.encoder import TextEncoder  # loads MiniLM: only when the command runs

    if threads:
        torch.set_num_threads(threads)
    encoder, _ = load_checkpoint(encoder_path)
    text_encoder = TextEncoder()
    metrics = run_alignment(
        dataset,
        encoder,
        out,
        AlignConfig(heads=heads, epochs=epochs, seed=seed, class_weight=class_weight),
        text_encoder.encode,
        max_per_class,
        max_eval_per_class,
        descriptions_per_bucket,
    )
    test = metrics["zeroshot"]["test"]
    click.echo(
        f"align ({heads}): test zero-shot top-1 {test['top1']:.3f} top-5 {test['top5']:.3f} "
        f"coarse {test['coarse_accuracy']:.3f} on {test['count']} connections → {out}"
    )
