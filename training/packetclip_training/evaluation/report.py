"""The evaluation report: a results dict rendered as markdown (`reports/README.md`) and written as strict JSON.

Owns the report's layout, its number formats (3 decimals for AUC/F1/accuracy, thousands separators for counts)
and the comparison that lists where a baseline beats the model, so that no such line is written by hand. Does not
compute metrics (`evaluation.metrics`) or draw figures (`evaluation.figures`); it renders what it is given.

The results dict (every section optional; a missing or None section is skipped):
    title               str
    model               name of the model in comparisons (default "PacketCLIP reasoner")
    notes               [str] paragraphs under the title (dataset, split, run settings)
    headline            [{"metric", "value", "target", "rows", "higher_is_better"}]; "met?" is computed
    levels              {"coarse": level_metrics(...), "fine": level_metrics(...)} of the model
    baselines           {name: {"coarse": level dict, "fine": level dict}}; `baselines.scoring.level_report`
                        dicts and `level_metrics` dicts both fit
    data_scarcity       {"target", "metric", "curves": {method: {percent: value}}}
    heldout_variants    {name: subset_metrics(...)}
    per_file            {file: subset_metrics(...)}
    unseen_classes      [unseen_class_metrics(...)]
    efficiency          [{"name", "parameters", "flops_per_packet", "flops_per_connection",
                          "connections_per_second", "ratio"}]
    figures             {caption: path relative to the markdown file}
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "PacketCLIP reasoner"
MISSING = "—"
# The level-wide numbers compared between model and baselines, with the names the report gives them.
COMPARED_HEADLINE = {
    "mauc": "mAUC",
    "mauc_without_benign": "mAUC without benign",
    "macro_f1": "macro-F1",
    "accuracy": "accuracy",
}
LEVEL_ORDER = ("coarse", "fine")
# How many labels a per-file distribution cell names before it says how many more there are.
DISTRIBUTION_LABELS_SHOWN = 4


# ---- number formats -------------------------------------------------------------------------------------------


def format_score(value: float | None, decimals: int = 3) -> str:
    """An AUC, F1, accuracy or recall: fixed decimals; None (undefined) as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value):.{decimals}f}"


def format_count(value: int | None) -> str:
    """A row, parameter or FLOP count with thousands separators."""
    return MISSING if value is None else f"{int(value):,}"


def format_value(value: Any) -> str:
    """Whatever a table is given: counts with separators, scores with 3 decimals, large floats with 1 decimal."""
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return format_count(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return MISSING
        return format_score(float(value)) if abs(float(value)) < 10 else f"{float(value):,.1f}"
    return str(value)


def _cell(text: Any) -> str:
    # A pipe inside a cell would end it early; a newline would end the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub-flavoured markdown table; cells are rendered with `format_value` unless already strings."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(
            "| " + " | ".join(_cell(c if isinstance(c, str) else format_value(c)) for c in row) + " |"
        )
    return lines


# ---- sections -------------------------------------------------------------------------------------------------


def headline_section(rows: Sequence[Mapping]) -> list[str]:
    """Metric, value, target, met? and the rows behind each number."""
    table = []
    for row in rows:
        value, target = row.get("value"), row.get("target")
        table.append(
            [
                row["metric"],
                format_value(value),
                format_value(target),
                _met(value, target, row.get("higher_is_better", True)),
                format_count(row.get("rows")),
            ]
        )
    return ["## Headline", "", *markdown_table(["metric", "value", "target", "met?", "rows"], table)]


def _met(value: Any, target: Any, higher_is_better: bool) -> str:
    if value is None or target is None:
        return MISSING
    met = value >= target if higher_is_better else value <= target
    return "yes" if met else "**no**"


