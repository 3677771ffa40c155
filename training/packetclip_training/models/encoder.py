"""The packet encoder f_P: masked packet bytes of a connection → per-packet and connection embeddings.

Owns the architecture (one file, read top to bottom), its configuration (`EncoderConfig`, loaded from the JSON
files in `configs/`) and the checkpoint format that rebuilds it. It does not own training objectives (see
`packetclip_training.pretrain.pretrain`), export (`packetclip_training.export.encoder`) or the featurizer that
produces its input (`packetclip.featurizer.pack`).

Shape of the computation, with B connections of N packets of S bytes:

1. Only valid packets are encoded: they are gathered into P rows (P ≤ B·N) and scattered back afterwards, so a
   connection of five packets costs five packet encodings, not N. Gather/scatter use `index_select` and `scatter`
   with an expanded index, which export to ONNX `Gather`/`ScatterElements` (no `index_add_`).
2. Bytes → one of 257 embeddings (256 values + a mask token used by pretraining) → patches of `patch_bytes` bytes
   become T = S / patch_bytes tokens → a small pre-norm Transformer over the tokens of one packet → mean pooling
   → a packet vector.
3. Per-packet side features (direction, log inter-arrival time, log length, first-packet flag) and a position
   embedding are added; one Transformer layer over the N packets of a connection (padding packets masked out of
   attention) gives contextual packet states.
4. Outputs: per-packet embeddings (B, N, E), zero for padding packets, and a connection embedding (B, E) from a
   masked mean and a learned attention pooling of the packet states.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

BYTE_VALUES = 256
MASK_TOKEN = 256  # the extra byte embedding that stands for "hidden": pretraining writes it over masked bytes
CHECKPOINT_FORMAT = "packetclip.packet_encoder/1"
DEFAULT_CONFIG = "packet-encoder-base"
SIDE_FEATURES = 4  # direction, log inter-arrival, log length, first packet
PADDING_BIAS = -1.0e9  # additive attention bias for padding keys; finite so an all-padding row gives no NaN


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the packet encoder; every field is part of the checkpoint."""

    name: str = DEFAULT_CONFIG
    max_packets: int = 30  # N: packets per connection, the featurizer's max_packets
    snaplen: int = 128  # S: bytes from the IP header on: IP/TCP headers with options, payload start
    patch_bytes: int = 8  # bytes per token: 16 tokens per packet keeps attention and FLOPs small
    byte_dim: int = 16  # width of one byte's embedding; a token concatenates patch_bytes of them
    token_dim: int = 48  # width of the per-packet Transformer; the FLOP budget (2 M per packet) binds here
    token_heads: int = 4  # attention heads over the tokens of one packet
    token_layers: int = 2  # Transformer layers over the tokens of one packet
    token_ffn: int = 128  # hidden width of the token layers' feed-forward blocks
    packet_dim: int = 64  # width of the Transformer over the packets of one connection
    packet_heads: int = 4  # attention heads over packets
    packet_layers: int = 1  # layers over packets: one lets each packet see the connection's others
    packet_ffn: int = 128  # hidden width of the packet layers' feed-forward blocks
    embed_dim: int = 128  # E: width of the per-packet and connection embeddings handed to later stages

    def __post_init__(self) -> None:
        if self.snaplen % self.patch_bytes:
            raise ValueError(f"snaplen {self.snaplen} is not a multiple of patch_bytes {self.patch_bytes}")
        for width, heads in ((self.token_dim, self.token_heads), (self.packet_dim, self.packet_heads)):
            if width % heads:
                raise ValueError(f"width {width} is not divisible by {heads} heads")

    @property
    def tokens(self) -> int:
        """T: tokens per packet."""
        return self.snaplen // self.patch_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown encoder config fields: {', '.join(unknown)}")
        return cls(**values)


