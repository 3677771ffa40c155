"""The `packetclip-train describe` commands: sample descriptions, print class prompts, draw word frequencies."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import click

from packetclip.classes import FINE_CLASSES
from packetclip_training.describe.describe import LLMParaphraser, class_prompts, describe_connection
from packetclip_training.describe.synthetic import synthetic_facts
from packetclip_training.describe.wordfreq import dataset_rows, describe_rows, synthetic_rows, write_figures
from packetclip_training.knowledge.llm import ChatClient

log = logging.getLogger(__name__)


@click.group()
def describe() -> None:
    """Natural-language descriptions of connections and classes."""


@describe.command()
@click.option("--fine", type=click.Choice(FINE_CLASSES), required=True)
@click.option("-n", "count", default=5, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--llm-url", default=None, help="OpenAI-compatible base URL to paraphrase with (default: grammar)."
)
@click.option("--model", default="gpt-4o-mini", show_default=True)
@click.option("--api-key-env", default=None, help="Environment variable holding the API key.")
def sample(
    fine: str, count: int, seed: int, llm_url: str | None, model: str, api_key_env: str | None
) -> None:
    """Print descriptions of synthetic connections of one fine class."""
    rng = random.Random(seed)
    paraphraser = (
        LLMParaphraser(ChatClient(llm_url, model=model, api_key_env=api_key_env)) if llm_url else None
    )
    for _ in range(count):
        click.echo(describe_connection(synthetic_facts(fine, rng), fine, rng, paraphraser))
    if paraphraser is not None and paraphraser.refused:
        click.echo(f"paraphrases refused (template kept): {paraphraser.refused}", err=True)


@describe.command()
@click.option("--fine", type=click.Choice(FINE_CLASSES), default=None, help="One class (default: all).")
def prompts(fine: str | None) -> None:
    """Print the zero-shot class prompts."""
    for name in [fine] if fine else FINE_CLASSES:
        for prompt in class_prompts(name):
            click.echo(f"{name}\t{prompt}")


@describe.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A built dataset directory; its facts are described (default: synthetic facts).",
)
@click.option("--split", default="train", show_default=True)
@click.option("--per-class", default=300, show_default=True, help="Descriptions per fine class.")
@click.option("--seed", default=0, show_default=True)
@click.option("--top", default=25, show_default=True, help="Words per figure.")
def wordfreq(out: Path, dataset: Path | None, split: str, per_class: int, seed: int, top: int) -> None:
    """Draw one word-frequency figure per mission."""
    if dataset is not None:
        path = dataset / f"{split}.parquet"
        if not path.is_file():
            raise click.ClickException(f"{path}: no such split")
        rows = dataset_rows(path, per_class, seed)
    else:
        rows = synthetic_rows(per_class, seed)
    corpus = describe_rows(rows, seed)
    for path in write_figures(corpus, out, top):
        click.echo(path)
    if corpus.skipped:
        click.echo(f"{corpus.skipped} row(s) skipped (malformed facts or unmapped class)", err=True)