def level_section(level: str, metrics: Mapping, baselines: Mapping[str, Mapping]) -> list[str]:
    """Summary line, per-class table (model AUC beside each baseline's) and confusion matrix of one level."""
    classes = metrics["classes"]
    baseline_levels = {name: levels[level] for name, levels in baselines.items() if levels.get(level)}
    lines = [f"## {level.capitalize()} classes", "", *_level_summary(metrics), ""]
    header = ["class", "AUC", *(f"AUC {name}" for name in baseline_levels)]
    header += ["positives", "negatives", "precision", "recall", "F1", "predicted"]
    per_class = metrics.get("per_class", {})
    rows = []
    for name in classes:
        stats = per_class.get(name, {})
        rows.append(
            [
                name,
                format_score(metrics["auc"].get(name)),
                *(format_score(b["auc"].get(name)) for b in baseline_levels.values()),
                format_count(metrics["test_rows_per_class"].get(name)),
                format_count(stats.get("negatives")),
                format_score(stats.get("precision")),
                format_score(stats.get("recall")),
                format_score(stats.get("f1")),
                format_count(stats.get("predicted")),
            ]
        )
    lines += markdown_table(header, rows)
    confusion = metrics.get("confusion_matrix", {})
    if confusion.get("counts"):
        lines += ["", f"Confusion matrix ({level}; rows = truth, columns = prediction):", ""]
        lines += confusion_table(confusion["counts"], confusion["rows_true_columns_predicted"])
    return lines


def _level_summary(metrics: Mapping) -> list[str]:
    counted = metrics.get("auc_classes_counted", sum(v is not None for v in metrics["auc"].values()))
    rows = metrics.get("rows", sum(metrics["test_rows_per_class"].values()))
    top_k = ", ".join(f"top-{k} {format_score(v)}" for k, v in metrics.get("top_k_accuracy", {}).items())
    lines = [
        f"mAUC {format_score(metrics['mauc'])} over {counted} of {len(metrics['classes'])} classes "
        f"({format_count(rows)} rows); without benign {format_score(metrics['mauc_without_benign'])}; "
        f"macro-F1 {format_score(metrics['macro_f1'])}; accuracy {format_score(metrics['accuracy'])}"
        + (f"; {top_k}." if top_k else ".")
    ]
    undefined = metrics.get("auc_undefined") or {
        name: "no positive or no negative rows" for name, v in metrics["auc"].items() if v is None
    }
    if undefined:
        named = "; ".join(f"{name} ({why})" for name, why in undefined.items())
        lines.append(f"AUC undefined, left out of mAUC: {named}.")
    skipped = {why: n for why, n in (metrics.get("skipped_rows") or {}).items() if n}
    if skipped:
        lines.append(
            "Rows skipped: " + ", ".join(f"{format_count(n)} {why}" for why, n in skipped.items()) + "."
        )
    return [" ".join(lines)]


def confusion_table(counts: Sequence[Sequence[int]], classes: Sequence[str]) -> list[str]:
    """Counts with truth rows, prediction columns and a row total."""
    header = ["true \\ predicted", *classes, "total"]
    rows = [
        [name, *(format_count(c) for c in row), format_count(sum(row))]
        for name, row in zip(classes, counts, strict=True)
    ]
    return markdown_table(header, rows)


def scarcity_section(scarcity: Mapping) -> list[str]:
    """Percent of training data × method table, and per method the shares that meet the target and those that miss it."""
    curves: Mapping[str, Mapping] = scarcity["curves"]
    target = scarcity.get("target")
    metric = scarcity.get("metric", "mAUC")
    by_method = {method: {float(p): v for p, v in points.items()} for method, points in curves.items()}
    percents = sorted({p for points in by_method.values() for p in points}, reverse=True)
    rows = [[f"{p:g} %", *(format_score(points.get(p)) for points in by_method.values())] for p in percents]
    lines = [f"## Data scarcity ({metric})", "", *markdown_table(["training data", *by_method], rows)]
    if target is not None:
        lines.append("")
        for method, points in by_method.items():
            lines.append(f"- {method}: {_target_verdict(points, target)}.")
    return lines


def _target_verdict(points: Mapping[float, float | None], target: float) -> str:
    # Listed share by share, not "down to x %": a curve need not be monotonic, and a gap must show.
    def shares(selected: list[float]) -> str:
        return ", ".join(f"{p:g} %" for p in sorted(selected, reverse=True))

    meeting = [p for p, v in points.items() if v is not None and v >= target]
    missing = [p for p, v in points.items() if v is not None and v < target]
    if not meeting:
        return f"below {format_score(target)} at every share measured"
    verdict = f"meets {format_score(target)} at {shares(meeting)}"
    return verdict + (f"; below it at {shares(missing)}" if missing else "")


