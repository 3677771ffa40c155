"""PNG figures of an evaluation: ROC curves, confusion matrix, data-scarcity curve, embedding map, training curve.

Owns how each figure looks. Does not compute scores or decide what goes in the report: callers pass arrays and
metric dicts (`evaluation.metrics`) and get back the path written.

Figures are built as `matplotlib.figure.Figure` objects drawn by the Agg canvas, never through pyplot's global
figure registry: nothing opens a window, and a figure cannot leak into pyplot's open-figure list even when saving
fails. Every figure has a title, labelled axes and a legend.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import roc_curve

from packetclip_training.evaluation.metrics import clean_rows, per_class_auc

log = logging.getLogger(__name__)

DPI = 110
# The training-data fractions of the data-scarcity study, in percent (issue 3).
SCARCITY_PERCENTS = (100, 70, 50, 40, 30, 10)
SCARCITY_TARGET = 0.97
# t-SNE is quadratic-ish in memory and minutes on one core beyond a few thousand points.
TSNE_MAX_POINTS = 3000
PCA_MAX_POINTS = 20000


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    # "tight" grows the canvas to legends placed outside the axes instead of clipping them.
    figure.savefig(path, dpi=DPI, format="png", bbox_inches="tight")
    log.info("wrote %s", path)
    return path


def _class_colours(count: int) -> list:
    # tab10 then Dark2: up to 18 colours no two of which are shades of one hue (tab20 pairs light and dark blue).
    palette = [colormaps["tab10"](i) for i in range(10)] + [colormaps["Dark2"](i) for i in range(8)]
    return [palette[i % len(palette)] for i in range(count)]


def plot_roc_curves(
    truth: Sequence | np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    path: Path,
    *,
    title: str,
    log_fpr: bool = False,
) -> Path:
    """One-vs-rest ROC curve per class, its AUC and positive count in the legend; classes without AUC are named.

    `log_fpr` puts the false-positive rate on a log axis: above AUC 0.99 every curve hugs the corner on a linear
    one, and the low-FPR region is where a sensor operates.
    """
    names, scores, _ = clean_rows(truth, probabilities, classes)
    aucs = per_class_auc(names, scores, classes)
    figure = Figure(figsize=(6.5, 5.5))
    axis = figure.add_subplot()
    chance = np.concatenate([[0.0], np.logspace(-6, 0, 200)])  # dense, so it stays the diagonal on a log axis
    axis.plot(chance, chance, linestyle=":", color="grey", label="chance (AUC 0.5)")
    for colour, name in zip(_class_colours(len(classes)), classes, strict=True):
        row = aucs[name]
        if row["auc"] is None:
            axis.plot(
                [], [], color=colour, linestyle="none", label=f"{name}: no AUC ({row['undefined_because']})"
            )
            continue
        fpr, tpr, _ = roc_curve(names == name, scores[:, list(classes).index(name)])
        axis.plot(fpr, tpr, color=colour, label=f"{name}: AUC {row['auc']:.3f} (n={row['positives']:,})")
    axis.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", ylabel="true-positive rate", title=title
    )
    if log_fpr:
        # One false positive among all rows is the smallest rate a curve can show.
        axis.set_xscale("log")
        axis.set_xlim(1 / max(len(names), 2), 1)
        axis.set_xlabel("false-positive rate (log)")
    axis.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_confusion_matrix(
    counts: Sequence[Sequence[int]], classes: Sequence[str], path: Path, *, title: str
) -> Path:
    """Heatmap of a confusion matrix (rows = truth): colour is the row share, the cell text is the count."""
    matrix = np.asarray(counts, dtype=np.int64).reshape(len(classes), len(classes))
    row_totals = matrix.sum(axis=1, keepdims=True)
    # A class absent from truth has an all-zero row: show it as 0 % rather than dividing by zero.
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    size = 2.5 + 0.55 * len(classes)
    figure = Figure(figsize=(size + 1.5, size))
    axis = figure.add_subplot()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    colourbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    colourbar.set_label("share of the true class's rows")
    ticks = np.arange(len(classes))
    axis.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
    axis.set_yticks(ticks, labels=list(classes))
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axis.text(column, row, f"{count:,}", ha="center", va="center", fontsize="x-small", color=colour)
    axis.set(xlabel="predicted class", ylabel="true class", title=title)
    # A heatmap has no lines to name; the legend says how to read cells.
    axis.plot([], [], "s", color=colourbar.cmap(0.8), label="cell: count; colour: row share")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize="small", frameon=False)
    return _save(figure, path)


def plot_data_scarcity(
    curves: Mapping[str, Mapping],
    path: Path,
    *,
    target: float = SCARCITY_TARGET,
    metric: str = "mAUC",
    title: str = "mAUC against training data",
) -> Path:
    """One line per method: `metric` against the percent of training data used; dashed line at the target.

    `curves` maps method → {percent: value}; percents may be ints, floats or strings (JSON keys), a None value
    (a run that did not finish) is left out of its line.
    """
    figure = Figure(figsize=(6.5, 4.5))
    axis = figure.add_subplot()
    for method, points in curves.items():
        pairs = sorted((float(p), float(v)) for p, v in points.items() if v is not None)
        if not pairs:
            log.warning("data-scarcity curve of %s has no values; left out", method)
            continue
        xs, ys = zip(*pairs, strict=True)
        axis.plot(xs, ys, marker="o", label=method)
    axis.axhline(target, linestyle="--", color="black", linewidth=1, label=f"target {target:.2f}")
    axis.set_xticks(list(SCARCITY_PERCENTS))
    axis.set(xlabel="training data used (%)", ylabel=metric, title=title)
    axis.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def project_embeddings(
    embeddings: np.ndarray, *, method: str = "pca", seed: int = 0, max_points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """2-D projection of at most `max_points` rows (seeded random choice): (points (M, 2), chosen row indices)."""
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown projection {method!r}; use 'pca' or 'tsne'")
    embeddings = np.asarray(embeddings, dtype=np.float64)
    limit = max_points or (TSNE_MAX_POINTS if method == "tsne" else PCA_MAX_POINTS)
    finite = np.flatnonzero(np.isfinite(embeddings).all(axis=1))
    if len(finite) < len(embeddings):
        log.warning("embedding plot: skipping %d rows with non-finite values", len(embeddings) - len(finite))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(finite, size=limit, replace=False)) if len(finite) > limit else finite
    rows = embeddings[chosen]
    if len(rows) < 3:
        raise ValueError(f"an embedding plot needs at least 3 finite rows; got {len(rows)}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(rows), chosen
    # Perplexity must stay below the point count; 30 is scikit-learn's default for larger sets.
    perplexity = min(30.0, (len(rows) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(rows), chosen


def plot_embeddings(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    path: Path,
    *,
    method: str = "pca",
    seed: int = 0,
    max_points: int | None = None,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Scatter of a seeded 2-D projection (PCA, or t-SNE on ≤ `TSNE_MAX_POINTS` rows) coloured by class."""
    labels = np.asarray(labels).astype(str)
    points, chosen = project_embeddings(embeddings, method=method, seed=seed, max_points=max_points)
    shown = labels[chosen]
    order = list(classes) if classes is not None else sorted(set(shown.tolist()))
    figure = Figure(figsize=(7.5, 5.5))
    axis = figure.add_subplot()
    for colour, name in zip(_class_colours(len(order)), order, strict=True):
        here = shown == name
        if here.any():
            axis.scatter(
                points[here, 0],
                points[here, 1],
                s=6,
                alpha=0.6,
                color=colour,
                label=f"{name} ({int(here.sum()):,})",
            )
    axis_names = ("PC 1", "PC 2") if method == "pca" else ("t-SNE 1", "t-SNE 2")
    method_name = "PCA" if method == "pca" else "t-SNE"
    default_title = f"Connection embeddings ({method_name}, {len(chosen):,} of {len(labels):,} rows)"
    axis.set(xlabel=axis_names[0], ylabel=axis_names[1], title=title or default_title)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", markerscale=2)
    return _save(figure, path)


