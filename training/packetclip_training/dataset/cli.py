"""The `packetclip-train dataset` group: build, stats, card, sample.

Owns option parsing and exit codes; the work lives in `build`, `card` and `store`. Options given on the command
line add to (lab runs, flows) or override (seed, featurizer sizes, real manifest) what a `--recipe` says.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import click

from packetclip_training.dataset.card import dataset_stats, format_stats, write_card
from packetclip_training.dataset.recipe import FlowInput, Recipe, RecipeError, load_recipe
from packetclip_training.dataset.sources import SourceError

log = logging.getLogger(__name__)


@click.group()
def dataset() -> None:
    """Build labelled connection datasets from lab runs, real captures and flow CSVs."""


@dataset.command()
@click.option("--recipe", "recipe_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset directory."
)
@click.option(
    "--lab-run", multiple=True, type=click.Path(path_type=Path), help="A lab run directory (repeatable)."
)
@click.option("--real-manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--real-include", multiple=True, help="Glob over the manifest's file column (repeatable).")
@click.option(
    "--flows",
    "flows_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CICFlowMeter CSV labelling the --pcap files.",
)
@click.option("--pcap", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--label-map",
    default="aci-iot-2023",
    show_default=True,
    help="Built-in map name or a YAML/JSON file: CSV label -> fine class or 'drop'.",
)
@click.option(
    "--utc-offset", type=float, default=0.0, show_default=True, help="Hours the CSV clock is ahead of UTC."
)
@click.option(
    "--flow-tolerance", type=float, default=2.0, show_default=True, help="Seconds, flow start vs packet."
)
@click.option("--monthfirst", is_flag=True, help="CSV dates are mm/dd/YYYY (CIC datasets write dd/mm/YYYY).")
@click.option("--seed", type=int, help="Split seed (overrides the recipe).")
@click.option("--max-packets", type=int, help="Featurizer max_packets (overrides the recipe).")
@click.option("--snaplen", type=int, help="Featurizer snaplen (overrides the recipe).")
@click.option(
    "--window",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Featurizer window: seconds after a connection's first packet whose packets are kept (overrides the recipe).",
)
@click.option(
    "--jobs", type=int, default=1, show_default=True, help="Processes featurizing sources in parallel."
)
@click.option("--force", is_flag=True, help="Replace a dataset already in --out.")
def build(
    recipe_path: Path | None,
    out: Path,
    lab_run: tuple[Path, ...],
    real_manifest: Path | None,
    real_include: tuple[str, ...],
    flows_csv: Path | None,
    pcap: tuple[Path, ...],
    label_map: str,
    utc_offset: float,
    flow_tolerance: float,
    monthfirst: bool,
    seed: int | None,
    max_packets: int | None,
    snaplen: int | None,
    window: float | None,
    jobs: int,
    force: bool,
) -> None:
    """Featurize, label and split inputs into OUT (train/val/test parquet, card, manifest)."""
    # the featurizer is only needed here; stats and card work without reading captures
    from packetclip_training.dataset.build import BuildError, build_dataset

    try:
        recipe = load_recipe(recipe_path) if recipe_path else Recipe(name=out.name)
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None
    recipe.lab_runs += list(lab_run)
    if real_manifest:
        recipe.real_manifest = real_manifest
    if real_include:
        recipe.real_include = list(real_include)
    if bool(flows_csv) != bool(pcap):
        raise click.UsageError("--flows and --pcap go together")
    if flows_csv:
        recipe.flows.append(
            FlowInput(flows_csv, list(pcap), label_map, utc_offset, flow_tolerance, not monthfirst)
        )
    if seed is not None:
        recipe.split = replace(recipe.split, seed=seed)
    for name, value in (("max_packets", max_packets), ("snaplen", snaplen), ("window", window)):
        if value is not None:
            recipe.featurizer[name] = value
    try:
        card = build_dataset(recipe, out, jobs=jobs, force=force)
    except (BuildError, SourceError, RecipeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_stats(card["counts"]))
    speed = card["build"]
    click.echo(
        f"{speed['connections_seen']} connections in {speed['seconds']} s "
        f"({speed['connections_per_s']} connections/s); dataset in {out}"
    )


@dataset.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
def stats(directory: Path, as_json: bool) -> None:
    """Counts per class and split of a built dataset."""
    try:
        counts = dataset_stats(directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(counts, indent=2) if as_json else format_stats(counts))


@dataset.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def card(directory: Path) -> None:
    """(Re)write card.md, card.json and manifest.json of a built dataset."""
    try:
        write_card(directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {directory / 'card.md'}, card.json and manifest.json")


@dataset.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Sample directory."
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Rows per fine class and split, at most.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace a sample already in --out.")
def sample(directory: Path, out: Path, per_class: int, seed: int, force: bool) -> None:
    """Copy a small class-balanced sample of DIRECTORY, same layout and splits, with its own card."""
    from packetclip_training.dataset.sample import sample_dataset

    try:
        card = sample_dataset(directory, out, per_class, seed=seed, force=force)
    except (FileNotFoundError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_stats(card["counts"]))
