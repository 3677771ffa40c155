"""The `packetclip-train evaluate` command: one run, one folder of markdown, PNG and JSON.

Owns loading the frozen models, choosing the report's headline rows and targets, drawing the figures and writing
`README.md`, `results.json` and `headline.json` into the report folder. The numbers come from `evaluation.run`;
the efficiency comparison from `evaluation.efficiency`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import load_missions
from packetclip_training.align.train import load_heads, recorded_config
from packetclip_training.evaluation import figures
from packetclip_training.evaluation.report import format_score, markdown_table, render_markdown, write_json
from packetclip_training.evaluation.run import (
    PACKETCLIP,
    PACKETCLIP_AT_POINT,
    EvaluateConfig,
    Inputs,
    efficiency,
    run_evaluation,
)
from packetclip_training.model_options import (
    align_option,
    cache_option,
    dataset_option,
    encoder_option,
    reasoner_option,
)
from packetclip_training.models.encoder import load_checkpoint
from packetclip_training.reasoner.data import cached_split, reasoner_training_split
from packetclip_training.reasoner.fit import concept_embeddings
from packetclip_training.reasoner.model import TrainConfig, load_reasoner

log = logging.getLogger(__name__)

PARTS = ("zeroshot", "comparisons", "loso", "scarcity", "unseen", "embeddings", "efficiency")
# What the paper reports (Masukawa et al., PacketCLIP): shown beside ours, not targets of ours.
PAPER = {"mauc": 0.946, "zero_shot_top1": 0.856, "zero_shot_top5": 0.961}
DECISION_FILE = "decision.json"  # the operating point, for the bundle manifest (`export --decision`)


def headline(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows the issue sets targets for, then the others worth a glance."""
    coarse, fine = results["levels"]["coarse"], results["levels"]["fine"]
    rows = _target_rows(results, coarse, fine)
    rows += [
        {
            "metric": "4-class mAUC without benign",
            "value": coarse["mauc_without_benign"],
            "rows": coarse["rows"],
        },
        {"metric": "4-class macro-F1", "value": coarse["macro_f1"], "rows": coarse["rows"]},
        {"metric": "fine-class mAUC", "value": fine["mauc"], "rows": fine["rows"]},
        {"metric": "fine-class macro-F1", "value": fine["macro_f1"], "rows": fine["rows"]},
    ]
    rows += _variant_rows(results)
    point = results.get("operating_point")
    if point:
        rows += _operating_point_rows(point)
    rows += loso_headline(results.get("leave_one_family_out") or [])
    rows += _zero_shot_rows(results)
    for row in rows:
        row.setdefault("higher_is_better", True)
    return rows