def config_names() -> list[str]:
    """Names of the configs shipped in `configs/`."""
    folder = resources.files(__package__) / "configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_config(name_or_path: str | Path) -> EncoderConfig:
    """A shipped config by name (`packet-encoder-tiny`, or just `tiny`) or a JSON file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return EncoderConfig.from_dict(json.loads(path.read_text()))
    name = str(name_or_path)
    for candidate in (name, f"packet-encoder-{name}"):
        resource = resources.files(__package__) / "configs" / f"{candidate}.json"
        if resource.is_file():
            return EncoderConfig.from_dict(json.loads(resource.read_text()))
    raise ValueError(f"no encoder config {name!r}; shipped: {', '.join(config_names())}")


class Block(nn.Module):
    """Pre-norm Transformer layer written with plain matmuls so that it exports to any ONNX opset ≥ 13."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(
        self, x: torch.Tensor, key_bias: torch.Tensor | None = None, queries: int | None = None
    ) -> torch.Tensor:
        """(B, L, D) → (B, L, D); with `queries`, only the first `queries` tokens are computed and returned
        (they still attend to all L): the exact result for a last layer whose other outputs nobody reads."""
        if queries is not None:
            return self._first_tokens(x, key_bias, queries)
        length, dim = x.shape[1], x.shape[2]  # tokens of a packet, or packets of a connection (may vary)
        qkv = self.qkv(self.attn_norm(x)).reshape(-1, length, 3, self.heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, L, Dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, L, L)
        if key_bias is not None:
            scores = scores + key_bias  # (B, 1, 1, L) hides padding keys
        mixed = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, L, Dh)
        mixed = mixed.transpose(1, 2).reshape(-1, length, dim)  # (B, L, D)
        x = x + self.attn_out(mixed)
        return x + self.ffn(self.ffn_norm(x))

    def _first_tokens(self, x: torch.Tensor, key_bias: torch.Tensor | None, queries: int) -> torch.Tensor:
        """The first `queries` tokens of `forward` with the key and value projections folded into the queries
        and the attention weights, so that no key or value of the L tokens is ever formed.

        Per head h, with n_j the normed tokens: q_h·(W_k,h n_j + b_k,h) = (W_k,hᵀ q_h)·n_j + q_h·b_k,h, and the
        last term is the same for every key j, which softmax ignores; Σ_j p_hj (W_v,h n_j + b_v,h) =
        W_v,h (Σ_j p_hj n_j) + b_v,h, as the weights p_hj sum to 1. Instead of 2·L·D² multiply-adds for the keys
        and values: 2·Q·H·D² for the folded projections and 2·Q·H·L·D for the scores and the weighted sum.
        """
        length, dim = x.shape[1], x.shape[2]
        heads, head_dim = self.heads, self.head_dim
        normed = self.attn_norm(x)  # (B, L, D)
        x = x[:, :queries]
        q = F.linear(normed[:, :queries], self.qkv.weight[:dim], self.qkv.bias[:dim])  # (B, Q, D)
        # block-diagonal weights: head h's rows of W_k (resp. W_v) meet only head h's slice of q (resp. of the
        # weighted sums), so each fold is one matrix product over all heads
        per_head = torch.eye(heads, dtype=x.dtype, device=x.device).reshape(heads, 1, heads, 1)
        w_k = self.qkv.weight[dim : 2 * dim].reshape(heads, head_dim, 1, dim)  # (H, Dh, 1, D)
        fold_k = (w_k * per_head).reshape(dim, heads * dim)  # (H·Dh, H·D)
        w_v = self.qkv.weight[2 * dim :].reshape(heads, head_dim, dim).transpose(1, 2)  # (H, D, Dh)
        fold_v = (w_v.reshape(heads, dim, 1, head_dim) * per_head).reshape(heads * dim, dim)  # (H·D, H·Dh)
        probes = torch.matmul(q, fold_k).reshape(-1, queries * heads, dim)  # (B, Q·H, D)
        scores = torch.matmul(probes, normed.transpose(1, 2)) / math.sqrt(head_dim)  # (B, Q·H, L)
        if key_bias is not None:
            scores = scores + key_bias.reshape(-1, 1, length)  # (B, 1, L) hides padding keys
        pooled = torch.matmul(scores.softmax(dim=-1), normed)  # (B, Q·H, D): Σ_j p_hj n_j
        mixed = torch.matmul(pooled.reshape(-1, queries, heads * dim), fold_v) + self.qkv.bias[2 * dim :]
        x = x + self.attn_out(mixed)  # (B, Q, D)
        return x + self.ffn(self.ffn_norm(x))


