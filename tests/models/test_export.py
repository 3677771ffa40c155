"""The exported ONNX encoder computes what torch computes, at any batch size, and its fixture checks it without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from packetclip_training.dataset.store import load_split
from packetclip_training.export.encoder import (
    FIXTURE_NAME,
    INPUT_NAMES,
    METADATA_NAME,
    ONNX_NAME,
    OUTPUT_NAMES,
    PARITY_TOLERANCE,
    ExportError,
    embedding_throughput,
    export_encoder,
)
from packetclip_training.models.encoder import batch_tensors, load_checkpoint
from packetclip_training.pretrain.pretrain import CHECKPOINT_NAME, run


@pytest.fixture(scope="module")
def exported(real_packets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    run([real_packets], "tiny", folder / "train", max_steps=5, seed=0, batch_size=32, eval_connections=64)
    metadata = export_encoder(folder / "train" / CHECKPOINT_NAME, folder / "onnx")
    return folder, metadata


def test_export_writes_model_fixture_and_metadata(exported):
    folder, metadata = exported
    for name in (ONNX_NAME, FIXTURE_NAME, METADATA_NAME):
        assert (folder / "onnx" / name).is_file()
    assert metadata["parity_max_abs_difference"] <= PARITY_TOLERANCE
    fixture = np.load(folder / "onnx" / FIXTURE_NAME)
    assert len(fixture["valid"]) >= 2
    assert fixture["valid"].sum(axis=1).min() < fixture["valid"].sum(axis=1).max(), "fixture lengths vary"


@pytest.mark.parametrize("batch", [1, 37])
def test_onnxruntime_matches_torch_on_real_packets_at_other_batch_sizes(exported, real_packets, batch):
    """Traced at the fixture's batch, run at others: no batch size is baked into the graph."""
    folder, _ = exported
    arrays = load_split(real_packets, "train", columns=())
    rows = np.arange(100, 100 + batch)
    inputs = {name: np.ascontiguousarray(arrays[name][rows]) for name in INPUT_NAMES}
    inputs["valid"][-1] = False  # a connection with no packet at all must not produce NaN
    encoder, _ = load_checkpoint(folder / "train" / CHECKPOINT_NAME)
    with torch.no_grad():
        expected = [t.numpy() for t in encoder(*batch_tensors(inputs))]
    session = ort.InferenceSession(str(folder / "onnx" / ONNX_NAME), providers=["CPUExecutionProvider"])
    got = session.run(OUTPUT_NAMES, inputs)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert np.isfinite(g).all()
        assert np.abs(g - e).max() <= PARITY_TOLERANCE
    assert np.all(got[0][~inputs["valid"]] == 0), "padding packets have zero embeddings"


@pytest.mark.parametrize("packets", [1, 3, 8])
def test_a_batch_cut_to_its_longest_connection_gives_the_same_embeddings(exported, real_packets, packets):
    """The packet axis is dynamic: short connections fed without their padding packets (as the engine groups
    them) get what they get padded to max_packets, in onnxruntime as in torch."""
    folder, _ = exported
    arrays = load_split(real_packets, "train", columns=())
    rows = np.flatnonzero(arrays["valid"].sum(axis=1) <= packets)[:40]
    assert len(rows) >= 2
    full = {name: np.ascontiguousarray(arrays[name][rows]) for name in INPUT_NAMES}
    cut = {name: np.ascontiguousarray(value[:, :packets]) for name, value in full.items()}
    session = ort.InferenceSession(str(folder / "onnx" / ONNX_NAME), providers=["CPUExecutionProvider"])
    padded, short = session.run(OUTPUT_NAMES, full), session.run(OUTPUT_NAMES, cut)
    assert short[0].shape[1] == packets
    np.testing.assert_allclose(short[0], padded[0][:, :packets], atol=1e-5)
    np.testing.assert_allclose(short[1], padded[1], atol=1e-5)
    encoder, _ = load_checkpoint(folder / "train" / CHECKPOINT_NAME)
    with torch.no_grad():
        torch_short = encoder(*batch_tensors(cut))
    np.testing.assert_allclose(torch_short[1].numpy(), padded[1], atol=PARITY_TOLERANCE)


def test_runtime_checks_the_fixture_without_torch(exported):
    folder, _ = exported
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import onnxruntime as ort
        fixture = np.load({str(folder / "onnx" / FIXTURE_NAME)!r})
        session = ort.InferenceSession({str(folder / "onnx" / ONNX_NAME)!r}, providers=["CPUExecutionProvider"])
        inputs = {{name: fixture[name] for name in {INPUT_NAMES!r}}}
        got = session.run({OUTPUT_NAMES!r}, inputs)
        for name, value in zip({OUTPUT_NAMES!r}, got):
            assert np.abs(value - fixture[name]).max() <= {PARITY_TOLERANCE!r}, name
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_single_connection_fixture_is_refused(exported, real_packets, tmp_path):
    folder, _ = exported
    arrays = load_split(real_packets, "train", columns=())
    one = {name: arrays[name][:1] for name in INPUT_NAMES}
    with pytest.raises(ExportError, match="at least 2"):
        export_encoder(folder / "train" / CHECKPOINT_NAME, tmp_path, fixture_inputs=one)


def test_throughput_is_measured_on_one_thread(exported, real_packets):
    folder, _ = exported
    arrays = load_split(real_packets, "val", columns=())
    speed = embedding_throughput(folder / "onnx" / ONNX_NAME, arrays, batch_size=64, seconds=0.5)
    assert speed["connections_per_second"] > 0 and speed["connections"] >= len(arrays["valid"])
