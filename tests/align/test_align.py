"""Alignment heads, the symmetric InfoNCE loss, the temperature bounds, zero-shot scoring and the align run.

Fast tests use a hashing stand-in for the text encoder and a randomly initialised tiny packet encoder on the
committed sample dataset; the one test with the real MiniLM is marked slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from packetclip.classes import FINE_CLASSES
from packetclip_training.align.run import (
    CHECKPOINT_NAME,
    CURVE_NAME,
    METRICS_NAME,
    per_class_rows,
    run_alignment,
)
from packetclip_training.align.train import (
    AlignConfig,
    build_description_pool,
    load_heads,
    recorded_config,
    train_alignment,
)
from packetclip_training.align.zeroshot import coarse_predictions, evaluate, topk_accuracy
from packetclip_training.models.encoder import PacketEncoder, load_config
from packetclip_training.models.heads import (
    MAX_LOGIT_SCALE,
    MIN_LOGIT_SCALE,
    AlignmentHeads,
    SymmetricInfoNCE,
)
from tests.support import hashed_text_vectors

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


def test_loss_matches_hand_computed_value() -> None:
    """Two orthonormal pairs at scale s: each row's CE is log(1 + e^-s) in both directions."""
    eye = torch.eye(2)
    loss = SymmetricInfoNCE()(eye, eye, torch.tensor(1.0))
    assert float(loss) == pytest.approx(math.log(1.0 + math.exp(-1.0)), abs=1e-6)


def test_loss_is_symmetric_and_not_trivially_so() -> None:
    """Swapping the packet and text sides gives the same loss, for pairs whose one-way losses differ."""
    generator = torch.Generator().manual_seed(1)
    packets = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale = torch.tensor(5.0)
    loss = SymmetricInfoNCE()
    assert float(loss(packets, texts, scale)) == pytest.approx(float(loss(texts, packets, scale)), abs=1e-6)
    logits = scale * packets @ texts.T
    targets = torch.arange(6)
    one_way, other_way = F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)
    assert abs(float(one_way - other_way)) > 1e-3  # so symmetry is the averaging, not an accident of the data
    assert float(loss(packets, texts, scale)) == pytest.approx(float(0.5 * (one_way + other_way)), abs=1e-6)


def test_class_aware_target_spreads_over_the_pairs_of_a_class_by_hand() -> None:
    """Three orthonormal pairs, the first two of one class, weight w at scale 1: the rows of that class put
    1 − w/2 on their own pair and w/2 on the other; the lone pair keeps its one positive."""
    eye = torch.eye(3)
    labels = torch.tensor([4, 4, 7])
    w = 0.5
    one = math.log(math.e + 2.0)  # log of a row's softmax denominator at scale 1
    row = (1.0 - w / 2) * (one - 1.0) + (w / 2) * (one - 0.0)
    expected = (2 * row + (one - 1.0)) / 3
    loss = SymmetricInfoNCE()(eye, eye, torch.tensor(1.0), labels, w)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # weight 0, or no labels, is CLIP's loss
    plain = SymmetricInfoNCE()(eye, eye, torch.tensor(1.0))
    assert float(SymmetricInfoNCE()(eye, eye, torch.tensor(1.0), labels, 0.0)) == pytest.approx(float(plain))


def test_class_aware_alignment_needs_a_label_per_connection() -> None:
    vectors = np.eye(4, dtype=np.float32)
    choices = [np.asarray([i]) for i in range(4)]
    with pytest.raises(ValueError, match="one label per connection"):
        train_alignment(vectors, vectors, choices, AlignConfig(epochs=1, class_weight=1.0))
    _, curve = train_alignment(
        vectors,
        vectors,
        choices,
        AlignConfig(epochs=1, class_weight=1.0, batch_size=4),
        None,
        np.arange(4) % 2,
    )
    assert len(curve) == 1 and math.isfinite(curve[0]["loss"])


