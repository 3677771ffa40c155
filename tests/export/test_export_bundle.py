"""`packetclip-train export`: checkpoints trained on the committed dataset sample → a bundle the runtime verifies,
whose fixtures are real test connections and whose contents match what was trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from packetclip.bundle import check_fixtures, load_bundle, load_concepts, load_descriptions
from packetclip.classes import FINE_CLASSES
from packetclip.context import CONTEXT_FEATURES, RESPONDER_CONNECTIONS, RESPONDER_FEATURES, RESPONDER_WINDOW
from packetclip.missions import load_missions
from packetclip_training.export.export import data_card_summary, dataset_window, fixture_rows
from packetclip_training.models.encoder import PacketEncoder, load_config
from tests.support import export_tiny_bundles, hashed_text_vectors

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_bundles(tmp_path_factory.mktemp("export"))[0]


def test_the_runtime_loads_and_verifies_the_export(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    assert set(loaded.roles) == {"encoder", "reasoner"}
    differences = check_fixtures(loaded)
    assert max(differences.values()) < 1e-4
    manifest = loaded.manifest
    assert manifest["context"] == {
        "slots": 30,
        "features": list(CONTEXT_FEATURES),
        "responder_features": list(RESPONDER_FEATURES),
        "responder_window": RESPONDER_WINDOW,
        "responder_connections": RESPONDER_CONNECTIONS,
    }
    assert loaded.responder_features == RESPONDER_FEATURES
    assert manifest["metrics"] == {"coarse_mauc": 0.5}
    assert manifest["models"]["encoder"]["parameters"] == sum(
        p.numel() for p in PacketEncoder(load_config("tiny")).parameters()
    )
    assert manifest["data_card"]["counts"]["total"]["test"] == 302


def test_concepts_and_descriptions_cover_every_mission_and_class(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    concepts = load_concepts(loaded)
    missions = load_missions()
    assert len(concepts) == sum(len(m.concepts()) for m in missions)
    assert {c["mission"] for c in concepts} == {m.name for m in missions}
    texts, fine, embeddings = load_descriptions(loaded)
    assert set(fine) == set(FINE_CLASSES)
    assert len(texts) == len(embeddings) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-2)


def test_fixtures_are_real_test_connections_of_several_classes(bundle: Path) -> None:
    with np.load(bundle / "fixtures" / "encoder.npz") as fixture:
        valid = fixture["valid"]
    assert valid.shape[0] >= 2 and valid.any(axis=1).all()
    fine = np.asarray(["benign", "syn_flood", "benign", "port_scan"])
    rows = fixture_rows(fine, np.asarray([3, 1, 9, 0]))
    assert rows.tolist() == [1, 2]  # longest benign, the syn flood; the empty port scan is skipped


def test_data_card_summary_keeps_counts_not_inputs() -> None:
    summary = data_card_summary(SAMPLE)
    card = json.loads((SAMPLE / "card.json").read_text())
    assert summary["counts"]["fine"] == card["counts"]["fine"]
    assert "inputs" not in summary


def test_the_bundle_carries_the_window_its_dataset_was_cut_with(bundle: Path, tmp_path: Path) -> None:
    card = json.loads((SAMPLE / "card.json").read_text())
    window = card["featurizer"]["config"].get("window")
    assert load_bundle(bundle).featurizer.get("window") == window
    assert dataset_window(SAMPLE) == ({} if window is None else {"window": window})
    card["featurizer"]["config"]["window"] = 5
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert dataset_window(tmp_path) == {"window": 5.0}
    card["featurizer"]["config"]["window"] = None
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert dataset_window(tmp_path) == {}


def test_the_text_head_places_text_where_alignment_did(bundle: Path) -> None:
    from packetclip.bundle import load_text_head

    weight, bias, scale = load_text_head(load_bundle(bundle))
    texts, _, embeddings = load_descriptions(load_bundle(bundle))
    projected = hashed_text_vectors(texts[:5]) @ weight.T + bias
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    assert np.abs(projected - embeddings[:5]).max() < 2e-3  # float16 storage of the bank
    assert 1.0 <= scale <= 100.0
