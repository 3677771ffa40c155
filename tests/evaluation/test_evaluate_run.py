"""The evaluation run end to end on the committed dataset sample with tiny models: every part produces its
section, the report states what was measured, the comparison models share rows, and the efficiency part times the
exported bundle against ET-BERT's architecture (a tiny one here; the report always uses the full one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
from packetclip.missions import load_missions
from packetclip_training.align.train import save_heads
from packetclip_training.evaluation.cli import write_report
from packetclip_training.evaluation.run import EvaluateConfig, Inputs, efficiency, run_evaluation
from packetclip_training.export.export import export_bundle
from packetclip_training.models.encoder import PacketEncoder, load_config, save_checkpoint
from packetclip_training.models.etbert import EtBertConfig
from packetclip_training.models.heads import AlignmentHeads
from packetclip_training.reasoner.data import embed_split, reasoner_training_split
from packetclip_training.reasoner.fit import concept_embeddings, fit_reasoner
from packetclip_training.reasoner.model import TrainConfig, save_reasoner
from tests.support import hashed_text_vectors

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"

PARTS = ["zeroshot", "comparisons", "loso", "scarcity", "unseen", "embeddings"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("evaluate")
    encoder = PacketEncoder(load_config("tiny")).eval()
    splits = {split: embed_split(encoder, SAMPLE, split) for split in ("train", "val", "test")}
    heads = AlignmentHeads(encoder.config.embed_dim, 384, "both")
    missions = load_missions()

    def concepts(h: AlignmentHeads) -> np.ndarray:
        return concept_embeddings(missions, h, hashed_text_vectors)

    settings = TrainConfig(epochs=1, min_per_class=20, max_per_class=60)
    # with the training split's originator-only view, as the reasoner command trains by default
    reasoner_train = reasoner_training_split(encoder, work / "unused", SAMPLE, splits["train"], None, True)
    fit = fit_reasoner(reasoner_train, splits["val"], heads, missions, concepts(heads), settings)
    inputs = Inputs(
        SAMPLE,
        encoder,
        heads,
        fit.model,
        missions,
        splits,
        reasoner_train,
        hashed_text_vectors,
        concepts,
        work / "w",
    )
    config = EvaluateConfig(
        fractions=(1.0, 0.3),
        unseen=("os_scan",),
        reasoner=settings,
        comparison_models=("xgboost", "linear"),
        flow_models=("xgboost",),
        align_per_class=60,
    )
    results = run_evaluation(inputs, config, PARTS)
    save_checkpoint(work / "encoder.pt", encoder, {"objective": "none (test)"})
    save_heads(work / "align.pt", heads, {})
    save_reasoner(work / "reasoner.pt", fit.model, missions, {})
    bundle = export_bundle(
        SAMPLE,
        work / "encoder.pt",
        work / "align.pt",
        work / "reasoner.pt",
        work / "bundle",
        encode_texts=hashed_text_vectors,
    )
    tiny_bert = EtBertConfig(vocab_size=300, hidden=32, layers=1, heads=2, ffn=64)
    detail = efficiency(inputs, bundle, round_seconds=0.2, rounds=2, connections=64, etbert_config=tiny_bert)
    results["efficiency"] = detail["rows"]
    write_report(results, work / "reports", ["test run"], fit.curve)
    return results, work / "reports", len(splits["test"])


def test_every_part_has_its_section(run) -> None:
    results, _, test_rows = run
    assert results["levels"]["coarse"]["rows"] == test_rows
    assert results["levels"]["coarse"]["classes"] == list(COARSE_CLASSES)
    assert results["levels"]["fine"]["classes"] == list(FINE_CLASSES)
    assert set(results["baselines"]) == {"flow xgboost", "embedding xgboost", "embedding linear"}
    assert set(results["data_scarcity"]["curves"]) == {"PacketCLIP reasoner", "flow xgboost"}
    assert set(results["data_scarcity"]["curves"]["PacketCLIP reasoner"]) == {"100", "30"}
    assert [u["class"] for u in results["unseen_classes"]] == ["os_scan"]
    assert results["unseen_reasoner"][0]["connections"] == results["test_per_class"]["os_scan"]
    assert results["zero_shot"]["attack_classes"]["count"] == test_rows - results["test_per_class"]["benign"]
    assert results["heldout_overall"]["rows"] > 0 and results["heldout_variants"]
    assert results["heldout_overall"]["rows"] + results["seen_overall"]["rows"] == test_rows
    # the sample's validation split holds real benign files: an operating point is chosen; lab benign connections
    # are either during an attack episode or outside every one
    point = results["operating_point"]
    groups = point["test"]
    # the threshold weighs every calibration file the same: their mean false-alarm rate stays within the budget
    assert point["weighting"] == "each file weighs the same"
    assert 0 < point["calibration_files"] <= point["calibration_connections"]
    assert point["calibration_false_alarms_file_macro"] <= point["budget"]
    assert all("false_alarms_file_macro" in group for group in groups.values())
    assert (
        groups["lab_during_attacks"]["benign_connections"]
        + groups["lab_outside_attacks"]["benign_connections"]
        == groups["lab"]["benign_connections"]
    )
    assert results["per_file"]  # the sample holds real captures in its test split
    assert results["real_traffic"]["families"] and "" not in results["real_traffic"]["families"]
    assert len(results["_embedding_sample"]["labels"]) == len(results["_embedding_sample"]["embeddings"])


def test_each_real_family_is_left_out_and_judged_on_its_own_connections(run) -> None:
    from packetclip_training.evaluation.run import PACKETCLIP, PACKETCLIP_AT_POINT

    results, reports, _ = run
    runs = results["leave_one_family_out"]
    families = [r["family"] for r in runs]
    assert families and len(set(families)) == len(families)
    for entry in runs:
        packetclip = entry["models"][PACKETCLIP]
        assert set(entry["models"]) >= {PACKETCLIP, "flow xgboost"}
        assert packetclip["connections"] >= 1 and packetclip["files"] == entry["files"]
        # every model of a run is judged on the same connections of the left-out family
        assert {m["connections"] for m in entry["models"].values()} == {packetclip["connections"]}
        assert entry["unseen_real_connections"] >= packetclip["connections"]
        if entry["attack_threshold"] is not None:
            assert PACKETCLIP_AT_POINT in entry["models"] and entry["calibration_benign"] > 0
        benign_family = entry["family"].endswith("-benign")
        assert (packetclip["false_alarm"] is not None) == benign_family
        # a family with training files lost them: the training rows left out are that family's
        assert entry["train_rows_left_out"] >= 0
        at_point = entry["models"].get(PACKETCLIP_AT_POINT)
        if at_point is not None:  # where its false alarms come from: the files raising the most, most first
            listed = at_point["false_alarm_files"]
            assert [row["raised"] for row in listed] == sorted(
                (row["raised"] for row in listed), reverse=True
            )
            assert all(0 < row["raised"] <= row["benign"] and "benign" not in row["as"] for row in listed)
            assert bool(listed) == bool(at_point["false_alarm"])
    text = (reports / "README.md").read_text()
    assert "## Leave one source family out (real captures)" in text
    for family in families:
        assert f"| {family} | {PACKETCLIP}" in text
    for entry in runs:
        for row in entry["models"].get(PACKETCLIP_AT_POINT, {}).get("false_alarm_files", []):
            assert f"`{Path(row['file']).name}` {row['raised']} of {row['benign']}" in text


def test_efficiency_rows_compare_with_the_reference(run) -> None:
    rows = {row["name"]: row for row in run[0]["efficiency"]}
    assert rows["ET-BERT"]["ratio"] == 1.0
    packetclip = rows["PacketCLIP (encoder + reasoner)"]
    assert packetclip["connections_per_second"] > 0 and packetclip["flops_per_connection"] > 0


def test_report_files_state_the_measured_numbers(run) -> None:
    results, reports, _ = run
    text = (reports / "README.md").read_text()
    headline = json.loads((reports / "headline.json").read_text())
    assert headline["4-class mAUC (coarse)"] == pytest.approx(results["levels"]["coarse"]["mauc"])
    assert f"{results['levels']['coarse']['mauc']:.3f}" in text
    for figure in ("roc_coarse.png", "confusion_fine.png", "data_scarcity.png", "embeddings.png"):
        assert (reports / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert figure in text
    assert "Zero-shot classification" in text and "Unseen classes" in text
    public = json.loads((reports / "results.json").read_text())
    assert not any(key.startswith("_") for key in public)


class _Rows:
    """The columns `during_attacks` reads, as a split holds them."""

    def __init__(self, source: list[str], episode: list[str], ts: list[float]):
        self.columns = {"source": np.array(source), "episode": np.array(episode), "ts": np.array(ts)}

    def __len__(self) -> int:
        return len(self.columns["ts"])


def test_during_attacks_uses_every_splits_episodes_of_the_same_run_only() -> None:
    from packetclip_training.evaluation.run import during_attacks

    train = _Rows(["a", "a", "a", "b"], ["e1", "e1", "e1", "e9"], [10.0, 12.0, 20.0, 100.0])
    test = _Rows(
        ["a", "a", "a", "a", "a", "b", "b", "a"],
        ["", "", "", "", "e2", "", "", ""],
        [9.0, 10.0, 15.0, 20.5, 30.0, 15.0, 100.0, 30.0],
    )
    # a: e1 spans 10..20 (train), e2 is the single start 30 (test); b: e9 at 100; an overlap keeps its reach
    assert during_attacks([train, test], test).tolist() == [False, True, True, False, True, False, True, True]
    overlapping = _Rows(["c", "c", "c", "c"], ["x", "x", "y", "y"], [0.0, 50.0, 10.0, 20.0])
    probe = _Rows(["c", "c", "c"], ["", "", ""], [40.0, 50.0, 51.0])
    assert during_attacks([overlapping], probe).tolist() == [True, True, False]


def test_false_alarm_files_count_the_benign_connections_raised_per_file() -> None:
    from packetclip_training.evaluation.run import false_alarm_files

    truth = np.array(["benign", "benign", "benign", "dos", "benign", "benign"], dtype=object)
    predicted = np.array(["recon", "benign", "dos", "dos", "recon", "recon"], dtype=object)
    files = np.array(["b.pcap", "b.pcap", "a.pcap", "a.pcap", "a.pcap", "c.pcap"], dtype=object)
    assert false_alarm_files(truth, predicted, files) == [
        {
            "file": "a.pcap",
            "raised": 2,
            "benign": 2,
            "as": {"dos": 1, "recon": 1},
        },  # the dos row is not benign
        {"file": "b.pcap", "raised": 1, "benign": 2, "as": {"recon": 1}},
        {"file": "c.pcap", "raised": 1, "benign": 1, "as": {"recon": 1}},
    ]
    assert false_alarm_files(truth, predicted, files, most=1)[0]["file"] == "a.pcap"
    assert false_alarm_files(truth, truth, files) == []