def test_temperature_is_learned_and_clamped() -> None:
    """Training moves the logit scale; pushed past the bounds it is clamped on use and in the parameter."""
    rng = np.random.default_rng(0)
    packets = rng.normal(size=(64, 16)).astype(np.float32)
    texts = rng.normal(size=(64, 32)).astype(np.float32)
    choices = [np.asarray([i]) for i in range(64)]
    start = AlignmentHeads(16, 32).logit_scale().item()
    heads, curve = train_alignment(
        packets, texts, choices, AlignConfig(epochs=5, batch_size=16, learning_rate=0.05, class_weight=0.0)
    )
    assert heads.logit_scale().item() != pytest.approx(start, abs=1e-3)
    assert curve[-1]["loss"] < curve[0]["loss"]
    with torch.no_grad():
        heads.log_logit_scale.fill_(10.0)
    assert heads.logit_scale().item() == pytest.approx(MAX_LOGIT_SCALE)
    heads.clamp_()
    assert heads.log_logit_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))
    with torch.no_grad():
        heads.log_logit_scale.fill_(-5.0)
    assert heads.logit_scale().item() == pytest.approx(MIN_LOGIT_SCALE)


@pytest.mark.parametrize(("setting", "shared"), [("none", 384), ("packet", 384), ("both", 64)])
def test_head_settings_train_what_they_say(setting: str, shared: int) -> None:
    """none: only the temperature is a parameter; packet: g_P only; both: g_P and g_T into the shared width."""
    heads = AlignmentHeads(128, 384, setting, shared_dim=64)
    names = {name for name, _ in heads.named_parameters()}
    expected = {
        "none": {"log_logit_scale"},
        "packet": {"log_logit_scale", "packet_head.weight", "packet_head.bias"},
        "both": {
            "log_logit_scale",
            "packet_head.weight",
            "packet_head.bias",
            "text_head.weight",
            "text_head.bias",
        },
    }[setting]
    assert names == expected
    assert heads.project_packets(torch.randn(3, 128)).shape == (3, shared)
    assert heads.project_texts(torch.randn(3, 384)).shape == (3, shared)


def test_no_heads_with_matching_widths_projects_nothing() -> None:
    heads = AlignmentHeads(32, 32, "none")
    x = torch.randn(4, 32)
    assert torch.allclose(heads.project_packets(x), F.normalize(x, dim=-1))