def subsets_section(title: str, subsets: Mapping[str, Mapping], first_column: str) -> list[str]:
    """One row per subset (held-out variant, source file): rows, what it holds, how it scored, and any caveat."""
    header = [first_column, "connections", "truth", "predicted", "accuracy", "macro-F1", "mAUC", "note"]
    rows = []
    for name, subset in subsets.items():
        metrics = subset.get("metrics") or {}
        rows.append(
            [
                name,
                format_count(subset["rows"]),
                _distribution_text(subset.get("truth_distribution", {})),
                _distribution_text(subset.get("predicted_distribution", {})),
                format_score(metrics.get("accuracy")),
                format_score(metrics.get("macro_f1")),
                format_score(metrics.get("mauc")),
                subset.get("note") or "",
            ]
        )
    return [f"## {title}", "", *markdown_table(header, rows)]


def _distribution_text(distribution: Mapping[str, int]) -> str:
    items = sorted(distribution.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{name} {count:,}" for name, count in items[:DISTRIBUTION_LABELS_SHOWN])
    hidden = len(items) - DISTRIBUTION_LABELS_SHOWN
    return text + (f", +{hidden} more" if hidden > 0 else "") if items else MISSING


def unseen_section(rows: Sequence[Mapping]) -> list[str]:
    """Per held-out class: AUC from its description alone and recall at the false-positive budget."""
    limits = {row.get("fpr_limit") for row in rows}
    only = limits.pop() if len(limits) == 1 else None  # one limit shared by every row
    limit_text = f"{100 * only:g} %" if only is not None else "the row's limit"
    header = ["class", "AUC", f"recall @ FPR ≤ {limit_text}", "FPR reached", "positives", "negatives"]
    table = [
        [
            row["class"],
            format_score(row.get("auc")),
            format_score(row.get("recall_at_fpr")),
            format_score(row.get("false_positive_rate"), decimals=4),
            format_count(row.get("positives")),
            format_count(row.get("negatives")),
        ]
        for row in rows
    ]
    return ["## Unseen classes", "", *markdown_table(header, table)]


EFFICIENCY_COLUMNS = {
    "name": "model",
    "parameters": "parameters",
    "flops_per_packet": "FLOPs/packet",
    "flops_per_connection": "FLOPs/connection",
    "connections_per_second": "connections/s",
    "ratio": "ratio",
}


def efficiency_section(rows: Sequence[Mapping]) -> list[str]:
    """The efficiency rows as given; a ratio is shown with a × sign."""
    table = []
    for row in rows:
        cells = [format_value(row.get(key)) for key in EFFICIENCY_COLUMNS]
        if row.get("ratio") is not None and not isinstance(row["ratio"], str):
            cells[-1] = f"{float(row['ratio']):,.1f}×"
        table.append(cells)
    return ["## Efficiency", "", *markdown_table(list(EFFICIENCY_COLUMNS.values()), table)]


# ---- where a baseline wins ------------------------------------------------------------------------------------


def baseline_wins(levels: Mapping[str, Mapping], baselines: Mapping[str, Mapping]) -> list[dict]:
    """Every per-class AUC and level-wide metric where a baseline scores strictly higher than the model.

    Only numbers defined on both sides are compared; a class the model has no AUC for cannot be lost or won.
    """
    wins = []
    for level in _ordered(levels):
        model = levels[level]
        for baseline_name, baseline_levels in baselines.items():
            baseline = baseline_levels.get(level)
            if not baseline:
                continue
            for key, label in COMPARED_HEADLINE.items():
                values = (model.get(key), baseline.get(key))
                wins += _win(level, label, baseline_name, *values, model.get("rows"), "rows")
            for name, model_auc in model["auc"].items():
                positives = model.get("test_rows_per_class", {}).get(name)
                values = (model_auc, baseline["auc"].get(name))
                wins += _win(level, f"{name} AUC", baseline_name, *values, positives, "positives")
    return wins


def _win(
    level: str, item: str, baseline: str, model_value, baseline_value, count: int | None, counted: str
) -> list[dict]:
    if model_value is None or baseline_value is None or not baseline_value > model_value:
        return []
    return [
        {
            "level": level,
            "item": item,
            "baseline": baseline,
            "model_value": float(model_value),
            "baseline_value": float(baseline_value),
            "count": count,
            "counted": counted,  # what `count` counts: the level's rows, or the class's positives
        }
    ]


def _ordered(levels: Mapping[str, Any]) -> list[str]:
    return [lv for lv in LEVEL_ORDER if lv in levels] + [lv for lv in levels if lv not in LEVEL_ORDER]


def baseline_wins_section(
    wins: Sequence[Mapping], model_name: str, baseline_names: Sequence[str]
) -> list[str]:
    """The computed list of baseline wins, or a sentence saying there are none."""
    lines = ["## Where the flow baseline wins", ""]
    compared = ", ".join(baseline_names)
    if not wins:
        return [
            *lines,
            f"No per-class AUC or level-wide metric where {compared} scores higher than {model_name}.",
        ]
    lines.append(f"Every number where a baseline ({compared}) scores higher than {model_name}:")
    lines.append("")
    for win in wins:
        margin = win["baseline_value"] - win["model_value"]
        count = f"; {format_count(win['count'])} {win['counted']}" if win.get("count") is not None else ""
        lines.append(
            f"- {win['level']} / {win['item']}: {win['baseline']} {format_score(win['baseline_value'])} vs "
            f"{model_name} {format_score(win['model_value'])} (+{margin:.4f}{count})"
        )
    return lines


# ---- whole report ---------------------------------------------------------------------------------------------


def render_markdown(results: Mapping[str, Any]) -> str:
    """The whole report as markdown; sections whose key is missing or None are left out."""
    model_name = results.get("model") or DEFAULT_MODEL_NAME
    levels = results.get("levels") or {}
    baselines = results.get("baselines") or {}
    lines = [f"# {results.get('title') or 'Evaluation'}", ""]
    for note in results.get("notes") or []:
        lines += [note, ""]
    sections: list[tuple[str, Callable[[Any], list[str]]]] = [
        ("headline", headline_section),
        ("levels", lambda lv: _join(level_section(name, lv[name], baselines) for name in _ordered(lv))),
        ("baselines", lambda b: _wins_or_nothing(levels, b, model_name)),
        ("data_scarcity", scarcity_section),
        ("heldout_variants", lambda s: subsets_section("Held-out variants", s, "variant")),
        ("per_file", lambda s: subsets_section("Per file", s, "file")),
        ("unseen_classes", unseen_section),
        ("efficiency", efficiency_section),
        ("figures", _figures_section),
    ]
    for key, render in sections:
        value = results.get(key)
        block = render(value) if value else []
        if block:
            lines += [*block, ""]
    return "\n".join(lines).rstrip() + "\n"


def _wins_or_nothing(levels: Mapping, baselines: Mapping, model_name: str) -> list[str]:
    # Without the model's own level metrics there is nothing to compare, and "no wins" would be a false claim.
    if not levels:
        return []
    return baseline_wins_section(baseline_wins(levels, baselines), model_name, list(baselines))


def _join(blocks: Iterable[list[str]]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        out += [*block, ""]
    return out[:-1]


def _figures_section(figures: Mapping[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    for caption, path in figures.items():
        lines += [f"![{caption}]({Path(path).as_posix()})", ""]
    return lines[:-1]


def write_markdown(results: Mapping[str, Any], path: Path) -> Path:
    """Render `results` and write it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(results), encoding="utf-8")
    log.info("wrote %s", path)
    return path


# ---- JSON -----------------------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars and arrays, paths, tuples and sets; NaN and infinity become None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return value.as_posix()
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to the results JSON: {value!r}")


def write_json(results: Mapping[str, Any], path: Path) -> Path:
    """Write `results` as strict JSON (no NaN), indented, keys in the given order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path
