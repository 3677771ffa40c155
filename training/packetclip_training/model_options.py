"""Command-line options the model stages share (the same name, type and meaning in every command).

Each is a click decorator: `@dataset_option` gives the command a `dataset` argument, and so on.
"""

from __future__ import annotations

from pathlib import Path

import click

_DIRECTORY = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

dataset_option = click.option("--dataset", required=True, type=_DIRECTORY, help="A built dataset directory.")
encoder_option = click.option(
    "--encoder",
    "encoder_path",
    required=True,
    type=_FILE,
    help="Packet encoder checkpoint (encoder.pt), frozen.",
)
align_option = click.option(
    "--align",
    "align_path",
    required=True,
    type=_FILE,
    help="Alignment heads (align.pt, trained with --heads both), frozen.",
)
reasoner_option = click.option(
    "--reasoner", "reasoner_path", required=True, type=_FILE, help="Reasoner checkpoint (reasoner.pt)."
)
cache_option = click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for cached embeddings and contexts (reused when the encoder and data match).",
)
# the embedded default, not the store's active bundle: a measurement must not depend on this machine's store
bundle_option = click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True, path_type=Path),
    help="Bundle folder or .tar.gz (default: the bundle embedded in the packetclip package).",
)
