"""ET-BERT's architecture, as the yardstick of the efficiency comparison: BERT-base over datagram-bigram tokens.

ET-BERT (Lin et al., "ET-BERT: A Contextualized Datagram Representation with Pre-training Transformers for
Encrypted Traffic Classification", WWW 2022) turns the first packets of a flow into hex bigram tokens (its
"Datagram2Token" vocabulary, 60005 entries with the special tokens) and classifies a 128-token sample with a
BERT-base encoder and a head on the first token. This module rebuilds that architecture in plain torch so that its
cost can be counted and measured next to ours on the same onnxruntime build and core.

Weights are random (seeded): efficiency is a property of the architecture, not of trained weights — the same
matmuls run whatever their values, so no pretrained checkpoint is needed or used. This module is therefore never a
detector: it owns the architecture (`EtBertConfig`, `EtBert`), its analytic parameter and FLOP counts, and its ONNX
export (`write_etbert` also describes it in `etbert.json` for torch-free timing). It does not own the
throughput measurement (`packetclip.timing`, `packetclip_training.evaluation.efficiency`).

FLOPs are counted as in `models/flops.py`: one multiply-add is 2 FLOPs, matrix products (linear layers and the two
attention products) are counted, elementwise work (embedding lookups, softmax, LayerNorm, GELU, additions) is not.
At the full config that is 22.35 GFLOPs per 128-token sample and 132.1 M parameters.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from packetclip.classes import FINE_CLASSES

log = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
OPSET = 17
ONNX_NAME = "etbert.onnx"
_NEG = -1.0e9  # additive attention bias for padding keys; finite so an all-padding row gives no NaN


@dataclass(frozen=True)
class EtBertConfig:
    """Shape of the BERT encoder; the defaults are ET-BERT's (BERT-base over its bigram vocabulary)."""

    name: str = "et-bert-base"
    vocab_size: int = 60005  # ET-BERT's datagram-bigram vocabulary, special tokens included
    max_positions: int = 512  # learned position table of BERT; only the first seq_length rows are read
    token_types: int = 2  # segment embeddings of BERT (ET-BERT feeds two segments of a datagram)
    hidden: int = 768  # BERT-base width
    layers: int = 12  # BERT-base depth
    heads: int = 12  # BERT-base heads (64 wide each)
    ffn: int = 3072  # BERT-base feed-forward width
    seq_length: int = 128  # ET-BERT's fine-tuning sample length: one sample classifies one flow
    classes: int = len(FINE_CLASSES)  # width of the classification head; it barely changes the cost

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by {self.heads} heads")
        if self.seq_length > self.max_positions:
            raise ValueError(f"seq_length {self.seq_length} exceeds the {self.max_positions} positions")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PostNormLayer(nn.Module):
    """One BERT layer: self-attention and feed-forward, each followed by residual add and LayerNorm (post-norm)."""

    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)  # BERT's epsilon
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        length, hidden = x.shape[1], x.shape[2]  # fixed by the config; only the batch axis is dynamic
        qkv = (
            self.qkv(x).reshape(-1, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # (3,B,H,L,Dh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, L, Dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + key_bias  # (B, H, L, L)
        mixed = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, L, Dh)
        mixed = mixed.transpose(1, 2).reshape(-1, length, hidden)  # (B, L, D)
        x = self.attn_norm(x + self.attn_out(mixed))
        return self.ffn_norm(x + self.ffn(x))  # (B, L, D)


class EtBert(nn.Module):
    """`forward(input_ids (B, L) int64, attention_mask (B, L) int64) → logits (B, classes)`."""

    def __init__(self, config: EtBertConfig):
        super().__init__()
        self.config = config
        c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.hidden)
        self.position_embedding = nn.Embedding(c.max_positions, c.hidden)
        self.token_type_embedding = nn.Embedding(c.token_types, c.hidden)
        self.embedding_norm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.layers = nn.ModuleList(PostNormLayer(c.hidden, c.heads, c.ffn) for _ in range(c.layers))
        self.pooler = nn.Linear(c.hidden, c.hidden)  # tanh-activated, on the first ([CLS]) token
        self.classifier = nn.Linear(c.hidden, c.classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids)  # (B, L, D)
        # one segment: every token has type 0 (row 0 of the segment table), positions 0..L-1
        x = x + self.position_embedding.weight[:length] + self.token_type_embedding.weight[0]
        x = self.embedding_norm(x)  # (B, L, D)
        key_bias = ((1.0 - attention_mask.to(x.dtype)) * _NEG).reshape(-1, 1, 1, length)  # (B, 1, 1, L)
        for layer in self.layers:
            x = layer(x, key_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, D) the [CLS] token
        return self.classifier(pooled)  # (B, classes)


