"""`packetclip-train loso`: each real source family left out of training in turn, and judged as new traffic.

Owns the leave-one-source-family-out protocol and its summary (`OUT/loso.md`, `OUT/loso.json`). For every family
of the recipe's real MANIFEST (`evaluation.real.family_of`: the public DDoS collection, the other real attack
captures, the nDPI benign captures, the Zeek benign captures):

    the recipe with the family's files test-only → dataset build → align → reasoner → evaluate (the flow baselines
    beside it; the operating point chosen on the validation split's remaining real benign files)

each stage the same command a person would run, into WORK/FAMILY/. The encoder is pretrained once per family with
`--pretrain-steps` (every stage then blind to the family), or given with `--encoder` and shared: masked-byte
pretraining reads no labels, but it has read the bytes of the family's training files, and the summary says which
of the two was done. A family's folder that already holds a stage's output is reused, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from packetclip.classes import COARSE_CLASSES
from packetclip_training.align_cli import align
from packetclip_training.all_cli import DEFAULT_RECIPE
from packetclip_training.dataset.cli import build as dataset_build
from packetclip_training.dataset.recipe import load_recipe
from packetclip_training.dataset.sources import MANIFEST_COLUMNS, read_tsv
from packetclip_training.evaluate import PACKETCLIP
from packetclip_training.evaluate_cli import PARTS, evaluate
from packetclip_training.evaluation.real import family_of
from packetclip_training.evaluation.report import format_score, markdown_table, write_json
from packetclip_training.pretrain_cli import pretrain
from packetclip_training.reasoner_cli import reasoner

log = logging.getLogger(__name__)

AT_POINT = (
    f"{PACKETCLIP} at its operating point"  # the real-traffic block's row for the shipped decision rule
)


def family_files(manifest: Path) -> dict[str, list[str]]:
    """The files of a real MANIFEST by source family, in manifest order."""
    out: dict[str, list[str]] = {}
    for row in read_tsv(manifest, MANIFEST_COLUMNS):
        name = row["file"].strip()
        out.setdefault(family_of(name, row["label"].strip()), []).append(name)
    return out


def held_out_recipe(recipe: Path, files: Sequence[str], out: Path) -> Path:
    """A copy of `recipe` at `out` whose real captures in `files` are test-only (beside those it already holds
    out); every other setting, relative paths included, is the recipe's own."""
    data = yaml.safe_load(recipe.read_text())
    real = data.get("real") or {}
    if not real.get("manifest"):
        raise click.ClickException(
            f"{recipe}: the recipe reads no real MANIFEST: no source family to leave out"
        )
    real["test_only"] = sorted({*(real.get("test_only") or []), *files})
    data["real"] = real
    data["name"] = f"{data.get('name', recipe.stem)}-without-{out.parent.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    load_recipe(out)  # the copy must still be a valid recipe
    return out


def _family_row(family: str, model: str, block: Mapping[str, Any]) -> dict[str, Any] | None:
    entry = (block.get("models") or {}).get(model)
    if not entry or family not in entry["families"]:
        return None
    summary = entry["families"][family]
    return {
        "model": model,
        "files": summary["files"],
        "connections": summary["connections"],
        "truth": summary["truth"],
        "recall": summary["recall"],
        "false_alarm": summary["false_alarm"],
        "mauc_all_real_test": entry["overall"].get("mauc"),
    }


def summarize(results: Mapping[str, Mapping[str, Any]], encoder_note: str) -> dict[str, Any]:
    """The held-out family's numbers from each family's evaluation (`results`: family → evaluate's results.json):
    every model's recall per coarse class and benign false alarms on that family's connections, and its mAUC
    over all the test split's real connections (the family's and other families' test files)."""
    families: dict[str, Any] = {}
    for family, result in results.items():
        block = result.get("real_traffic") or {}
        point = result.get("operating_point") or {}
        rows = [
            row
            for model in (
                PACKETCLIP,
                AT_POINT,
                *sorted(m for m in block.get("models", {}) if m.startswith("flow")),
            )
            if (row := _family_row(family, model, block)) is not None
        ]
        families[family] = {
            "rows": rows,
            "attack_threshold": point.get("attack_threshold"),
            "calibration_benign": point.get("calibration_connections"),
        }
    return {"protocol": "leave one real source family out of every supervised stage", "encoder": encoder_note,
            "families": families}  # fmt: skip


