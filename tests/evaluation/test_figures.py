"""Every evaluation figure writes a real PNG and leaves no figure open; projections are seeded and bounded."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from packetclip.classes import FINE_CLASSES
from packetclip_training.evaluation import figures
from packetclip_training.evaluation.metrics import level_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes): an empty canvas?"


@pytest.fixture(autouse=True)
def no_figure_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a figure was left open"


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    truth = rng.choice(FINE_CLASSES[:-1], size=400)  # dictionary_attack absent: its AUC is undefined
    scores = rng.dirichlet(np.ones(len(FINE_CLASSES)), size=len(truth))
    scores[np.arange(len(truth)), [FINE_CLASSES.index(t) for t in truth]] += rng.random(len(truth))
    return truth, scores / scores.sum(axis=1, keepdims=True)


def test_roc_curves_png(tmp_path, scored):
    truth, scores = scored
    _assert_png(
        figures.plot_roc_curves(truth, scores, FINE_CLASSES, tmp_path / "roc.png", title="ROC (fine)")
    )
    log_path = tmp_path / "roc_log.png"
    _assert_png(figures.plot_roc_curves(truth, scores, FINE_CLASSES, log_path, title="ROC", log_fpr=True))


def test_confusion_matrix_png_with_an_empty_row(tmp_path, scored):
    truth, scores = scored
    counts = level_metrics(truth, scores, FINE_CLASSES)["confusion_matrix"]["counts"]
    assert sum(counts[-1]) == 0  # the absent class's row must not divide by zero
    path = figures.plot_confusion_matrix(counts, FINE_CLASSES, tmp_path / "confusion.png", title="Confusion")
    _assert_png(path)


def test_data_scarcity_png_skips_missing_points(tmp_path):
    curves = {
        "PacketCLIP reasoner": {100: 0.99, 70: 0.985, 50: 0.98, 40: 0.978, 30: 0.975, 10: 0.96},
        "flow LightGBM": {"100": 0.98, "70": 0.975, "50": None, "40": 0.96, "30": 0.95, "10": 0.9},
        "flow XGBoost": {},
    }
    _assert_png(figures.plot_data_scarcity(curves, tmp_path / "scarcity.png"))


def test_training_curve_png_with_a_twin_axis_and_a_gap(tmp_path):
    path = figures.plot_training_curve(
        [2.1, 1.4, 1.0, 0.8],
        tmp_path / "curve.png",
        title="Reasoner",
        second=[0.7, None, 0.9, 0.93],
        second_label="val mAUC",
    )
    _assert_png(path)
    _assert_png(figures.plot_training_curve([2.1, 1.4], tmp_path / "loss_only.png", title="Encoder"))
    with pytest.raises(ValueError, match="epochs"):
        figures.plot_training_curve([1.0, 0.5], tmp_path / "bad.png", title="x", second=[0.1])


def test_embedding_plot_pca_png(tmp_path, scored):
    truth, _ = scored
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(len(truth), 16))
    embeddings[5, 0] = np.nan  # counted and skipped, not a crash
    path = figures.plot_embeddings(embeddings, truth, tmp_path / "pca.png", classes=FINE_CLASSES)
    _assert_png(path)


def test_projection_is_seeded_and_bounded():
    embeddings = np.random.default_rng(4).normal(size=(500, 8))
    first, chosen = figures.project_embeddings(embeddings, method="tsne", seed=3, max_points=60)
    again, chosen_again = figures.project_embeddings(embeddings, method="tsne", seed=3, max_points=60)
    assert first.shape == (60, 2) and np.array_equal(chosen, chosen_again)
    assert np.allclose(first, again)
    pca, _ = figures.project_embeddings(embeddings, method="pca")
    assert pca.shape == (500, 2)
    with pytest.raises(ValueError, match="umap"):
        figures.project_embeddings(embeddings, method="umap")


def test_embedding_plot_tsne_png(tmp_path):
    rng = np.random.default_rng(7)
    labels = np.repeat(["benign", "syn_flood", "port_scan"], 30)
    embeddings = rng.normal(size=(90, 8)) + np.repeat(np.eye(8)[:3] * 4, 30, axis=0)
    _assert_png(
        figures.plot_embeddings(embeddings, labels, tmp_path / "tsne.png", method="tsne", max_points=60)
    )
