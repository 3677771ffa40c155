"""The `packetclip-train export` command: trained checkpoints → a model bundle the sensor runs, signed on request.

Owns option parsing, reading the evaluation's metrics and operating point, and signing the written bundle with
`--sign-key`. What a bundle carries and how it is gathered lives in `export.export` (`export_bundle`); the bundle
format in `export.bundle` and `packetclip.bundle`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from packetclip.bundle import SIGNATURE_NAME
from packetclip.signing import SigningKeyError, load_private_key, sign_bundle
from packetclip_training.export.export import DEFAULT_NAME, export_bundle
from packetclip_training.model_options import (
    align_option,
    cache_option,
    dataset_option,
    encoder_option,
    reasoner_option,
)


@click.command("export")
@dataset_option
@encoder_option
@align_option
@reasoner_option
@click.option(
    "--metrics",
    "metrics_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The evaluation's headline metrics (reports/headline.json) to record in the manifest.",
)
@click.option(
    "--decision",
    "decision_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The operating point the evaluation chose (reports/decision.json); without it verdicts are argmax.",
)
@click.option(
    "--mission-align",
    "mission_align_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A second alignment of the same encoder (align --class-weight 0) whose space user-written missions are "
    "scored in (mission_space.npz); without it they are scored in the aligned space.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Bundle folder (absent or empty)."
)
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--version", "version", help="Bundle version (default: the UTC time of the export).")
@click.option(
    "--sign-key",
    "sign_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign the bundle with this Ed25519 private key (PEM, `packetclip models keygen`): writes manifest.sig.",
)
@cache_option
def export(
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    reasoner_path: Path,
    metrics_path: Path | None,
    decision_path: Path | None,
    mission_align_path: Path | None,
    out: Path,
    name: str,
    version: str | None,
    sign_key: Path | None,
    cache: Path | None,
) -> None:
    """Export the encoder and reasoner to ONNX and write a verified model bundle, signed with --sign-key."""
    try:  # read before the export: a key that cannot sign must not cost an export
        private = load_private_key(sign_key) if sign_key else None
    except SigningKeyError as exc:
        raise click.BadParameter(str(exc), param_hint="--sign-key") from exc
    metrics = json.loads(metrics_path.read_text()) if metrics_path else None
    path = export_bundle(
        dataset,
        encoder_path,
        align_path,
        reasoner_path,
        out,
        name=name,
        version=version,
        metrics=metrics,
        cache=cache,
        decision=json.loads(decision_path.read_text()) if decision_path else None,
        mission_align_path=mission_align_path,
    )
    if private is not None:
        signature = sign_bundle(path, private)  # write_bundle verified the folder it wrote
        click.echo(f"signed with key {signature.key_id} ({path / SIGNATURE_NAME})")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    click.echo(f"bundle {path} ({size / 1e6:.1f} MB)")
