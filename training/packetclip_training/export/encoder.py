"""ONNX export of a pretrained packet encoder, with the parity fixture the runtime checks it against.

Owns `export_encoder`: it rebuilds the encoder from its checkpoint, exports it with dynamic batch and packet axes
(traced at batch ≥ 2, so no batch size is baked in; a runtime may cut a batch of short connections to its longest,
padding packets being masked out), runs onnxruntime on real packets, whole and cut, and refuses to write a model
whose outputs differ from torch's by more than `PARITY_TOLERANCE`. It also owns `embedding_throughput`, the one-thread
speed measurement reports quote. It does not assemble model bundles or manifests of a whole release.

Files written into the output folder:
- `packet_encoder.onnx`: inputs `bytes` uint8 (B, N, S), `direction` int8 (B, N), `iat` float32 (B, N),
  `length` int32 (B, N), `valid` bool (B, N) — exactly `packetclip.featurizer.pack`'s arrays, N up to the config's
  max_packets; outputs
  `packet_embeddings` float32 (B, N, E) and `connection_embedding` float32 (B, E).
- `encoder_fixture.npz`: those inputs for a few real connections and torch's outputs for them.
- `packet_encoder.json`: names, shapes, config, sha256 of the two files above, the checkpoint's training summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from packetclip_training.models.encoder import PacketEncoder, batch_tensors, load_checkpoint

log = logging.getLogger(__name__)

ONNX_NAME = "packet_encoder.onnx"
FIXTURE_NAME = "encoder_fixture.npz"
METADATA_NAME = "packet_encoder.json"
INPUT_NAMES = ["bytes", "direction", "iat", "length", "valid"]
OUTPUT_NAMES = ["packet_embeddings", "connection_embedding"]
PARITY_TOLERANCE = 1e-4
OPSET = 17
FIXTURE_CONNECTIONS = 8


class ExportError(RuntimeError):
    """The export could not be made or did not match torch."""


class _OnnxSurface(nn.Module):
    """The encoder as the runtime calls it: `pack()`'s dtypes in, two float32 embeddings out."""

    def __init__(self, encoder: PacketEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, packet_bytes, direction, iat, length, valid):  # type: ignore[no-untyped-def]
        return self.encoder(packet_bytes.long(), direction, iat, length, valid)


def fixture_from_checkpoint(
    record: dict[str, Any], count: int = FIXTURE_CONNECTIONS
) -> dict[str, np.ndarray]:
    """Real packets for the fixture: the first connections of the pretraining datasets' val (else train) split,
    chosen to cover short and long connections. Labels are not read."""
    from packetclip_training.dataset.store import load_split  # the factory's reader; only needed here

    for source in record.get("train", []):
        directory = Path(source["path"]).parent
        for split in ("val", "train"):
            if not (directory / f"{split}.parquet").is_file():
                continue
            arrays = load_split(directory, split, columns=())
            packets = arrays["valid"].sum(axis=1)
            order = np.argsort(-packets, kind="stable")  # longest first, then a spread down to the shortest
            rows = order[np.linspace(0, len(order) - 1, num=min(count, len(order))).astype(int)]
            rows = rows[packets[rows] > 0]
            if len(rows) >= 2:
                return {name: np.ascontiguousarray(arrays[name][rows]) for name in INPUT_NAMES}
    raise ExportError("no dataset of the checkpoint's training record is readable; pass fixture_inputs")


