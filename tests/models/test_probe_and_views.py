"""The probe's scores are computed correctly, and the second pretraining view is a real subset of the first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packetclip_training.dataset.store import load_split
from packetclip_training.models.encoder import PacketEncoder, load_config
from packetclip_training.models.probe import classification_scores, probe_dataset, stratified_halves
from packetclip_training.pretrain.pretrain import PretrainConfig, connection_contrast, second_view


def test_classification_scores_by_hand():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    scores = classification_scores(truth, predicted)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # F1: class 0 p=2/3 r=2/3; class 1 p=2/3 r=1 → 0.8; class 2: 0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_stratified_halves_split_every_class():
    labels = np.array(["a"] * 10 + ["b"] * 4 + ["c"] * 5)
    first, second = stratified_halves(labels, seed=0)
    assert not set(first) & set(second) and len(first) + len(second) == len(labels)
    for name in "abc":
        assert (labels[first] == name).sum() >= 2 and (labels[second] == name).sum() >= 2


def test_probe_on_lab_sample_separates_classes(lab_packets):
    """Even a random encoder's connection embeddings carry class information; the probe must see it."""
    torch.manual_seed(0)
    result = probe_dataset(PacketEncoder(load_config("tiny")).eval(), lab_packets, repeats=2)
    assert result["left_out_rare_classes"] == {"icmp_flood": 1}
    assert len(result["classes"]) >= 8
    chance = 1 / len(result["classes"])
    assert result["pretrained"]["balanced_accuracy"] > 3 * chance
    assert set(result["random_init"]) == set(result["pretrained"])


def test_second_view_keeps_a_nonempty_subset_of_valid_packets(real_packets):
    arrays = load_split(real_packets, "train", columns=())
    batch = {name: torch.from_numpy(np.array(arrays[name][:500])) for name in arrays}
    keep, iat = second_view(batch, PretrainConfig(), torch.Generator().manual_seed(0))
    assert not (keep & ~batch["valid"]).any()
    assert keep.any(dim=1).all()
    assert keep.sum() < batch["valid"].sum()
    assert torch.all((iat == 0) == (batch["iat"] == 0))  # jitter scales gaps; it never invents one


def test_contrast_is_low_for_matching_views_and_high_for_shuffled_ones():
    torch.manual_seed(0)
    views = torch.randn(16, 32)
    identity = torch.nn.Identity()
    matched = connection_contrast(identity, views, views + 0.01 * torch.randn(16, 32), 0.1)
    shuffled = connection_contrast(identity, views, views[torch.randperm(16)], 0.1)
    assert matched < 0.05 < shuffled
