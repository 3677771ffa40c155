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


def _second_heads(path: Path, packet_dim: int, seed: int) -> Path:
    """Untrained heads of another seed, standing in for the alignment with CLIP's targets `all` trains."""
    import torch

    from packetclip_training.align.train import save_heads
    from packetclip_training.models.heads import AlignmentHeads

    torch.manual_seed(seed)
    save_heads(path, AlignmentHeads(packet_dim, 384, "both"), {"config": {"class_weight": 0.0}})
    return path


def test_a_mission_space_carries_the_second_heads_and_the_bank_placed_by_them(tmp_path: Path) -> None:
    from packetclip.bundle import load_mission_space
    from packetclip_training.align.train import load_heads

    work = tmp_path / "work"
    export_tiny_bundles(work)  # the tiny checkpoints, and a bundle without a mission space
    assert load_mission_space(load_bundle(work / "bundle-default")) is None
    embed_dim = PacketEncoder(load_config("tiny")).config.embed_dim
    second = _second_heads(tmp_path / "missions-align.pt", embed_dim, seed=7)
    spaced = export_tiny_bundles(work, ("2026.12.01-1",), mission_align_path=second)[0]
    loaded = load_bundle(spaced)
    space = load_mission_space(loaded)
    assert space is not None
    heads, _ = load_heads(second)
    assert np.array_equal(space.packet_weight, heads.packet_head.weight.detach().numpy())
    assert np.array_equal(space.text_bias, heads.text_head.bias.detach().numpy())
    assert space.logit_scale == pytest.approx(float(heads.logit_scale().detach()))
    # written independently: each class's bank texts through the second g_T, averaged, normalised
    texts, fine, _ = load_descriptions(loaded)
    placed = hashed_text_vectors(texts) @ space.text_weight.T + space.text_bias
    placed /= np.linalg.norm(placed, axis=1, keepdims=True)
    for index, name in enumerate(loaded.fine_classes):
        mean = placed[np.asarray(fine) == name].mean(axis=0)
        assert np.abs(space.prototypes[index] - mean / np.linalg.norm(mean)).max() < 1e-4
    assert loaded.manifest["training"]["mission_alignment"]["config"]["class_weight"] == 0.0


def test_a_mission_space_for_another_encoder_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    export_tiny_bundles(work)
    embed_dim = PacketEncoder(load_config("tiny")).config.embed_dim
    other = _second_heads(tmp_path / "other.pt", embed_dim + 8, seed=1)
    with pytest.raises(ValueError, match="not the same encoders"):
        export_tiny_bundles(work, ("2026.12.01-2",), mission_align_path=other)
    assert not (work / "bundle-2026.12.01-2").exists()
