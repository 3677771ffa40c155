"""`packetclip-train all`: the default bundle from the dataset recipe, every stage in order, in one command.

Owns the order of stages and where each writes inside the work directory; every stage is the same command a
person would run by hand (invoked with the same options), so `all` cannot drift from them:

    dataset build → pretrain → align (both heads) → align for user missions (CLIP's targets) → reasoner → export
    (for timing) → evaluate → export (final, with the evaluation's headline metrics and operating point in its
    manifest, and the user missions' space)

A stage whose output already exists in the work directory is reused (say `--fresh` to rebuild everything), so an
interrupted run resumes where it stopped. The recipe names the lab runs it reads; `--make-lab-runs` makes the
missing ones first (`packetclip-train lab recipe`, as root), otherwise `packetclip-train lab run` makes them by
hand (see the recipe file's header).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click

from packetclip_training.align.cli import align
from packetclip_training.dataset.cli import build as dataset_build
from packetclip_training.evaluation.cli import DECISION_FILE, evaluate
from packetclip_training.export.cli import export
from packetclip_training.export.export import DEFAULT_NAME
from packetclip_training.lab.cli import recipe as lab_recipe
from packetclip_training.pretrain.cli import pretrain
from packetclip_training.reasoner.cli import reasoner

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parent / "dataset" / "recipes" / "default.yaml"


def _stage(name: str, done: Path, fresh: bool) -> bool:
    """True when the stage must run; says which stages are reused."""
    if done.exists() and not fresh:
        click.echo(f"[{name}] reusing {done}")
        return False
    click.echo(f"[{name}] running")
    return True


@click.command("all")
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_RECIPE,
    show_default=True,
    help="Dataset recipe.",
)
@click.option(
    "--work",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Work directory: dataset, checkpoints, caches.",
)
@click.option(
    "--bundle",
    "bundle_out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the final bundle goes (absent or empty).",
)
@click.option(
    "--reports",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report folder (default WORK/reports).",
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use this built dataset instead of building the recipe into WORK/dataset.",
)
@click.option("--pretrain-steps", type=click.IntRange(min=1), default=6000, show_default=True)
@click.option("--reasoner-epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--skip-evaluate", is_flag=True, help="Export without the evaluation (no metrics in the manifest)."
)
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Bundle name.")
@click.option("--fresh", is_flag=True, help="Rebuild every stage even when its output exists.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Dataset build processes."
)
@click.option(
    "--make-lab-runs",
    is_flag=True,
    help="Before building the dataset, make the recipe's lab runs that are not there yet (root; lab recipe).",
)
@click.pass_context
def all_stages(
    ctx: click.Context,
    recipe: Path,
    work: Path,
    bundle_out: Path,
    reports: Path | None,
    dataset_dir: Path | None,
    pretrain_steps: int,
    reasoner_epochs: int,
    skip_evaluate: bool,
    name: str,
    fresh: bool,
    jobs: int,
    make_lab_runs: bool,
) -> None:
    """Build the dataset, train every model, evaluate, and export the bundle."""
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    dataset = dataset_dir or work / "dataset"
    if dataset_dir is None and _stage("dataset", dataset / "manifest.json", fresh):
        if make_lab_runs:
            ctx.invoke(lab_recipe, recipe_path=recipe, dry_run=False)
        ctx.invoke(dataset_build, recipe_path=recipe, out=dataset, jobs=jobs, force=True)
    encoder_pt = work / "encoder" / "encoder.pt"
    if _stage("pretrain", encoder_pt, fresh):
        ctx.invoke(
            pretrain, datasets=(dataset,), out=encoder_pt.parent, max_steps=pretrain_steps, batch_size=128
        )
    align_pt = work / "align" / "align.pt"
    mission_align_pt = work / "align-missions" / "align.pt"
    # the verdicts' space (class-aware targets) and the user missions' (CLIP's one positive per pair)
    for stage, heads_pt, weight in (
        ("align", align_pt, 1.0),
        ("align for user missions", mission_align_pt, 0.0),
    ):
        if _stage(stage, heads_pt, fresh):
            ctx.invoke(
                align,
                dataset=dataset,
                encoder_path=encoder_pt,
                out=heads_pt.parent,
                heads="both",
                class_weight=weight,
            )
    reasoner_pt = work / "reasoner" / "reasoner.pt"
    if _stage("reasoner", reasoner_pt, fresh):
        ctx.invoke(
            reasoner,
            dataset=dataset,
            encoder_path=encoder_pt,
            align_path=align_pt,
            out=reasoner_pt.parent,
            cache=cache,
            epochs=reasoner_epochs,
        )
    models = {
        "dataset": dataset,
        "encoder_path": encoder_pt,
        "align_path": align_pt,
        "reasoner_path": reasoner_pt,
    }
    metrics_path = decision_path = None
    if not skip_evaluate:
        timing_bundle = work / "bundle-for-timing"
        shutil.rmtree(timing_bundle, ignore_errors=True)
        ctx.invoke(export, out=timing_bundle, name=name, cache=cache, **models)
        report_dir = reports or work / "reports"
        ctx.invoke(
            evaluate, bundle_path=timing_bundle, out=report_dir, cache=cache, work=work / "evaluate", **models
        )
        metrics_path = report_dir / "headline.json"
        decision_path = report_dir / DECISION_FILE
        if not decision_path.is_file():  # a dataset without real benign validation traffic: argmax verdicts
            decision_path = None
    ctx.invoke(
        export,
        out=bundle_out,
        name=name,
        cache=cache,
        metrics_path=metrics_path,
        decision_path=decision_path,
        mission_align_path=mission_align_pt,
        **models,
    )