def export_encoder(
    checkpoint: str | Path,
    out_dir: str | Path,
    fixture_inputs: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Export `checkpoint` into `out_dir`; returns the metadata written to `packet_encoder.json`."""
    import onnxruntime as ort  # the factory checks its own export with the runtime's engine

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder, payload = load_checkpoint(checkpoint)
    inputs = fixture_inputs if fixture_inputs is not None else fixture_from_checkpoint(payload["record"])
    inputs = {name: np.ascontiguousarray(inputs[name]) for name in INPUT_NAMES}
    if len(inputs["valid"]) < 2:
        raise ExportError("the fixture needs at least 2 connections: a batch of 1 can bake the batch size in")
    surface = _OnnxSurface(encoder).eval()
    tensors = batch_tensors(inputs)
    with torch.no_grad():
        expected = [t.numpy() for t in surface(*tensors)]
    onnx_path = out / ONNX_NAME
    dynamic = {name: {0: "batch", 1: "packets"} for name in INPUT_NAMES + OUTPUT_NAMES[:1]}
    dynamic[OUTPUT_NAMES[1]] = {0: "batch"}
    with warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (see below); its deprecation notice is noise here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            surface,
            tensors,
            str(onnx_path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,  # handles the data-dependent gather of valid packets without extra packages
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(OUTPUT_NAMES, inputs)
    differences = [float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)]
    counts = inputs["valid"].sum(axis=1)
    short = np.flatnonzero(counts < counts.max())  # these connections cut to the longest of them
    if len(short) >= 2:
        longest = max(1, int(counts[short].max()))
        cut = session.run(OUTPUT_NAMES, {name: value[short, :longest] for name, value in inputs.items()})
        differences += [
            float(np.abs(cut[0] - expected[0][short, :longest]).max()),
            float(np.abs(cut[1] - expected[1][short]).max()),
        ]
    if max(differences) > PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime differs from torch by {max(differences):.2e} > {PARITY_TOLERANCE}")
    fixture_path = out / FIXTURE_NAME
    # numpy's stubs read **arrays as possibly its allow_pickle flag
    np.savez_compressed(fixture_path, **inputs, **dict(zip(OUTPUT_NAMES, expected, strict=True)))  # type: ignore[arg-type]
    metadata = _metadata(encoder, payload, onnx_path, fixture_path, differences)
    (out / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")
    log.info("exported %s (max |torch - onnxruntime| = %.2e)", onnx_path, max(differences))
    return metadata


def _metadata(
    encoder: PacketEncoder,
    payload: dict[str, Any],
    onnx_path: Path,
    fixture_path: Path,
    differences: list[float],
) -> dict[str, Any]:
    c = encoder.config
    record = payload.get("record", {})
    return {
        "model": c.name,
        "opset": OPSET,
        "inputs": {
            "bytes": ["batch", c.max_packets, c.snaplen, "uint8"],
            "direction": ["batch", c.max_packets, "int8"],
            "iat": ["batch", c.max_packets, "float32"],
            "length": ["batch", c.max_packets, "int32"],
            "valid": ["batch", c.max_packets, "bool"],
        },
        "outputs": {
            "packet_embeddings": ["batch", c.max_packets, c.embed_dim, "float32"],
            "connection_embedding": ["batch", c.embed_dim, "float32"],
        },
        "config": c.to_dict(),
        "parity_max_abs_difference": max(differences),
        "parity_tolerance": PARITY_TOLERANCE,
        "sha256": {onnx_path.name: _sha256(onnx_path), fixture_path.name: _sha256(fixture_path)},
        "pretraining": {
            key: record.get(key) for key in ("objective", "steps", "train", "held_out", "encoder_parameters")
        },
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def embedding_throughput(
    onnx_path: str | Path, inputs: dict[str, np.ndarray], batch_size: int = 256, seconds: float = 3.0
) -> dict[str, float]:
    """Connections per second of the exported encoder on one CPU thread, over `inputs` repeated for `seconds`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    total = len(inputs["valid"])
    batches = [
        {name: np.ascontiguousarray(inputs[name][start : start + batch_size]) for name in INPUT_NAMES}
        for start in range(0, total, batch_size)
    ]
    session.run(OUTPUT_NAMES, batches[0])  # warm-up: allocations and kernel selection
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            session.run(OUTPUT_NAMES, batch)
            done += len(batch["valid"])
    elapsed = time.perf_counter() - started
    return {
        "connections_per_second": done / elapsed,
        "connections": float(done),
        "seconds": elapsed,
        "mean_valid_packets": float(inputs["valid"].sum(axis=1).mean()),
        "batch_size": float(batch_size),
    }
