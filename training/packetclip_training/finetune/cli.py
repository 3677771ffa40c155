"""The `packetclip-train finetune` command: analysts' feedback → a fine-tuned reasoner and a bundle to install.

Owns the command line only; checks, fine-tuning, measurement and export are `finetune.finetune.run_finetune`.
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from packetclip.bundle import BundleError
from packetclip_training.finetune.finetune import FinetuneConfig, FinetuneError, run_finetune
from packetclip_training.model_options import (
    align_option,
    cache_option,
    dataset_option,
    encoder_option,
    reasoner_option,
)

_EXPORT = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("finetune")
@click.option(
    "--bundle",
    "base_bundle",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The bundle whose verdicts were labelled (folder or .tar.gz); the checkpoints must be the ones it was "
    "exported from.",
)
@click.option(
    "--feedback",
    "feedback_paths",
    required=True,
    multiple=True,
    type=_EXPORT,
    help="`packetclip feedback export` file to train on (repeatable).",
)
@click.option(
    "--evaluate",
    "evaluate_paths",
    multiple=True,
    type=_EXPORT,
    help="Feedback export measured before and after, never trained on (repeatable), e.g. the rest of a source.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.9),
    default=0.0,
    show_default=True,
    help="Share of each label's feedback rows kept out of training and measured.",
)
@dataset_option
@encoder_option
@align_option
@reasoner_option
@cache_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Writes reasoner.pt, finetune.json and bundle/ here.",
)
@click.option("--version", "version", help="Bundle version (default: the base version + -ft<UTC time>).")
@click.option("--steps", type=click.IntRange(min=1), default=FinetuneConfig.steps, show_default=True)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0.0, min_open=True),
    default=FinetuneConfig.learning_rate,
    show_default=True,
)
@click.option(
    "--anchor-weight",
    type=click.FloatRange(min=0.0),
    default=FinetuneConfig.anchor_weight,
    show_default=True,
    help="Weight of the pull towards the base reasoner's outputs on replayed training rows.",
)
@click.option(
    "--replay-per-class",
    type=click.IntRange(min=1),
    default=FinetuneConfig.replay_per_class,
    show_default=True,
    help="Replayed training rows per fine class and view.",
)
@click.option(
    "--test-rows",
    type=click.IntRange(min=0),
    default=50_000,
    show_default=True,
    help="Test-split rows measured before and after (a uniform sample; 0: all).",
)
@click.option("--seed", type=int, default=FinetuneConfig.seed, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's choice).")
def finetune(
    base_bundle: Path,
    feedback_paths: tuple[Path, ...],
    evaluate_paths: tuple[Path, ...],
    holdout: float,
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    reasoner_path: Path,
    cache: Path | None,
    out: Path,
    version: str | None,
    steps: int,
    learning_rate: float,
    anchor_weight: float,
    replay_per_class: int,
    test_rows: int,
    seed: int,
    threads: int | None,
) -> None:
    """Fine-tune the reasoner on labelled feedback, replaying its training data; writes a bundle."""
    if threads:
        torch.set_num_threads(threads)
    from packetclip_training.reasoner.model import load_reasoner

    record = load_reasoner(reasoner_path)[2].get("record", {})
    config = FinetuneConfig.following(
        record,
        steps=steps,
        learning_rate=learning_rate,
        anchor_weight=anchor_weight,
        replay_per_class=replay_per_class,
        seed=seed,
    )
    try:
        result = run_finetune(
            base_bundle,
            feedback_paths,
            dataset,
            encoder_path,
            align_path,
            reasoner_path,
            out,
            evaluate_paths=evaluate_paths,
            holdout=holdout,
            config=config,
            test_rows=test_rows,
            cache=cache,
            version=version,
        )
    except (FinetuneError, BundleError) as exc:
        raise click.ClickException(str(exc)) from None
    record = result.record
    held, test = record["held_back_rows"], record["test_split"]
    if held is not None:
        click.echo(
            f"held-back feedback rows ({held['before']['rows']}): benign false alarms "
            f"{_rate(held['before']['benign_false_alarms'])} → {_rate(held['after']['benign_false_alarms'])}, "
            f"attacks detected {_rate(held['before']['attacks_detected'])} → "
            f"{_rate(held['after']['attacks_detected'])}"
        )
    before, after = test["before"], test["after"]
    click.echo(
        f"test split ({test['rows']} rows): coarse mAUC {before['coarse_mauc']:.4f} → {after['coarse_mauc']:.4f}, "
        f"fine top-1 {before['fine_top1']:.4f} → {after['fine_top1']:.4f}, benign false alarms "
        f"{_rate(before['benign_false_alarms'])} → {_rate(after['benign_false_alarms'])}"
    )
    click.echo(f"bundle {result.bundle}")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"
