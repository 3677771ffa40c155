"""The markdown report holds every table it is given, computes where a baseline beats the model (and only
there), formats numbers one way, skips missing sections, and writes strict JSON from numpy values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packetclip_training.baselines.scoring import level_report
from packetclip_training.evaluation.metrics import (
    grouped_metrics,
    level_metrics,
    subset_metrics,
    unseen_class_metrics,
)
from packetclip_training.evaluation.report import (
    baseline_wins,
    format_count,
    format_score,
    render_markdown,
    to_jsonable,
    write_json,
    write_markdown,
)

CLASSES = ["benign", "dos", "recon"]


def _scores(truth: list[str], correct_share: dict[str, float]) -> np.ndarray:
    """Scores where the first `correct_share` of each ten positives of a class outrank every negative on its column
    and the rest score below every negative: share 1.0 gives AUC 1, less gives AUC below 1."""
    rows = []
    for i, name in enumerate(truth):
        row = np.full(len(CLASSES), 0.1)
        wrong = (i % 10) / 10 >= correct_share[name]
        row[CLASSES.index(name)] = 0.0 if wrong else 0.8
        rows.append(row)
    return np.array(rows)


@pytest.fixture(scope="module")
def constructed() -> dict:
    """A model better on dos, a baseline better on recon, both perfect on benign (a tie is not a win)."""
    truth = ["benign"] * 20 + ["dos"] * 20 + ["recon"] * 20
    model = _scores(truth, {"benign": 1.0, "dos": 1.0, "recon": 0.7})
    baseline = _scores(truth, {"benign": 1.0, "dos": 0.8, "recon": 1.0})
    heldout = np.array([i % 4 == 0 for i in range(len(truth))])
    model_levels = {"coarse": level_metrics(truth, model, CLASSES)}
    # The baseline's numbers come from the flow baselines' own report function, as in a real run.
    baseline_levels = {"coarse": level_report(np.array(truth, dtype=object), baseline, CLASSES, heldout)}
    return {"truth": truth, "model": model, "model_levels": model_levels, "baseline_levels": baseline_levels}


def test_baseline_wins_lists_exactly_the_classes_and_metrics_where_the_baseline_is_higher(constructed):
    model, baseline = constructed["model_levels"]["coarse"], constructed["baseline_levels"]["coarse"]
    assert baseline["auc"]["recon"] > model["auc"]["recon"]
    assert baseline["auc"]["dos"] < model["auc"]["dos"]
    assert baseline["auc"]["benign"] == model["auc"]["benign"]
    wins = baseline_wins(constructed["model_levels"], {"flow LightGBM": constructed["baseline_levels"]})
    # The baseline misses no recon row and the model misses 6 of 20: it is ahead on every level-wide number too.
    assert [win["item"] for win in wins] == [
        "mAUC",
        "mAUC without benign",
        "macro-F1",
        "accuracy",
        "recon AUC",
    ]
    recon = wins[-1]
    assert (recon["model_value"], recon["baseline_value"], recon["count"]) == (0.7, 1.0, 20)
    assert recon["counted"] == "positives" and recon["level"] == "coarse"


def test_markdown_says_where_the_baseline_wins_and_not_where_it_loses(constructed):
    results = {
        "levels": constructed["model_levels"],
        "baselines": {"flow LightGBM": constructed["baseline_levels"]},
    }
    markdown = render_markdown(results)
    section = markdown.split("## Where the flow baseline wins", 1)[1]
    recon_model = format_score(constructed["model_levels"]["coarse"]["auc"]["recon"])
    recon_baseline = format_score(constructed["baseline_levels"]["coarse"]["auc"]["recon"])
    assert (
        f"- coarse / recon AUC: flow LightGBM {recon_baseline} vs PacketCLIP reasoner {recon_model}"
        in section
    )
    assert "(+0.3000; 20 positives)" in section
    assert "/ dos AUC" not in section and "/ benign AUC" not in section


def test_markdown_says_so_when_no_baseline_wins(constructed):
    model_levels = constructed["model_levels"]
    markdown = render_markdown({"levels": model_levels, "baselines": {"flow XGBoost": model_levels}})
    assert "No per-class AUC or level-wide metric where flow XGBoost scores higher" in markdown


def test_full_report_holds_every_table(constructed):
    truth = np.array(constructed["truth"], dtype=object)
    model = constructed["model"]
    files = np.array(["lab.pcap"] * 55 + ["real|odd.pcap"] * 5)
    results = {
        "title": "PacketCLIP evaluation",
        "notes": ["Lab test split, flow- and time-disjoint."],
        "headline": [
            {"metric": "4-class mAUC", "value": 0.9931, "target": 0.99, "rows": 12345},
            {"metric": "fine top-1", "value": 0.8512, "target": 0.90, "rows": 12345},
        ],
        "levels": constructed["model_levels"],
        "baselines": {"flow LightGBM": constructed["baseline_levels"]},
        "data_scarcity": {
            "target": 0.97,
            "metric": "4-class mAUC",
            "curves": {
                "PacketCLIP reasoner": {100: 0.99, 50: 0.96, 10: 0.975},
                "flow LightGBM": {"100": 0.96},
            },
        },
        "heldout_variants": {"syn flood, new tool": subset_metrics(truth, model, CLASSES, truth == "dos")},
        "per_file": grouped_metrics(truth, model, CLASSES, files),
        "unseen_classes": [unseen_class_metrics(truth, model[:, 2], "recon")],
        "efficiency": [
            {
                "name": "PacketCLIP",
                "parameters": 119425,
                "flops_per_packet": 1680000,
                "flops_per_connection": 50400000,
                "connections_per_second": 1234.5,
                "ratio": 312.4,
            },
            {
                "name": "ET-BERT architecture",
                "parameters": 132000000,
                "flops_per_packet": None,
                "flops_per_connection": 22000000000,
                "connections_per_second": 3.95,
                "ratio": 1.0,
            },
        ],
        "figures": {"ROC curves, coarse": "roc_coarse.png"},
    }
    markdown = render_markdown(results)
    for heading in (
        "# PacketCLIP evaluation",
        "## Headline",
        "## Coarse classes",
        "## Where the flow baseline wins",
        "## Data scarcity (4-class mAUC)",
        "## Held-out variants",
        "## Per file",
        "## Unseen classes",
        "## Efficiency",
        "## Figures",
    ):
        assert heading in markdown, heading
    assert "| 4-class mAUC | 0.993 | 0.990 | yes | 12,345 |" in markdown
    assert "| fine top-1 | 0.851 | 0.900 | **no** | 12,345 |" in markdown
    assert "| class | AUC | AUC flow LightGBM | positives | negatives |" in markdown
    assert "| true \\ predicted | benign | dos | recon | total |" in markdown
    assert "| benign | 20 | 0 | 0 | 20 |" in markdown  # a perfect row of the confusion matrix
    assert "| 50 % | 0.960 | — |" in markdown
    assert "- PacketCLIP reasoner: meets 0.970 at 100 %, 10 %; below it at 50 %." in markdown
    assert "- flow LightGBM: below 0.970 at every share measured." in markdown
    assert (
        "| real\\|odd.pcap | 5 |" in markdown and "numbers are noisy" in markdown
    )  # pipe escaped, thin flagged
    assert "only class 'dos' present; AUC undefined" in markdown
    assert "| recall @ FPR ≤ 1 % |" in markdown
    assert "| PacketCLIP | 119,425 | 1,680,000 | 50,400,000 | 1,234.5 | 312.4× |" in markdown
    assert "| ET-BERT architecture | 132,000,000 | — | 22,000,000,000 | 3.950 | 1.0× |" in markdown
    assert "![ROC curves, coarse](roc_coarse.png)" in markdown


def test_missing_sections_are_skipped():
    markdown = render_markdown(
        {
            "title": "Only a headline",
            "headline": [{"metric": "x", "value": None}],
            "levels": None,
            "per_file": None,
            "efficiency": [],
        }
    )
    assert "## Headline" in markdown and "| x | — | — | — | — |" in markdown
    assert "##" not in markdown.replace("## Headline", "")
    # Baselines without the model's levels cannot be compared: no "no wins" claim.
    assert "wins" not in render_markdown({"baselines": {"flow LightGBM": {"coarse": None}}})


def test_number_formats():
    assert (
        format_score(0.98765) == "0.988" and format_score(None) == "—" and format_score(float("nan")) == "—"
    )
    assert format_count(1234567) == "1,234,567" and format_count(None) == "—"


def test_write_json_converts_numpy_and_refuses_nan(tmp_path, constructed):
    results = {
        "levels": constructed["model_levels"],
        "array": np.arange(3, dtype=np.int64),
        "scalar": np.float32(0.5),
        "flag": np.bool_(True),
        "nan": np.float64("nan"),
        "nested": {1: (np.int32(2), {np.str_("k"): np.array([0.25])})},
    }
    path = write_json(results, tmp_path / "reports" / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["array"] == [0, 1, 2] and loaded["scalar"] == 0.5 and loaded["flag"] is True
    assert loaded["nan"] is None and loaded["nested"] == {"1": [2, {"k": [0.25]}]}
    assert loaded["levels"]["coarse"]["auc"] == constructed["model_levels"]["coarse"]["auc"]
    with pytest.raises(TypeError, match="object"):
        to_jsonable({"x": object()})


def test_write_markdown_creates_the_reports_folder(tmp_path, constructed):
    path = write_markdown({"levels": constructed["model_levels"]}, tmp_path / "reports" / "README.md")
    assert path.read_text().startswith("# Evaluation\n") and "## Coarse classes" in path.read_text()