def test_topk_and_coarse_on_constructed_case() -> None:
    """Three rows over 11 classes with known ranks: top-1 1/3, top-2 2/3, top-5 2/3; coarse sums fine mass."""
    logits = np.zeros((3, 11))
    logits[0, 0] = 5  # row 0 (true 0): ranked first
    logits[1, [3, 1]] = [5, 4]  # row 1 (true 1): second
    logits[2, [4, 5, 6, 7, 8, 9]] = [9, 8, 7, 6, 5, 4]  # row 2 (true 2): 7th or later
    labels = np.asarray([0, 1, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == pytest.approx(2 / 3)
    # four dos classes slightly above one benign: summed, dos wins although benign is the top fine class
    dos = [FINE_CLASSES.index(c) for c in ("icmp_flood", "syn_flood", "udp_flood", "dns_flood")]
    row = np.full((1, 11), -10.0)
    row[0, FINE_CLASSES.index("benign")] = 1.0
    row[0, dos] = 0.5
    assert coarse_predictions(row).tolist() == [1]  # COARSE_CLASSES index of "dos"
    metrics = evaluate(logits, [FINE_CLASSES[i] for i in labels])
    assert metrics["top1"] == pytest.approx(1 / 3)
    assert metrics["per_class_top1"]["benign"]["top1"] == 1.0


def test_unknown_labels_are_counted_and_skipped() -> None:
    logits = np.zeros((2, 11))
    logits[0, 0] = 1
    metrics = evaluate(logits, ["benign", "not_a_class"])
    assert metrics["skipped_unknown_labels"] == 1 and metrics["count"] == 1 and metrics["top1"] == 1.0


def test_per_class_rows_caps_each_class() -> None:
    fine = np.asarray(["a"] * 10 + ["b"] * 3, object)
    rows = per_class_rows(fine, 4, seed=0)
    assert (fine[rows] == "a").sum() == 4 and (fine[rows] == "b").sum() == 3
    assert rows.tolist() == sorted(rows.tolist())


def test_description_pool_reuses_texts_and_counts_bad_facts() -> None:
    good = {
        "duration": 1.0,
        "orig_pkts": 3,
        "resp_pkts": 2,
        "orig_bytes": 100,
        "resp_bytes": 50,
        "conn_state": "SF",
        "history": "ShADad",
        "service": "http",
        "proto": "tcp",
        "resp_p": 80,
    }
    bad = {**good, "orig_pkts": 0, "resp_pkts": 0}
    pool = build_description_pool(["benign"] * 5 + ["syn_flood"], [good] * 5 + [bad], per_bucket=2, seed=0)
    assert pool.skipped == 1 and pool.kept.tolist() == [0, 1, 2, 3, 4]
    assert 1 <= len(pool.texts) <= 2 and all(len(c) == len(pool.texts) for c in pool.choices)


def test_run_writes_outputs_on_sample(tmp_path: Path) -> None:
    """The whole run on the committed sample with a random tiny encoder: checkpoint, metrics and plot."""
    torch.manual_seed(0)
    encoder = PacketEncoder(load_config("packet-encoder-tiny")).eval()
    metrics = run_alignment(
        SAMPLE,
        encoder,
        tmp_path,
        AlignConfig(heads="both", epochs=2, batch_size=32, class_weight=0.5),
        hashed_text_vectors,
        max_per_class=20,
        max_eval_per_class=20,
        descriptions_per_bucket=2,
    )
    for name in (CHECKPOINT_NAME, METRICS_NAME, CURVE_NAME):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / METRICS_NAME).read_text())
    assert len(saved["curve"]) == 2 and {"val", "test"} <= set(saved["zeroshot"])
    assert 0.0 <= saved["zeroshot"]["test"]["top1"] <= saved["zeroshot"]["test"]["top5"] <= 1.0
    assert metrics["train_connections"] <= 20 * len(FINE_CLASSES)
    heads, payload = load_heads(tmp_path / CHECKPOINT_NAME)
    assert heads.heads == "both" and heads.project_packets(torch.randn(2, 32)).shape == (2, 256)
    # what the evaluation's retrained alignments follow; a checkpoint from before class-aware targets had none
    assert recorded_config(payload) == AlignConfig(heads="both", epochs=2, batch_size=32, class_weight=0.5)
    del payload["record"]["config"]["class_weight"]
    assert recorded_config(payload).class_weight == 0.0


@pytest.mark.slow
def test_align_command_with_real_text_encoder(tmp_path: Path) -> None:
    """`packetclip-train align` end to end with MiniLM, the no-head setting, and a saved tiny encoder."""
    from packetclip_training.cli import cli
    from packetclip_training.models.encoder import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "encoder.pt"
    save_checkpoint(checkpoint, PacketEncoder(load_config("packet-encoder-tiny")), {"note": "random"})
    out = tmp_path / "align"
    result = CliRunner().invoke(
        cli,
        [
            "align",
            "--dataset",
            str(SAMPLE),
            "--encoder",
            str(checkpoint),
            "--out",
            str(out),
            "--heads",
            "none",
            "--epochs",
            "1",
            "--max-per-class",
            "10",
            "--max-eval-per-class",
            "10",
            "--threads",
            "1",
            "--class-weight",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test zero-shot top-1" in result.output
    config = json.loads((out / METRICS_NAME).read_text())["config"]
    assert config["heads"] == "none" and config["class_weight"] == 0.5