def plot_training_curve(
    losses: Sequence[float],
    path: Path,
    *,
    title: str,
    loss_label: str = "train loss",
    second: Sequence[float | None] | None = None,
    second_label: str = "validation metric",
    epochs: Sequence[int] | None = None,
) -> Path:
    """Loss per epoch on the left axis; an optional second series (e.g. validation mAUC) on a right twin axis."""
    epochs = list(epochs) if epochs is not None else list(range(1, len(losses) + 1))
    if len(epochs) != len(losses):
        raise ValueError(f"{len(epochs)} epochs for {len(losses)} losses")
    figure = Figure(figsize=(6.5, 4.2))
    loss_axis = figure.add_subplot()
    lines = loss_axis.plot(epochs, list(losses), marker=".", color="tab:blue", label=loss_label)
    loss_axis.set(xlabel="epoch", ylabel=loss_label, title=title)
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_axis = loss_axis
    if second is not None:
        if len(second) != len(epochs):
            raise ValueError(f"{len(second)} values of {second_label} for {len(epochs)} epochs")
        values = [np.nan if v is None else float(v) for v in second]  # a skipped evaluation leaves a gap
        metric_axis = loss_axis.twinx()
        lines += metric_axis.plot(epochs, values, marker=".", color="tab:orange", label=second_label)
        metric_axis.set_ylabel(second_label)
        legend_axis = (
            metric_axis  # the twin is drawn on top: a legend on the loss axis would sit under its line
        )
    # Below the axes: "best" on a twin axis only avoids the twin's own line, so it would cover the loss curve.
    labels = [str(line.get_label()) for line in lines]
    legend_axis.legend(
        lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small"
    )
    return _save(figure, path)
