"""The `packetclip-train evaluate-real` command: a bundle on the real captures, by source family.

Owns the command's options (bundle, where the real captures are, the output folder), naming the bundle in the
results and writing `real.json` and `real.md`. The numbers and the markdown come from `evaluation.real`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from packetclip.bundle import BundleError, default_bundle_path, load_bundle
from packetclip_training.dataset.sources import SourceError
from packetclip_training.evaluation.real import (
    FALSE_ALARM_BUDGET,
    REAL_DATA_ENV,
    classify_manifest,
    dataset_file_splits,
    default_real_data,
    evaluate_runs,
    render_markdown,
)
from packetclip_training.evaluation.report import write_json
from packetclip_training.model_options import bundle_option

log = logging.getLogger(__name__)


@click.command("evaluate-real")
@bundle_option
@click.option(
    "--real-data",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Folder with MANIFEST.tsv (default: ${REAL_DATA_ENV}, else ../shared/data/real from the repository).",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only manifest files matching GLOB (repeatable; default: every file).",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0.0, max=1.0),
    default=FALSE_ALARM_BUDGET,
    show_default=True,
    help="Share of calibration benign connections the operating point may flag (each file weighing the same).",
)
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The bundle's dataset: also report each of its splits' files apart (its test split's were held out of "
    "every stage).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for real.json and real.md.",
)
def evaluate_real(
    bundle_path: Path | None,
    real_data: Path | None,
    include: tuple[str, ...],
    budget: float,
    dataset: Path | None,
    out: Path,
) -> None:
    """Classify every real capture with a bundle and report recall and false alarms per source family."""
    # the embedded default, not the store's active bundle: the baseline must not depend on this machine's store
    path = bundle_path or default_bundle_path()
    manifest = (real_data or default_real_data()) / "MANIFEST.tsv"
    if not manifest.is_file():
        raise click.ClickException(f"no MANIFEST.tsv at {manifest} (use --real-data or ${REAL_DATA_ENV})")
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        splits = None if dataset is None else dataset_file_splits(dataset)
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"{dataset}: not a built dataset ({exc})") from exc

    def progress(done: int, total: int, file: str) -> None:
        if done % 50 == 0 or done == total:
            log.info("%d/%d captures classified (%s)", done, total, file)

    try:
        runs = classify_manifest(bundle, manifest, list(include) or None, progress)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc
    results = {
        "bundle": {"name": bundle.name, "version": bundle.version, "path": str(path)},
        "manifest": str(manifest),
        **evaluate_runs(runs, budget, bundle.attack_threshold, splits),
    }
    markdown = render_markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out / "real.json")
    (out / "real.md").write_text(markdown, encoding="utf-8")
    click.echo(markdown, nl=False)
