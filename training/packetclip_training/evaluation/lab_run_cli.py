"""The `packetclip-train evaluate-lab-run` command: a bundle on labelled lab runs, variant by variant.

Owns the command's options (bundle, runs, output folder) and writing `lab-run.json` and `lab-run.md` per run;
the numbers and the markdown come from `evaluation.lab_run`.
"""

from __future__ import annotations

from pathlib import Path

import click

from packetclip.bundle import BundleError, default_bundle_path, load_bundle
from packetclip_training.dataset.sources import SourceError
from packetclip_training.evaluation.lab_run import evaluate_lab_run, render_markdown
from packetclip_training.evaluation.report import write_json
from packetclip_training.model_options import bundle_option


@click.command("evaluate-lab-run")
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@bundle_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for <run>.lab-run.json and .md (default: print the tables only).",
)
def evaluate_lab_run_command(runs: tuple[Path, ...], bundle_path: Path | None, out: Path | None) -> None:
    """Classify lab runs (`packetclip-train lab run --out RUN`) and report, per attack variant, the share given
    its own class, the leading verdicts and the victim-side features the reasoner read."""
    try:
        bundle = load_bundle(bundle_path or default_bundle_path())
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    for run in runs:
        try:
            results = evaluate_lab_run(bundle, run)
        except SourceError as exc:
            raise click.ClickException(str(exc)) from exc
        markdown = render_markdown(results)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(results, out / f"{run.name}.lab-run.json")
            (out / f"{run.name}.lab-run.md").write_text(markdown, encoding="utf-8")
        click.echo(markdown, nl=False)
