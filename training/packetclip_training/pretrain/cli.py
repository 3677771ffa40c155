"""The `packetclip-train pretrain` command: masked-byte pretraining of the packet encoder.

Owns option parsing, the one-line summary and exit codes; the work lives in
`packetclip_training.pretrain.pretrain`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A built dataset directory (repeatable); only its train split is learned from, val gives a held-out loss.",
)
@click.option(
    "--config",
    "config_name",
    default="packet-encoder-base",
    show_default=True,
    help="Encoder config: a shipped name (packet-encoder-base, packet-encoder-tiny, or base/tiny) or a JSON path.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the train connections (default 5).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimiser steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, data order and masks.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Connections per step (default 64).")
@click.option(
    "--contrast-weight",
    type=click.FloatRange(min=0.0),
    help="Weight of the same-connection contrastive task (default 0: masked bytes only).",
)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's choice).")
def pretrain(
    datasets: tuple[Path, ...],
    config_name: str,
    out: Path,
    epochs: int | None,
    max_steps: int | None,
    seed: int,
    batch_size: int | None,
    contrast_weight: float | None,
    threads: int | None,
) -> None:
    """Pretrain the packet encoder on unlabelled packets; writes OUT/encoder.pt and OUT/loss_curve.json."""
    import torch  # heavy; only this command needs it

    from packetclip_training.pretrain.pretrain import run

    if threads:
        torch.set_num_threads(threads)
    overrides: dict[str, float] = {"batch_size": batch_size} if batch_size else {}
    if contrast_weight is not None:
        overrides["contrast_weight"] = contrast_weight
    try:
        record = run(
            list(datasets), config_name, out, epochs=epochs, max_steps=max_steps, seed=seed, **overrides
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    last = (
        record["loss_curve"][-1] if record["loss_curve"] else {"loss": float("nan"), "accuracy": float("nan")}
    )
    held_out = record.get("held_out") or {}
    click.echo(
        f"{record['steps']} steps in {record['seconds']:.1f} s: train loss {last['loss']:.3f} "
        f"(byte accuracy {last['accuracy']:.3f}); held-out loss {held_out.get('loss', float('nan')):.3f} "
        f"vs position baseline {held_out.get('position_baseline_loss', float('nan')):.3f}; wrote {out}"
    )
