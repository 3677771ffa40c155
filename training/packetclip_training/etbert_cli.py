"""`packetclip-train etbert`: write ET-BERT's architecture (random weights) as ONNX for speed comparisons.

Owns option parsing only; the model and its description are `models.etbert.write_etbert`. `packetclip bench` runs
this command in a separate process, so the torch-free runtime can time ET-BERT next to itself.
"""

from __future__ import annotations

from pathlib import Path

import click

from packetclip_training.models.etbert import EtBertConfig, write_etbert

_BASE = EtBertConfig()


@click.command("etbert")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@click.option("--layers", type=click.IntRange(min=1), default=_BASE.layers, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=_BASE.hidden, show_default=True)
@click.option("--heads", type=click.IntRange(min=1), default=_BASE.heads, show_default=True)
@click.option("--ffn", type=click.IntRange(min=1), default=_BASE.ffn, show_default=True)
@click.option("--vocab-size", type=click.IntRange(min=2), default=_BASE.vocab_size, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def etbert(out: Path, layers: int, hidden: int, heads: int, ffn: int, vocab_size: int, seed: int) -> None:
    """Export ET-BERT's architecture (BERT-base by default; ~530 MB) to OUT/etbert.onnx with OUT/etbert.json."""
    try:
        config = EtBertConfig(layers=layers, hidden=hidden, heads=heads, ffn=ffn, vocab_size=vocab_size)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    path = write_etbert(out, config, seed)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB)")
