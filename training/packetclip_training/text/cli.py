"""The `packetclip-train text` commands: export f_T to ONNX, check an export against its fixture."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from packetclip.text_encoder import OnnxTextEncoder, TextEncoderUnavailable, default_text_encoder_dir

log = logging.getLogger(__name__)


@click.group()
def text() -> None:
    """The frozen text encoder (all-MiniLM-L6-v2)."""


@text.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write (default: $PACKETCLIP_TEXT_ENCODER or the user cache).",
)
def export(out: Path | None) -> None:
    """Export the text encoder to ONNX with its tokenizer and parity fixture (~90 MB; never commit it)."""
    from packetclip_training.text.export import export_text_encoder  # torch is imported only here

    result = export_text_encoder(out or default_text_encoder_dir())
    click.echo(
        f"{result.directory}: text_encoder.onnx {result.onnx_bytes / 1e6:.1f} MB, "
        f"min cosine vs torch {result.min_cosine:.6f}"
    )


@text.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--min-cosine", default=0.9999, show_default=True)
def check(directory: Path | None, min_cosine: float) -> None:
    """Check an exported encoder against its fixture with onnxruntime (no torch)."""
    try:
        got = OnnxTextEncoder(directory).check_fixture()
    except TextEncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"min cosine vs fixture {got:.6f}")
    if got < min_cosine:
        raise click.ClickException(f"below {min_cosine}")