class EncoderOutput(NamedTuple):
    """Everything the encoder computes; objectives use the inner states, later stages the two embeddings."""

    token_states: torch.Tensor  # (P, T, token_dim): tokens of the valid packets, in `packet_rows` order
    packet_rows: torch.Tensor  # (P,) int64: row of each encoded packet in the flattened (B·N) packet axis
    packet_states: torch.Tensor  # (B, N, packet_dim): packets in the context of their connection
    packet_embeddings: torch.Tensor  # (B, N, E), zero for padding packets
    connection_embedding: torch.Tensor  # (B, E)


def side_features(direction: torch.Tensor, iat: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) per-packet features that are not in the bytes, scaled to about [-1, 1]."""
    sign = direction.float() * 2.0 - 1.0  # originator +1, responder -1
    # inter-arrival times span microseconds to minutes: log of tenths of milliseconds, /10 → about 0..1.5
    gap = torch.log1p(iat.float().clamp(min=0.0) * 1.0e4) / 10.0
    size = torch.log1p(length.float().clamp(min=0.0)) / math.log(65536.0)  # IP length ≤ 65535
    first = (torch.arange(gap.shape[1]) == 0).to(gap.dtype).expand_as(gap)  # no in-place write: ONNX-safe
    return torch.stack([sign, gap, size, first], dim=-1)  # (B, N, 4)


class PacketEncoder(nn.Module):
    """f_P. `forward` takes `pack()`'s arrays as tensors and returns (packet_embeddings, connection_embedding)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.byte_embedding = nn.Embedding(BYTE_VALUES + 1, c.byte_dim)
        self.patch_projection = nn.Linear(c.patch_bytes * c.byte_dim, c.token_dim)
        self.token_position = nn.Parameter(torch.zeros(1, c.tokens, c.token_dim))
        self.token_blocks = nn.ModuleList(
            Block(c.token_dim, c.token_heads, c.token_ffn) for _ in range(c.token_layers)
        )
        self.token_norm = nn.LayerNorm(c.token_dim)
        self.packet_projection = nn.Linear(c.token_dim, c.packet_dim)
        self.side_projection = nn.Linear(SIDE_FEATURES, c.packet_dim)
        self.packet_position = nn.Parameter(torch.zeros(1, c.max_packets, c.packet_dim))
        self.packet_blocks = nn.ModuleList(
            Block(c.packet_dim, c.packet_heads, c.packet_ffn) for _ in range(c.packet_layers)
        )
        self.packet_norm = nn.LayerNorm(c.packet_dim)
        self.packet_output = nn.Linear(c.packet_dim, c.embed_dim)
        self.pool_score = nn.Linear(c.packet_dim, 1)
        self.connection_output = nn.Linear(2 * c.packet_dim, c.embed_dim)
        self.connection_norm = nn.LayerNorm(c.embed_dim)
        nn.init.normal_(self.token_position, std=0.02)
        nn.init.normal_(self.packet_position, std=0.02)

    def encode_packets(self, packet_bytes: torch.Tensor) -> torch.Tensor:
        """(P, S) byte ids (0..256) → (P, T, token_dim) token states of each packet on its own."""
        c = self.config
        x = self.byte_embedding(packet_bytes.long())  # (P, S, byte_dim)
        x = x.reshape(-1, c.tokens, c.patch_bytes * c.byte_dim)  # (P, T, patch_bytes*byte_dim)
        x = self.patch_projection(x) + self.token_position  # (P, T, token_dim)
        for block in self.token_blocks:
            x = block(x)
        return self.token_norm(x)  # (P, T, token_dim)

    def encode(
        self,
        packet_bytes: torch.Tensor,
        direction: torch.Tensor,
        iat: torch.Tensor,
        length: torch.Tensor,
        valid: torch.Tensor,
    ) -> EncoderOutput:
        """All states for a batch: packet_bytes (B, N, S) byte ids, the rest (B, N)."""
        c = self.config
        flat_valid = valid.reshape(-1)  # (B*N,)
        rows = torch.nonzero(flat_valid).reshape(-1)  # (P,) valid packets only: padding costs nothing
        chosen = packet_bytes.reshape(-1, c.snaplen).index_select(0, rows)  # (P, S)
        tokens = self.encode_packets(chosen)  # (P, T, token_dim)
        vectors = self.packet_projection(tokens.mean(dim=1))  # (P, packet_dim)
        scatter_index = rows.unsqueeze(1).expand(-1, c.packet_dim)  # (P, packet_dim)
        slots = torch.zeros(flat_valid.shape[0], c.packet_dim, dtype=vectors.dtype, device=vectors.device)
        slots = slots.scatter(0, scatter_index, vectors)  # (B*N, packet_dim), zero rows for padding
        packets = valid.shape[1]  # N ≤ max_packets: a batch of short connections may come cut to its longest
        h = slots.reshape(-1, packets, c.packet_dim)  # (B, N, packet_dim)
        position = self.packet_position[:, :packets]
        h = h + self.side_projection(side_features(direction, iat, length)) + position
        mask = valid.to(h.dtype)  # (B, N)
        key_bias = ((1.0 - mask) * PADDING_BIAS).reshape(-1, 1, 1, packets)  # (B, 1, 1, N)
        for block in self.packet_blocks:
            h = block(h, key_bias)
        h = self.packet_norm(h)  # (B, N, packet_dim)
        packet_embeddings = self.packet_output(h) * mask.unsqueeze(-1)  # (B, N, E)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        mean = (h * mask.unsqueeze(-1)).sum(dim=1) / counts  # (B, packet_dim)
        scores = self.pool_score(h).squeeze(-1) + key_bias.reshape(-1, packets)  # (B, N)
        attended = (h * scores.softmax(dim=1).unsqueeze(-1)).sum(dim=1)  # (B, packet_dim)
        pooled = torch.cat([mean, attended], dim=-1)  # (B, 2*packet_dim)
        connection = self.connection_norm(self.connection_output(pooled))  # (B, E)
        return EncoderOutput(tokens, rows, h, packet_embeddings, connection)

    def forward(
        self,
        packet_bytes: torch.Tensor,
        direction: torch.Tensor,
        iat: torch.Tensor,
        length: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encode(packet_bytes, direction, iat, length, valid)
        return out.packet_embeddings, out.connection_embedding  # (B, N, E), (B, E)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def batch_tensors(arrays: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """`pack()`/`load_split()` numpy arrays → the encoder's five input tensors, in argument order."""
    names = ("bytes", "direction", "iat", "length", "valid")
    # parquet-backed arrays are read-only; torch wants writable memory (copied only when needed)
    return tuple(torch.from_numpy(np.require(arrays[name], requirements=["W", "C"])) for name in names)


def save_checkpoint(
    path: str | Path,
    encoder: PacketEncoder,
    record: dict[str, Any],
    extra_state: dict[str, Any] | None = None,
) -> None:
    """Write what rebuilds the encoder (config + weights) and how it was trained (record)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": encoder.config.to_dict(),
        "state_dict": encoder.state_dict(),
        "record": record,
        "extra_state": extra_state or {},
    }
    torch.save(payload, Path(path))


def load_checkpoint(path: str | Path) -> tuple[PacketEncoder, dict[str, Any]]:
    """Rebuild the encoder of a checkpoint in eval mode; returns (encoder, full checkpoint dict)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a packet encoder checkpoint (format {payload.get('format')!r})")
    encoder = PacketEncoder(EncoderConfig.from_dict(payload["config"]))
    encoder.load_state_dict(payload["state_dict"])
    encoder.eval()
    return encoder, payload
