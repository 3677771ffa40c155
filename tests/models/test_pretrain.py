"""Pretraining learns, is reproducible, reads only unlabelled train packets, and its checkpoint rebuilds the model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from packetclip_training.dataset.store import load_split
from packetclip_training.models.encoder import batch_tensors, load_checkpoint
from packetclip_training.pretrain import pretrain as pretrain_module
from packetclip_training.pretrain.pretrain import CHECKPOINT_NAME, LOSS_CURVE_NAME, file_sha256, run

FAST = {"warmup_steps": 5, "learning_rate": 3e-3, "batch_size": 32, "eval_connections": 200}


def test_loss_decreases_on_real_packets(real_packets, tmp_path):
    record = run([real_packets], "tiny", tmp_path, max_steps=40, seed=0, log_every=10, **FAST)
    losses = [point["loss"] for point in record["loss_curve"]]
    assert len(losses) == 4
    assert losses[0] < math.log(256) + 0.1, "an untrained model should start near uniform guessing"
    assert losses[-1] < losses[0] - 0.15, f"loss did not fall: {losses}"
    assert record["held_out"]["loss"] < math.log(256) - 0.1


@pytest.mark.parametrize("contrast_weight", [0.0, 0.5])
def test_same_seed_same_model_other_seed_other_model(real_packets, tmp_path, contrast_weight):
    """Bit-identical on one CPU thread, with or without the second (contrastive) view."""
    options = {**FAST, "contrast_weight": contrast_weight, "log_every": 2}
    first = run([real_packets], "tiny", tmp_path / "a", max_steps=6, seed=7, **options)
    second = run([real_packets], "tiny", tmp_path / "b", max_steps=6, seed=7, **options)
    run([real_packets], "tiny", tmp_path / "c", max_steps=6, seed=8, **options)
    assert first["pretrain_config"]["contrast_weight"] == contrast_weight
    assert (max(p["contrast"] for p in first["loss_curve"]) > 0) == (contrast_weight > 0)
    assert [p["loss"] for p in first["loss_curve"]] == [p["loss"] for p in second["loss_curve"]]
    a, _ = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    b, _ = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    c, _ = load_checkpoint(tmp_path / "c" / CHECKPOINT_NAME)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert any(not torch.equal(t, c.state_dict()[n]) for n, t in a.state_dict().items())


def test_checkpoint_rebuilds_the_same_model_and_records_its_data(real_packets, tmp_path):
    record = run([real_packets], "tiny", tmp_path, max_steps=3, seed=0, log_every=1, **FAST)
    encoder, payload = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert payload["config"]["name"] == "packet-encoder-tiny"
    assert payload["record"]["train"][0]["sha256"] == file_sha256(real_packets / "train.parquet")
    assert payload["record"]["steps"] == 3 == record["steps"]
    curve = json.loads((tmp_path / LOSS_CURVE_NAME).read_text())
    assert [p["loss"] for p in curve["curve"]] == [p["loss"] for p in record["loss_curve"]]
    arrays = load_split(real_packets, "val", columns=())
    inputs = batch_tensors({k: v[:16] for k, v in arrays.items()})
    rebuilt, _ = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    with torch.no_grad():
        expected = encoder(*inputs)
        got = rebuilt(*inputs)
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))
    assert float(expected[1].abs().sum()) > 0


def test_reads_neither_labels_nor_the_test_split(real_packets, tmp_path, monkeypatch):
    calls = []

    def spying_load_split(directory, split, columns=()):
        calls.append((split, tuple(columns)))
        return load_split(directory, split, columns)

    monkeypatch.setattr(pretrain_module, "load_split", spying_load_split)
    run([real_packets], "tiny", tmp_path, max_steps=2, seed=0, **FAST)
    assert {split for split, _ in calls} == {"train", "val"}
    assert all(columns == () for _, columns in calls), calls
    with pytest.raises(ValueError, match="test"):
        pretrain_module.load_packets([real_packets], "test", pretrain_module.load_config("tiny"))


def test_geometry_mismatch_is_refused(real_packets, tmp_path):
    with pytest.raises(ValueError, match="max_packets x snaplen"):
        pretrain_module.load_packets(
            [real_packets], "train", pretrain_module.EncoderConfig(max_packets=20, snaplen=128)
        )


def test_pretrain_command(lab_packets, tmp_path):
    from packetclip_training.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "pretrain",
            "--dataset",
            str(lab_packets),
            "--config",
            "tiny",
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    assert (out / CHECKPOINT_NAME).is_file() and (out / LOSS_CURVE_NAME).is_file()
    assert (
        main(["pretrain", "--dataset", str(lab_packets), "--config", "no-such-model", "--out", str(out)]) == 1
    )
    np.testing.assert_equal(load_checkpoint(out / CHECKPOINT_NAME)[1]["record"]["pretrain_config"]["seed"], 1)