def _target_rows(
    results: Mapping[str, Any], coarse: Mapping[str, Any], fine: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The headline rows with a target: mAUC, fine top-1, mAUC on a tenth of the data and the speed ratio."""
    rows = [
        {"metric": "4-class mAUC (coarse)", "value": coarse["mauc"], "target": 0.99, "rows": coarse["rows"]},
        {"metric": "fine-class top-1", "value": fine["accuracy"], "target": 0.90, "rows": fine["rows"]},
    ]
    scarcity = (results.get("data_scarcity") or {}).get("curves", {}).get("PacketCLIP reasoner", {})
    if "10" in scarcity:
        rows.append(
            {
                "metric": "4-class mAUC with 10 % of the training data",
                "value": scarcity["10"],
                "target": 0.97,
                "rows": coarse["rows"],
            }
        )
    efficiency = results.get("efficiency") or []
    ratio = next((row.get("ratio") for row in efficiency if row.get("ratio") not in (None, 1.0)), None)
    if ratio is not None:
        rows.append({"metric": "connections/s vs ET-BERT's architecture (×)", "value": ratio, "target": 300})
    return rows


def _variant_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline rows of the tools trained on (held-out variants left out) and of the held-out variants."""
    rows: list[dict[str, Any]] = []
    seen = results.get("seen_overall") or {}
    if seen.get("rows"):
        rows += [
            {
                "metric": "tools trained on (held-out variants left out): 4-class mAUC",
                "value": seen["coarse"]["mauc"],
                "rows": seen["rows"],
            },
            {
                "metric": "tools trained on (held-out variants left out): fine top-1",
                "value": seen["fine"]["accuracy"],
                "rows": seen["rows"],
            },
        ]
    heldout = results.get("heldout_overall") or {}
    if heldout.get("rows"):
        rows.append(
            {
                "metric": "held-out variants: coarse accuracy",
                "value": heldout["coarse"]["accuracy"],
                "rows": heldout["rows"],
            }
        )
    return rows


def _operating_point_rows(point: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline rows of the operating point: benign false alarms (real captures, the lab) and recalls."""
    real = point["test"]["real"]
    rows: list[dict[str, Any]] = [
        {
            "metric": "operating point: benign false alarms, held-out real captures",
            "value": real["false_alarms"],
            "target": point["budget"],
            "higher_is_better": False,
            "rows": real["benign_connections"],
        },
        *(
            [
                {
                    "metric": "operating point: benign false alarms, held-out real captures, mean over files",
                    "value": real["false_alarms_file_macro"],
                    "higher_is_better": False,
                    "rows": real["benign_connections"],
                }
            ]
            if real.get("false_alarms_file_macro") is not None
            else []
        ),
        {
            "metric": "operating point: benign false alarms, lab test split",
            "value": point["test"]["lab"]["false_alarms"],
            "higher_is_better": False,
            "rows": point["test"]["lab"]["benign_connections"],
        },
    ]
    for group, words in (("lab_during_attacks", "during"), ("lab_outside_attacks", "outside")):
        if point["test"].get(group, {}).get("benign_connections"):
            rows.append(
                {
                    "metric": f"operating point: benign false alarms, lab test split, {words} attack episodes",
                    "value": point["test"][group]["false_alarms"],
                    "higher_is_better": False,
                    "rows": point["test"][group]["benign_connections"],
                }
            )
    rows += [
        {
            "metric": f"operating point: {name} recall, test split",
            "value": value,
            "rows": point["test"]["all"]["connections"],
        }
        for name, value in point["test"]["all"]["recall"].items()
        if value is not None and name != "benign"
    ]
    return rows


def _zero_shot_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline rows of zero-shot top-1 and top-5 on the attack classes (none when not measured)."""
    zero = (results.get("zero_shot") or {}).get("attack_classes")
    if not zero:
        return []
    return [
        {
            "metric": "zero-shot top-1, 10 attack classes (paper 0.856)",
            "value": zero["top1"],
            "rows": zero["count"],
        },
        {
            "metric": "zero-shot top-5, 10 attack classes (paper 0.961)",
            "value": zero["top5"],
            "rows": zero["count"],
        },
    ]


def loso_headline(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The leave-one-family-out targets: DoS recall on the public DDoS captures, the lowest mAUC over the
    families, the highest benign false-alarm rate of a benign family, each at the operating point chosen without
    the family (PacketCLIP's row of each run)."""
    at_point = PACKETCLIP_AT_POINT
    rows: list[dict[str, Any]] = []
    by_family = {run["family"]: run["models"] for run in runs}
    ddos = by_family.get("ddos-public", {})
    for model, words in ((at_point, "at the operating point"), (PACKETCLIP, "argmax")):
        if model in ddos:
            rows.append(
                {
                    "metric": f"left-out family: DoS recall, public DDoS captures, {words}",
                    "value": ddos[model]["recall"].get("dos"),
                    "target": 0.90 if model == at_point else None,
                    "rows": ddos[model]["connections"],
                }
            )
    aucs = [
        (models[PACKETCLIP]["mauc_unseen_real"], f) for f, models in by_family.items() if PACKETCLIP in models
    ]
    aucs = [(v, f) for v, f in aucs if v is not None]
    if aucs:
        value, family = min(aucs)
        rows.append(
            {"metric": f"left-out family: lowest 4-class mAUC ({family})", "value": value, "target": 0.95}
        )
    alarms = [
        (models[at_point]["false_alarm"], f, models[at_point]["connections"])
        for f, models in by_family.items()
        if f.endswith("-benign") and at_point in models
    ]
    alarms = [a for a in alarms if a[0] is not None]
    if alarms:
        value, family, count = max(alarms)
        rows.append(
            {
                "metric": f"left-out family: highest benign false alarms at the operating point ({family})",
                "value": value,
                "target": 0.01,
                "higher_is_better": False,
                "rows": count,
            }
        )
    return [{k: v for k, v in row.items() if v is not None or k != "target"} for row in rows]


def real_traffic_section(real: Mapping[str, Any] | None) -> list[str]:
    """Every model on the test split's real captures (whole files, held-out source families among them)."""
    if not real:
        return []
    lines = [
        "## Real traffic",
        "",
        "The test split's real captures: whole files no stage trained on, among them every public DDoS capture "
        "(held out of training as a family). Recall per coarse class, benign false alarms (share of benign "
        "connections raised as an attack) and one-vs-rest mAUC over the classes present.",
        "",
        "| model | family | connections | benign | dos | recon | bruteforce | false alarms | mAUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, entry in real["models"].items():
        for family, summary in [*entry["families"].items(), ("all", entry["overall"])]:
            recall = [_share(summary["recall"].get(c)) for c in ("benign", "dos", "recon", "bruteforce")]
            lines.append(
                f"| {model} | {family} | {summary['connections']:,} | "
                + " | ".join(recall)
                + f" | {_share(summary['false_alarm'])} | {_share(summary.get('mauc'))} |"
            )
    return lines


def loso_section(runs: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Each real source family left out of alignment, reasoner, flow baselines and operating point in turn."""
    if not runs:
        return []
    lines = [
        "## Leave one source family out (real captures)",
        "",
        "Each block: alignment, reasoner (with this run's lighter settings) and flow baselines retrained without "
        "one real source family's files, the operating point chosen again on the validation split's other real "
        "benign files; recall and false alarms over every connection of the family (whichever split holds its "
        "files), mAUC over every real connection no model of the block trained on (the family's and the test "
        "split's other real files). The encoder is shared: its pretraining reads no labels, but it read the bytes "
        "of the family's training files. A family the recipe keeps out of every stage (`real.test_only`) is "
        "judged with the main models instead (marked *main*): they are that experiment at full strength.",
        "",
        "| left out | model | files | connections | benign | dos | recon | bruteforce | false alarms | mAUC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        for model, summary in run["models"].items():
            recall = [_share(summary["recall"].get(c)) for c in COARSE_CLASSES]
            lines.append(
                f"| {run['family']} | {model}{'' if run.get('retrained', True) else ' (*main*)'} | "
                f"{summary['files']:,} | {summary['connections']:,} | "
                + " | ".join(recall)
                + f" | {_share(summary['false_alarm'])} | {_share(summary['mauc_unseen_real'])} |"
            )
    points = [
        f"- {run['family']}: 1 − P(benign) ≥ {run['attack_threshold']:.4f}, chosen on {run['calibration_benign']:,} "
        f"real benign validation connections, each file weighing the same; {run['train_rows_left_out']:,} training "
        f"rows left out, {run['seconds']:.0f} s"
        for run in runs
        if run["attack_threshold"] is not None
    ]
    sources = [
        f"- {run['family']}, false alarms at its operating point by file: "
        + "; ".join(
            f"`{Path(row['file']).name}` {row['raised']} of {row['benign']} "
            f"({', '.join(f'{name} {count}' for name, count in row['as'].items())})"
            for row in top
        )
        for run in runs
        if (top := run["models"].get(PACKETCLIP_AT_POINT, {}).get("false_alarm_files"))
    ]
    return [*lines, "", *points, *sources] if points or sources else lines


def operating_point_section(point: Mapping[str, Any] | None) -> list[str]:
    """The shipped decision rule and what it does on the test split, real and lab traffic apart."""
    if not point:
        return []
    lines = [
        "## Operating point",
        "",
        f"A connection is an attack only when 1 − P(benign) ≥ **{point['attack_threshold']:.4f}**, chosen as the "
        f"smallest threshold raising at most {point['budget']:.0%} of the "
        f"{point['calibration_connections']:,} {point['chosen_on']}, "
        + (
            f"{point.get('weighting')} ({point['calibration_files']:,} files; "
            f"{_share(point['calibration_false_alarms_file_macro'])} per file on average, "
            if point.get("weighting")
            else "("
        )
        + f"{_share(point['calibration_false_alarms'])} of the connections). On the test split (false alarms: share "
        "of the benign connections, and in brackets the mean over files):",
        "",
        "| traffic | connections | benign | false alarms (argmax → point) | dos | recon | bruteforce |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, judged in point["test"].items():
        recall = [
            f"{_share(judged['recall_argmax'].get(c))} → {_share(judged['recall'].get(c))}"
            for c in ("dos", "recon", "bruteforce")
        ]
        lines.append(
            f"| {name} | {judged['connections']:,} | {judged['benign_connections']:,} | "
            f"{_share(judged['false_alarms_argmax'])} → {_share(judged['false_alarms'])}"
            + (
                f" ({_share(judged['false_alarms_file_macro'])})"
                if "false_alarms_file_macro" in judged
                else ""
            )
            + " | "
            + " | ".join(recall)
            + " |"
        )
    return lines


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}" if value < 0.1 else f"{value:.3f}"


def zero_shot_section(zero: Mapping[str, Any] | None) -> list[str]:
    if not zero:
        return []
    lines = ["## Zero-shot classification (class descriptions only, no classifier)", ""]
    lines += markdown_table(
        ["classes", "connections", "top-1", "top-5", "coarse accuracy"],
        [
            [
                name.replace("_", " "),
                f"{z['count']:,}",
                format_score(z["top1"]),
                format_score(z["top5"]),
                format_score(z["coarse_accuracy"]),
            ]
            for name, z in zero.items()
        ],
    )
    per_class = zero["all_classes"]["per_class_top1"]
    lines += ["", "Top-1 per class (all classes):", ""]
    lines += markdown_table(
        ["class", "connections", "top-1"],
        [[c, f"{v['count']:,}", format_score(v["top1"])] for c, v in per_class.items()],
    )
    return lines


def unseen_reasoner_section(rows: list[Mapping[str, Any]] | None) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Unseen classes: what the reasoner trained without them says",
        "",
        "The reasoner never saw the class; the coarse label it gives that class's test connections:",
        "",
    ]
    lines += markdown_table(
        ["class", "connections", "flagged as an attack", "right coarse class", "predicted"],
        [
            [
                r["class"],
                f"{r['connections']:,}",
                format_score(r["flagged_as_attack"]),
                format_score(r["right_coarse_class"]),
                ", ".join(f"{k} {v:,}" for k, v in r["predicted_coarse"].items()),
            ]
            for r in rows
        ],
    )
    return lines


def draw(results: dict[str, Any], out: Path, curve: list[dict[str, Any]] | None) -> dict[str, str]:
    """Every figure; returns caption → path relative to `out`."""
    drawn: dict[str, str] = {}
    probabilities = results["_probabilities"]
    truth = probabilities["truth"]
    coarse_names = np.asarray([FINE_TO_COARSE[t] for t in truth], dtype=object)
    for level, names, classes in (("coarse", coarse_names, COARSE_CLASSES), ("fine", truth, FINE_CLASSES)):
        path = figures.plot_roc_curves(
            names,
            probabilities[level],
            list(classes),
            out / f"roc_{level}.png",
            title=f"ROC, {level} classes (test split)",
            log_fpr=True,
        )
        drawn[f"ROC curves, {level} classes"] = path.name
        matrix = results["levels"][level]["confusion_matrix"]
        path = figures.plot_confusion_matrix(
            matrix["counts"],
            list(classes),
            out / f"confusion_{level}.png",
            title=f"Confusion matrix, {level} classes",
        )
        drawn[f"Confusion matrix, {level} classes"] = path.name
    if results.get("data_scarcity"):
        path = figures.plot_data_scarcity(
            results["data_scarcity"]["curves"], out / "data_scarcity.png", metric="coarse mAUC"
        )
        drawn["Data scarcity"] = path.name
    sample = results.get("_embedding_sample")
    if sample is not None:
        path = figures.plot_embeddings(
            sample["embeddings"],
            sample["labels"],
            out / "embeddings.png",
            method="tsne",
            classes=list(FINE_CLASSES),
            max_points=2000,
            title="Aligned connection embeddings (t-SNE, test sample)",
        )
        drawn["Embeddings"] = path.name
    if curve:
        path = figures.plot_training_curve(
            [p["coarse_loss"] + p["fine_loss"] for p in curve],
            out / "reasoner_training.png",
            title="Reasoner training",
            loss_label="coarse + fine cross-entropy",
            second=[p.get("coarse_mauc") for p in curve],
            second_label="validation coarse mAUC",
        )
        drawn["Reasoner training"] = path.name
    return drawn


def write_report(
    results: dict[str, Any], out: Path, notes: list[str], curve: list[dict[str, Any]] | None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["figures"] = draw(results, out, curve)
    results["headline"] = headline(results)
    results["title"] = "PacketCLIP evaluation"
    results["notes"] = notes
    text = render_markdown(results).rstrip() + "\n"
    extra = [
        *real_traffic_section(results.get("real_traffic")),
        "",
        *loso_section(results.get("leave_one_family_out")),
        "",
        *operating_point_section(results.get("operating_point")),
        "",
        *zero_shot_section(results.get("zero_shot")),
        "",
        *unseen_reasoner_section(results.get("unseen_reasoner")),
    ]
    text += "\n" + "\n".join(extra).strip() + "\n"
    (out / "README.md").write_text(text)
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    write_json(public, out / "results.json")
    write_json({row["metric"]: row["value"] for row in results["headline"]}, out / "headline.json")
    point = results.get("operating_point")
    if point:  # what `packetclip-train export --decision` writes into the bundle's manifest
        write_json({k: v for k, v in point.items() if k != "test"}, out / DECISION_FILE)


@click.command("evaluate")
@dataset_option
@encoder_option
@align_option
@reasoner_option
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An exported bundle: its ONNX models are timed against ET-BERT's architecture.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@cache_option
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="Scratch folder for the unseen-class runs (default OUT/work).",
)
@click.option("--skip", multiple=True, type=click.Choice(PARTS), help="Leave a part out (repeatable).")
@click.option(
    "--unseen",
    "unseen_classes",
    multiple=True,
    type=click.Choice(FINE_CLASSES[1:]),
    help="Classes held out in turn (default: slowloris, os_scan, dictionary_attack).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Epochs of the reasoners retrained here (data scarcity, unseen classes).",
)
@click.option(
    "--max-per-class",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Rows per class and epoch of the reasoners retrained here.",
)
@click.option("--efficiency-seconds", type=click.FloatRange(min=1.0), default=20.0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
def evaluate(
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    reasoner_path: Path,
    bundle_path: Path | None,
    out: Path,
    cache: Path | None,
    work: Path | None,
    skip: tuple[str, ...],
    unseen_classes: tuple[str, ...],
    epochs: int,
    max_per_class: int,
    efficiency_seconds: float,
    threads: int | None,
) -> None:
    """Score everything on the test split and write OUT/README.md, results.json, headline.json and figures."""
    from packetclip_training.text.encoder import TextEncoder  # loads MiniLM: only when the command runs

    if threads:
        torch.set_num_threads(threads)
    encoder, _ = load_checkpoint(encoder_path)
    heads, align_payload = load_heads(align_path)
    reasoner, missions, payload = load_reasoner(reasoner_path)
    encode = TextEncoder().encode
    record = payload.get("record", {})
    # a reasoner from before tool invariance was trained without it; retrained ones follow it
    recorded = {"tool_invariance": 0.0, **record.get("train_config", {})}
    train_settings = TrainConfig(**recorded) if "train_config" in record else TrainConfig()
    # retrained reasoners are lighter than the main one so the run stays within an hour on two cores; every
    # point of the data-scarcity curve, 100 % included, is retrained with these same settings
    train_settings.epochs, train_settings.max_per_class = epochs, max_per_class
    align_settings = recorded_config(align_payload)
    config = (
        EvaluateConfig(reasoner=train_settings, align=align_settings, unseen=unseen_classes)
        if unseen_classes
        else EvaluateConfig(reasoner=train_settings, align=align_settings)
    )
    splits = {s: cached_split(encoder, encoder_path, dataset, s, cache) for s in ("train", "val", "test")}
    reasoner_train = reasoner_training_split(
        encoder,
        encoder_path,
        dataset,
        splits["train"],
        cache,
        train_settings.one_sided,
        train_settings.tool_invariance,
    )
    concept_text: Callable[[Any], np.ndarray] = lambda h: concept_embeddings(missions, h, encode)  # noqa: E731
    inputs = Inputs(
        dataset,
        encoder,
        heads,
        reasoner,
        list(missions) or load_missions(),
        splits,
        reasoner_train,
        encode,
        concept_text,
        work or out / "work",
    )
    parts = [p for p in PARTS if p not in skip]
    results = run_evaluation(inputs, config, parts)
    if "efficiency" in parts and bundle_path is not None:
        detail = efficiency(inputs, bundle_path, efficiency_seconds)
        results["efficiency"] = detail["rows"]
        results["efficiency_detail"] = {k: v for k, v in detail.items() if k != "markdown"}
    metrics_file = reasoner_path.parent / "reasoner_metrics.json"
    curve = json.loads(metrics_file.read_text()).get("curve") if metrics_file.is_file() else None
    notes = [
        f"Dataset `{dataset.name}`: test split of {len(splits['test']):,} connections (flow- and time-disjoint from "
        "training, held-out variants test-only). Every model here is trained on the same train rows and scored on "
        "the same test rows in this run.",
    ]
    write_report(results, out, notes, curve)
    rows = {row["metric"]: row["value"] for row in results["headline"]}
    click.echo(json.dumps(rows, indent=1, default=float))
