"""The `packetclip-train baseline` command group: flow-feature baselines on a built dataset's splits.

Owns the run of a baseline end to end (read splits, features, train, score, write `flows_<model>.json` and
`flows_<model>.md`). Does not define features, models or metrics itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from packetclip_training.baselines.features import feature_matrix, read_facts
from packetclip_training.baselines.flow_models import MODELS, BoostingConfig, subsample_per_class, train
from packetclip_training.baselines.scoring import coarse_scores, level_report

log = logging.getLogger(__name__)


@click.group()
def baseline() -> None:
    """Baselines trained and scored on exactly the dataset's splits."""


@baseline.command()
@click.option(
    "--dataset", "dataset_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--model", "model_choice", type=click.Choice([*MODELS, "both"]), default="both", show_default=True
)
@click.option(
    "--max-per-class", default=20000, show_default=True, help="Cap of training rows per fine class."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-resp-port", is_flag=True, help="Leave the responder port out of the features.")
def flows(
    dataset_dir: Path, out_dir: Path, model_choice: str, max_per_class: int, seed: int, no_resp_port: bool
):
    """LightGBM / XGBoost on the Zeek-conn-like facts; writes flows_<model>.json and .md into OUT."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(MODELS) if model_choice == "both" else [model_choice]
    for name in names:
        result = run_flow_baseline(dataset_dir, name, max_per_class, seed, include_resp_port=not no_resp_port)
        stem = f"flows_{name}" + ("_no_resp_port" if no_resp_port else "")
        (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / f"{stem}.md").write_text(markdown_summary(result))
        click.echo(
            f"{stem}: coarse mAUC {_fmt(result['coarse']['mauc'])}, fine macro-F1 "
            f"{_fmt(result['fine']['macro_f1'])}, {result['training']['seconds']:.1f} s -> {out_dir}"
        )


def run_flow_baseline(
    dataset_dir: Path, name: str, max_per_class: int, seed: int, include_resp_port: bool
) -> dict:
    splits = {split: read_facts(dataset_dir, split) for split in ("train", "val", "test")}
    train_facts = splits["train"]
    classes = sorted(set(train_facts["fine"].tolist()))
    fine_to_coarse = dict(zip(train_facts["fine"].tolist(), train_facts["coarse"].tolist(), strict=True))
    keep = {split: _rows_with_known_class(facts, classes, split) for split, facts in splits.items()}
    keep["train"] = keep["train"][
        subsample_per_class(train_facts["fine"][keep["train"]], max_per_class, seed)
    ]
    matrices = {split: feature_matrix(facts, include_resp_port) for split, facts in splits.items()}
    index = {c: i for i, c in enumerate(classes)}

    def xy(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = keep[split]
        labels = np.array([index[c] for c in splits[split]["fine"][rows]], dtype=np.int64)
        return matrices[split].values[rows], labels

    config = BoostingConfig(seed=seed)
    model = train(name, *xy("train"), *xy("val"), classes=classes, config=config)
    test_x, _ = xy("test")
    test = {key: column[keep["test"]] for key, column in splits["test"].items()}
    fine_scores = model.predict_proba(test_x)
    coarse, coarse_classes = coarse_scores(fine_scores, classes, fine_to_coarse)
    heldout = test["heldout"].astype(bool)
    return {
        "model": name,
        "dataset": str(dataset_dir),
        "seed": seed,
        "features": {"resp_port": include_resp_port, "names": matrices["test"].names},
        "rows": {
            "train_total": len(train_facts["fine"]),
            "train_used": len(keep["train"]),
            "max_per_class": max_per_class,
            "val": len(keep["val"]),
            "test": len(keep["test"]),
        },
        "training": {"seconds": model.seconds, "rounds": model.rounds, "threads": config.threads},
        "coarse": level_report(test["coarse"], coarse, coarse_classes, heldout),
        "fine": level_report(test["fine"], fine_scores, classes, heldout),
        "feature_importance_top15": model.importances(matrices["test"].names),
    }


def _rows_with_known_class(facts: dict[str, np.ndarray], classes: list[str], split: str) -> np.ndarray:
    known = np.isin(facts["fine"], classes)
    if not known.all():
        unknown = sorted(set(facts["fine"][~known].tolist()))
        log.warning(
            "%s: skipping %d rows of classes absent from train: %s", split, int((~known).sum()), unknown
        )
    return np.flatnonzero(known)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown_summary(result: dict) -> str:
    port = "with" if result["features"]["resp_port"] else "without"
    lines = [
        f"# Flow baseline: {result['model']} ({port} responder port)",
        "",
        f"Train rows used {result['rows']['train_used']} of {result['rows']['train_total']} "
        f"(at most {result['rows']['max_per_class']} per fine class, seed {result['seed']}); "
        f"test rows {result['rows']['test']}; training {result['training']['seconds']:.1f} s, "
        f"{result['training']['rounds']} rounds.",
        "",
    ]
    for level in ("coarse", "fine"):
        report = result[level]
        lines += [
            f"## {level.capitalize()} classes",
            "",
            f"mAUC {_fmt(report['mauc'])}, without benign {_fmt(report['mauc_without_benign'])}, "
            f"macro-F1 {_fmt(report['macro_f1'])}, accuracy {_fmt(report['accuracy'])}, "
            f"held-out-variant accuracy {_fmt(report['heldout_variant_accuracy'])} "
            f"({report['heldout_variant_rows']} rows).",
            "",
            "| class | test rows | AUC |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {c} | {report['test_rows_per_class'][c]} | {_fmt(report['auc'][c])} |"
            for c in report["classes"]
        ]
        lines.append("")
    lines += ["## Top features (gain share)", ""]
    lines += [f"- {item['feature']}: {item['gain_share']:.3f}" for item in result["feature_importance_top15"]]
    return "\n".join(lines) + "\n"