def build_etbert(config: EtBertConfig, seed: int = 0) -> EtBert:
    """The model with seeded random weights, in eval mode (weights do not change its cost)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = EtBert(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)  # do not disturb the caller's random stream
    return model


def parameter_count(config: EtBertConfig) -> int:
    """Parameters of `EtBert(config)`, counted from the shapes (no model is built)."""
    c = config
    d, f = c.hidden, c.ffn
    embeddings = (c.vocab_size + c.max_positions + c.token_types) * d + 2 * d  # three tables + LayerNorm
    attention = d * 3 * d + 3 * d + d * d + d + 2 * d  # qkv, output projection, LayerNorm
    feed_forward = d * f + f + f * d + d + 2 * d  # two linears, LayerNorm
    head = d * d + d + d * c.classes + c.classes  # pooler + classifier
    return embeddings + c.layers * (attention + feed_forward) + head


def flops_per_sample(config: EtBertConfig) -> int:
    """Matmul FLOPs (2 per multiply-add) of one `seq_length`-token sample, written out from the shapes."""
    c = config
    length, d, f = c.seq_length, c.hidden, c.ffn
    projections = 2 * length * d * (3 * d) + 2 * length * d * d  # q/k/v and the attention output
    attention = 2 * (2 * length * length * d)  # q·kᵀ and softmax·v over all heads
    feed_forward = 2 * (2 * length * d * f)
    head = 2 * d * d + 2 * d * c.classes  # pooler and classifier on the [CLS] token only
    return c.layers * (projections + attention + feed_forward) + head


def random_tokens(config: EtBertConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of full-length samples of random token ids (every position a real token, as in a long flow)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, size=(batch, config.seq_length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones((batch, config.seq_length), dtype=np.int64)}


def export_etbert(model: EtBert, out_dir: str | Path) -> Path:
    """Write `etbert.onnx` (dynamic batch axis, opset 17) into `out_dir`; returns its path.

    Traced at batch 2 so that no batch size is baked into the graph."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ONNX_NAME
    example = random_tokens(model.config, 2)
    tensors = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    dynamic = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is used as for the packet encoder; its deprecation notice is noise here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            tensors,
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    log.info("exported %s (%.0f MB)", path, path.stat().st_size / 1e6)
    return path


DESCRIPTION_NAME = "etbert.json"


def write_etbert(out_dir: str | Path, config: EtBertConfig | None = None, seed: int = 0) -> Path:
    """`etbert.onnx` plus `etbert.json` (config, analytic parameters and FLOPs, input names) in `out_dir`.

    What a torch-free process needs to time the architecture: `packetclip bench` runs `packetclip-train etbert`
    and reads these two files."""
    config = config or EtBertConfig()
    path = export_etbert(build_etbert(config, seed), out_dir)
    description = {
        "config": config.to_dict(),
        "parameters": parameter_count(config),
        "flops_per_sample": flops_per_sample(config),
        "onnx": path.name,
        "inputs": INPUT_NAMES,
        "outputs": OUTPUT_NAMES,
    }
    (Path(out_dir) / DESCRIPTION_NAME).write_text(json.dumps(description, indent=1) + "\n")
    return path