def render(summary: Mapping[str, Any]) -> str:
    lines = [
        "## Leave one source family out (real captures)",
        "",
        "Each row: a family whose files no supervised stage trained on (dataset rebuilt with them test-only; "
        "alignment, reasoner, flow baselines and the operating point fitted without them). Recall and false alarms "
        "are over that family's connections; mAUC over all the test split's real connections. "
        f"Encoder: {summary['encoder']}.",
        "",
    ]
    header = ["held-out family", "model", "files", "connections",
              *(f"recall {c}" for c in COARSE_CLASSES), "benign false alarms", "mAUC, real test"]  # fmt: skip
    table = []
    for family, entry in summary["families"].items():
        for row in entry["rows"]:
            recall = [
                format_score(row["recall"].get(c)) if row["truth"].get(c) else "—" for c in COARSE_CLASSES
            ]
            alarms = row["false_alarm"]
            table.append([family, row["model"], row["files"], row["connections"], *recall,
                          "—" if alarms is None else f"{100 * alarms:.1f} %",
                          format_score(row["mauc_all_real_test"])])  # fmt: skip
    lines += markdown_table(header, table)
    points = [
        f"- {family}: threshold {entry['attack_threshold']:.4f} on {entry['calibration_benign']:,} real benign "
        "validation connections"
        for family, entry in summary["families"].items()
        if entry["attack_threshold"] is not None
    ]
    if points:
        lines += ["", "Operating points (chosen without the held-out family):", "", *points]
    return "\n".join(lines) + "\n"


def _stage(name: str, done: Path) -> bool:
    if done.exists():
        click.echo(f"[{name}] reusing {done}")
        return False
    click.echo(f"[{name}] running")
    return True


@click.command("loso")
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_RECIPE,
    show_default=True,
    help="Dataset recipe; its real MANIFEST names the families.",
)
@click.option(
    "--family",
    "only",
    multiple=True,
    help="Leave out only these families (repeatable; default: every family of the MANIFEST).",
)
@click.option(
    "--encoder",
    "encoder_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A pretrained encoder shared by every family (label-free pretraining that read the family's bytes).",
)
@click.option(
    "--pretrain-steps",
    type=click.IntRange(min=1),
    help="Pretrain an encoder per family instead (every stage blind to the family).",
)
@click.option("--reasoner-epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--work", required=True, type=click.Path(file_okay=False, path_type=Path), help="Work directory."
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Summary folder."
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Dataset build processes."
)
@click.pass_context
def loso(
    ctx: click.Context,
    recipe: Path,
    only: tuple[str, ...],
    encoder_path: Path | None,
    pretrain_steps: int | None,
    reasoner_epochs: int,
    work: Path,
    out: Path,
    jobs: int,
) -> None:
    """Leave each real source family out of training in turn; write OUT/loso.md and OUT/loso.json."""
    if (encoder_path is None) == (pretrain_steps is None):
        raise click.UsageError("give either --encoder (shared) or --pretrain-steps (one encoder per family)")
    manifest = load_recipe(recipe).real_manifest
    if manifest is None:
        raise click.ClickException(f"{recipe}: the recipe reads no real MANIFEST")
    by_family = family_files(manifest)
    if unknown := sorted(set(only) - set(by_family)):
        raise click.UsageError(
            f"unknown famil(ies) {', '.join(unknown)}; known: {', '.join(sorted(by_family))}"
        )
    results: dict[str, dict[str, Any]] = {}
    for family in only or sorted(by_family):
        folder = work / family
        dataset = folder / "dataset"
        if _stage(f"{family}: dataset", dataset / "manifest.json"):
            ctx.invoke(dataset_build, recipe_path=held_out_recipe(recipe, by_family[family], folder / "recipe.yaml"),
                       out=dataset, jobs=jobs, force=True)  # fmt: skip
        encoder = encoder_path or folder / "encoder" / "encoder.pt"
        if encoder_path is None and _stage(f"{family}: pretrain", encoder):
            ctx.invoke(
                pretrain, datasets=(dataset,), out=encoder.parent, max_steps=pretrain_steps, batch_size=128
            )
        align_pt = folder / "align" / "align.pt"
        if _stage(f"{family}: align", align_pt):
            ctx.invoke(align, dataset=dataset, encoder_path=encoder, out=align_pt.parent, heads="both")
        reasoner_pt = folder / "reasoner" / "reasoner.pt"
        models = {"dataset": dataset, "encoder_path": encoder, "cache": work / "cache"}
        if _stage(f"{family}: reasoner", reasoner_pt):
            ctx.invoke(
                reasoner, align_path=align_pt, out=reasoner_pt.parent, epochs=reasoner_epochs, **models
            )
        reports = folder / "reports"
        if _stage(f"{family}: evaluate", reports / "results.json"):
            ctx.invoke(evaluate, align_path=align_pt, reasoner_path=reasoner_pt, out=reports,
                       skip=tuple(p for p in PARTS if p != "comparisons"), flow_baselines_only=True,
                       **models)  # fmt: skip
        results[family] = json.loads((reports / "results.json").read_text())
    note = (
        f"one per family, {pretrain_steps:,} pretraining steps without the family"
        if pretrain_steps
        else f"`{encoder_path}`, shared (its label-free pretraining read the family's training files)"
    )
    summary = summarize(results, note)
    out.mkdir(parents=True, exist_ok=True)
    write_json(summary, out / "loso.json")
    (out / "loso.md").write_text(render(summary))
    click.echo(render(summary))
