"""`packetclip-train lab run|check|variants|cut|clean`: the traffic lab's command group.

This module owns argument parsing and exit codes only; the work is in `runner`, `session` and `services`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from packetclip.classes import FINE_CLASSES
from packetclip_training.dataset.recipe import LabRunSpec
from packetclip_training.lab.profiles import PROFILES, Profile
from packetclip_training.lab.session import LabTerminated, NotRootError, clean_leftovers

log = logging.getLogger(__name__)


@click.group()
def lab() -> None:
    """Generate labelled traffic with real tools against real services in network namespaces."""


@lab.command()
@click.option(
    "--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="quick", show_default=True
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Randomises benign traffic, passwords, order."
)
@click.option(
    "--only",
    default=None,
    help="Comma-separated fine classes or variant names (syn_flood/hping3-80-2kpps) to attack with (default: all).",
)
def run(profile_name: str, out_dir: Path, seed: int, only: str | None) -> None:
    """Build the lab, run the profile's episodes, write capture.pcap, labels.tsv, hosts.tsv and run.json."""
    from packetclip_training.lab.recipe_runs import unknown_names
    from packetclip_training.lab.runner import run_lab

    only_set = None
    if only:
        only_set = {name.strip() for name in only.split(",") if name.strip()}
        if unknown := unknown_names(sorted(only_set)):
            raise click.BadParameter(
                f"unknown fine classes or variants {unknown}; classes: {', '.join(FINE_CLASSES)}; "
                "variants: packetclip-train lab variants"
            )
    with _lab_errors():
        document = run_lab(PROFILES[profile_name], out_dir, seed=seed, only=only_set)
    _say_done(document, out_dir)


@contextlib.contextmanager
def _lab_errors() -> Iterator[None]:
    """The lab's failures an operator can act on, as a command's exit: not root, or terminated (143)."""
    try:
        yield
    except NotRootError as exc:
        raise click.ClickException(str(exc)) from None
    except LabTerminated:
        click.echo("terminated (SIGTERM); the lab was removed, no output written", err=True)
        raise SystemExit(143) from None


def _say_done(document: dict[str, Any], out_dir: Path) -> None:
    ran = [e for e in document["episodes"] if not e["refused"]]
    click.echo(
        f"{len(ran)} episodes, {document['capture']['packets_captured']} packets, "
        f"{document['wall_s']:.0f}s -> {out_dir}"
    )


@lab.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say which runs are there, missing or incomplete; run nothing.")
def recipe(recipe_path: Path, dry_run: bool) -> None:
    """Make every lab run a dataset recipe names (its lab.runs) that is not there yet, in the recipe's order.

    Relative paths are read from the current directory, as `dataset build` reads them. A directory in the way that
    is not a whole run is never overwritten: the command stops before running anything and names it.
    """
    from packetclip_training.dataset.recipe import RecipeError, load_recipe
    from packetclip_training.lab.recipe_runs import MISSING, RecipeRunsError, make_missing_runs, run_states
    from packetclip_training.lab.runner import run_lab

    try:
        specs = load_recipe(recipe_path).lab_run_specs
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        for entry in run_states(specs):
            click.echo(
                f"{entry.state:<10} {entry.spec.path}" + (f"  ({entry.reason})" if entry.reason else "")
            )
        return

    def run(profile: Profile, out_dir: Path, seed: int, only: set[str] | None) -> dict[str, Any]:
        document = run_lab(profile, out_dir, seed=seed, only=only)
        _say_done(document, out_dir)
        return document

    def starting(index: int, total: int, spec: LabRunSpec) -> None:
        only = f" --only {','.join(spec.only)}" if spec.only else ""
        click.echo(
            f"[{index + 1}/{total}] lab run --profile {spec.profile} --seed {spec.seed}{only} --out {spec.path}"
        )

    try:
        with _lab_errors():
            made = make_missing_runs(specs, run, starting)
    except RecipeRunsError as exc:
        raise click.ClickException(str(exc)) from None
    present = sum(entry.state != MISSING for entry in run_states(specs)) - len(made)
    click.echo(f"{len(made)} lab runs made, {present} already there")


@lab.command()
def check() -> None:
    """Verify that every tool the lab and the attack catalogue need is installed; print versions."""
    from packetclip_training.lab.attacks import CATALOGUE
    from packetclip_training.lab.runner import LAB_TOOLS, tool_versions

    missing = [name for name in {*LAB_TOOLS, *(v.tool for v in CATALOGUE)} if shutil.which(name) is None]
    for name, version in sorted(tool_versions(CATALOGUE).items()):
        click.echo(f"{name}\t{version}")
    if missing:
        raise click.ClickException(f"missing tools: {', '.join(sorted(missing))}")
    click.echo(f"all {len(LAB_TOOLS)} lab tools and {len({v.tool for v in CATALOGUE})} attack tools present")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per variant instead of a table.")
def variants(as_json: bool) -> None:
    """List the attack catalogue: fine class, variant, tool, time bound, and whether it is held out of training."""
    from packetclip_training.lab.attacks import CATALOGUE

    for v in CATALOGUE:
        row = {
            "fine": v.fine,
            "variant": v.name,
            "tool": v.tool,
            "max_seconds": v.max_seconds,
            "heldout": v.heldout,
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{v.fine:<19} {v.name:<48} {v.tool:<13} {v.max_seconds:>5.0f}s{'  held out' if v.heldout else ''}"
            )


@lab.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--connections-per-episode", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--benign-connections", type=click.IntRange(min=0), default=150, show_default=True)
@click.option("--packets-per-connection", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--snaplen", type=click.IntRange(min=64), default=256, show_default=True)
@click.option("--include-heldout", is_flag=True, help="Also pick held-out variants.")
def cut(
    run_dir: Path,
    out_dir: Path,
    connections_per_episode: int,
    benign_connections: int,
    packets_per_connection: int,
    snaplen: int,
    include_heldout: bool,
) -> None:
    """Cut a small labelled sample (one episode per class, benign connections) out of RUN_DIR into --out."""
    from packetclip_training.lab.cut import CutConfig, cut_run

    config = CutConfig(
        connections_per_episode, benign_connections, packets_per_connection, snaplen, include_heldout
    )
    summary = cut_run(run_dir, out_dir, config)
    size = (out_dir / "capture.pcap").stat().st_size
    click.echo(
        f"{len(summary['episodes'])} episodes, {sum(summary['packets_per_group'].values())} frames, "
        f"{size} bytes -> {out_dir}"
    )


@lab.command()
def clean() -> None:
    """Remove leftovers of crashed runs: lab namespaces and their processes, the lab account, temp dirs (a lab
    that is still running keeps its own)."""
    try:
        removed = clean_leftovers()
    except NotRootError as exc:
        raise click.ClickException(str(exc)) from None
    json.dump(removed, sys.stdout, indent=2)
    click.echo()
