"""Self-supervised pretraining of the packet encoder by masked-byte modelling.

Owns the masking rule, the masked-byte head and loss, the training loop and the pretraining record. It reads only
the `train` split of each dataset (and `val`, for a held-out loss), never `test`, and never a label column. The
encoder itself lives in `packetclip_training.models.encoder`; export in `packetclip_training.export.encoder`.

What is masked, and why. A packet's bytes are cut into the encoder's tokens (`patch_bytes` bytes each); a random
`mask_ratio` of a packet's *candidate* tokens is replaced by the mask token and the model predicts the original
bytes at the *target* positions of those tokens. Target positions are chosen so that the model learns traffic, not
the preprocessing:

- Positions past the packet's end (`min(length, snaplen)`) are zero padding: predicting them only repeats the
  `length` input. They are never targets.
- The featurizer zeroes the fields that identify a capture site (addresses, IP ID, TTL, checksums, TCP timestamp
  values, ...). Predicting those zeros would teach the model the featurizer's masking, and would make the loss
  look better than the model is. Which offsets are zeroed depends on the header layout, so the rule is learned
  from the training data: packets are grouped by layout (first IP byte, protocol, and TCP data offset and flags
  or ICMP type); a position that is zero in (nearly) every packet of its layout is not a target. Rare layouts use
  their (IP version, protocol) group, rarer ones every in-packet position.
- Whether a position is a target depends on its layout and the packet length, never on the byte's own value; a
  rule such as "mask only non-zero bytes" would tell the model that a masked byte is not zero.
- Masked bytes are replaced by a dedicated mask token (never left unchanged or swapped for a random byte), so a
  masked byte's value cannot reach the model at all; tests check this.

The head predicts a byte from its token's state plus the packet's state in its connection and the connection
embedding, so the Transformer over packets and the pooling are trained too (a port or a window size hidden in
one packet is visible in its neighbours).

Same-connection task (weight `contrast_weight`, off by default). Each step can also build a second view of every
connection (another random mask, a random subset of its packets, jittered inter-arrival times) and a symmetric
InfoNCE asks the two views' connection embeddings to find each other among the batch. It was meant to shape the
connection embedding more directly than masked bytes do. Measured on the real corpus plus the lab sample
(3,640 steps each, same seed), it did not: masked bytes alone gave the lower held-out loss and the better linear
probe, so it stays available for larger data but is not used by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from packetclip_training.augment.tool_invariance import vary_tool_fields
from packetclip_training.dataset.store import load_split
from packetclip_training.models.encoder import (
    BYTE_VALUES,
    MASK_TOKEN,
    EncoderConfig,
    EncoderOutput,
    PacketEncoder,
    load_config,
    parameter_count,
    save_checkpoint,
)

log = logging.getLogger(__name__)

INPUT_NAMES = ("bytes", "direction", "iat", "length", "valid")
CHECKPOINT_NAME = "encoder.pt"
LOSS_CURVE_NAME = "loss_curve.json"


@dataclass(frozen=True)
class PretrainConfig:
    """How pretraining runs; recorded in the checkpoint."""

    mask_ratio: float = 0.25  # share of candidate tokens hidden per packet; 15–30 % works for byte models
    batch_size: int = 64  # connections per step (each up to N packets)
    learning_rate: float = 3e-3  # AdamW peak: 1e-3 learnt half as fast in 300 steps, 6e-3 no faster
    weight_decay: float = 0.01
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10 % of the peak
    grad_clip: float = 1.0
    epochs: int = 5
    max_steps: int | None = None  # stops earlier than `epochs` when set
    seed: int = 0
    zero_share: float = 0.001  # a layout position non-zero in fewer packets than this counts as always zero
    min_layout_packets: int = 32  # a layout seen fewer times uses its coarser group's rule
    rule_packets: int = 200_000  # packets the target rule is learnt from: plenty, and bounded memory
    # weight of the same-connection task; off: on the small real + lab-sample data it lowered probe scores
    # and raised the held-out masked-byte loss (see the module doc)
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.1  # InfoNCE temperature over the connections of a batch
    view_keep: float = 0.7  # share of a connection's packets the second view keeps (at least one)
    view_iat_jitter: float = 0.2  # log-normal sigma on the second view's inter-arrival times
    log_every: int = 10  # steps between loss-curve points
    eval_connections: int = 2000  # held-out (val) connections for the final held-out loss
    # share of each batch's connections whose tool-identifying fields (the originator's ephemeral port and TCP
    # window; and, for another such share, the data its SYNs carry) are redrawn (`augment.tool_invariance`): the
    # encoder learns those positions say nothing it can predict, rather than learning each lab tool's values
    tool_invariance: float = 0.5


# ---------------------------------------------------------------- targets: which positions may be predicted


def layout_keys(packet_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fine, coarse) int64 layout keys of (P, S) masked packets: which header fields sit where."""
    count, snaplen = packet_bytes.shape
    b = packet_bytes.astype(np.int64)
    first = b[:, 0]
    version = first >> 4
    rows = np.arange(count)
    proto = np.where(version == 6, b[:, 6], b[:, 9])  # next header / protocol
    l4 = np.where(version == 6, 40, (first & 0x0F) * 4)  # IPv6 extension headers land in the coarse group
    data_offset = b[rows, np.clip(l4 + 12, 0, snaplen - 1)] >> 4  # TCP header length: where options sit
    flags = b[rows, np.clip(l4 + 13, 0, snaplen - 1)]  # e.g. ACK clear: the featurizer zeroes the ack number
    tcp_layout = data_offset << 8 | flags
    icmp_type = b[rows, np.clip(l4, 0, snaplen - 1)]
    detail = np.where(proto == 6, tcp_layout, np.where((proto == 1) | (proto == 58), icmp_type, 0))
    fine = first << 24 | proto << 16 | detail
    coarse = version << 8 | proto
    return fine, coarse


def in_packet(length: np.ndarray, snaplen: int) -> np.ndarray:
    """(..., S) bool: byte positions inside the packet (the rest is the featurizer's zero padding)."""
    return np.arange(snaplen) < np.minimum(length, snaplen)[..., None]


@dataclass
class TargetRule:
    """Which byte positions of a packet are prediction targets, learned from training packets (see module doc)."""

    snaplen: int
    fine_keys: np.ndarray  # (Kf,) sorted layout keys with enough packets
    fine_allowed: np.ndarray  # (Kf, S) bool: positions not always zero in that layout
    coarse_keys: np.ndarray  # (Kc,)
    coarse_allowed: np.ndarray  # (Kc, S)
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, packet_bytes: np.ndarray, length: np.ndarray, zero_share: float, min_packets: int
    ) -> TargetRule:
        """Learn the rule from (P, S) valid packets and their (P,) lengths."""
        snaplen = packet_bytes.shape[1]
        inside = in_packet(length, snaplen)  # (P, S)
        nonzero = (packet_bytes != 0) & inside  # (P, S)
        fine, coarse = layout_keys(packet_bytes)
        fine_keys, fine_allowed = _allowed_by_key(fine, inside, nonzero, zero_share, min_packets)
        coarse_keys, coarse_allowed = _allowed_by_key(coarse, inside, nonzero, zero_share, min_packets)
        rule = cls(snaplen, fine_keys, fine_allowed, coarse_keys, coarse_allowed)
        targets = rule.targets(packet_bytes, length)
        rule.stats = {
            "packets": len(packet_bytes),
            "layouts": len(fine_keys),
            "layout_groups": len(coarse_keys),
            "in_packet_bytes": int(inside.sum()),
            "target_bytes": int(targets.sum()),
            "excluded_always_zero_share": float(1.0 - targets.sum() / max(int(inside.sum()), 1)),
        }
        return rule

    def targets(self, packet_bytes: np.ndarray, length: np.ndarray) -> np.ndarray:
        """(..., S) bool target positions for packets shaped (..., S) with lengths (...)."""
        shape = packet_bytes.shape
        flat = packet_bytes.reshape(-1, shape[-1])
        fine, coarse = layout_keys(flat)
        allowed = np.ones((len(flat), self.snaplen), dtype=bool)  # unknown layouts: every in-packet byte
        _apply(allowed, coarse, self.coarse_keys, self.coarse_allowed)
        _apply(allowed, fine, self.fine_keys, self.fine_allowed)
        return allowed.reshape(shape) & in_packet(length, self.snaplen)

    def to_dict(self) -> dict[str, Any]:
        return {"snaplen": self.snaplen, "stats": self.stats}


def _allowed_by_key(
    keys: np.ndarray, inside: np.ndarray, nonzero: np.ndarray, zero_share: float, min_packets: int
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    unique, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    if not len(unique):
        return unique, np.zeros((0, inside.shape[1]), dtype=bool)
    inside_counts = np.add.reduceat(inside[order].astype(np.int32), starts, axis=0)  # (K, S)
    nonzero_counts = np.add.reduceat(nonzero[order].astype(np.int32), starts, axis=0)  # (K, S)
    allowed = nonzero_counts > zero_share * np.maximum(inside_counts, 1)  # (K, S)
    frequent = counts >= min_packets
    return unique[frequent], allowed[frequent]


def _apply(allowed: np.ndarray, keys: np.ndarray, table_keys: np.ndarray, table: np.ndarray) -> None:
    if not len(table_keys):
        return
    where = np.clip(np.searchsorted(table_keys, keys), 0, len(table_keys) - 1)
    known = table_keys[where] == keys
    allowed[known] = table[where[known]]


def mask_batch(
    packet_bytes: torch.Tensor,
    valid: torch.Tensor,
    targets: torch.Tensor,
    patch_bytes: int,
    mask_ratio: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide random tokens. Returns (masked input (B, N, S) int64 with MASK_TOKEN, loss positions (B, N, S) bool).

    A token is a candidate when its packet is valid and it holds at least one target position; each candidate is
    hidden with probability `mask_ratio`, and at least one per valid packet that has any candidate.
    """
    batch, packets, snaplen = packet_bytes.shape
    tokens = snaplen // patch_bytes
    token_targets = targets.reshape(batch, packets, tokens, patch_bytes)  # (B, N, T, patch)
    candidate = token_targets.any(dim=-1) & valid.unsqueeze(-1)  # (B, N, T)
    draw = torch.rand(candidate.shape, generator=generator)  # (B, N, T)
    hidden = candidate & (draw < mask_ratio)
    # a packet whose draw hid nothing hides its lowest-draw candidate: every valid packet teaches something
    lowest = torch.where(candidate, draw, torch.full_like(draw, 2.0)).argmin(-1, keepdim=True)  # (B, N, 1)
    forced = torch.zeros_like(hidden).scatter(-1, lowest, True) & candidate
    hidden = hidden | (forced & ~hidden.any(dim=-1, keepdim=True))
    hidden_bytes = hidden.unsqueeze(-1).expand(-1, -1, -1, patch_bytes).reshape(batch, packets, snaplen)
    mask_tokens = torch.full_like(packet_bytes, MASK_TOKEN, dtype=torch.long)  # (B, N, S)
    masked = torch.where(hidden_bytes, mask_tokens, packet_bytes.long())  # (B, N, S)
    return masked, hidden_bytes & targets


# ---------------------------------------------------------------- head and loss


class MaskedByteHead(nn.Module):
    """Predicts every byte of every token from the token, its packet in context and its connection."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.from_packet = nn.Linear(config.packet_dim, config.token_dim)
        self.from_connection = nn.Linear(config.embed_dim, config.token_dim)
        self.norm = nn.LayerNorm(config.token_dim)
        self.logits = nn.Linear(config.token_dim, config.patch_bytes * BYTE_VALUES)

    def forward(self, out: EncoderOutput) -> torch.Tensor:
        c = self.config
        packet_states = out.packet_states.reshape(-1, c.packet_dim)  # (B*N, Dp)
        packet_context = packet_states.index_select(0, out.packet_rows)  # (P, Dp)
        connection_rows = torch.div(out.packet_rows, c.max_packets, rounding_mode="floor")  # (P,)
        connection_context = out.connection_embedding.index_select(0, connection_rows)  # (P, E)
        context = self.from_packet(packet_context) + self.from_connection(connection_context)  # (P, Dt)
        x = self.norm(out.token_states + context.unsqueeze(1))  # (P, T, token_dim)
        return self.logits(F.gelu(x)).reshape(-1, c.snaplen, BYTE_VALUES)  # (P, S, 256)


class MaskedByteLoss(nn.Module):
    """Cross-entropy over the loss positions only; knows nothing of data or masking."""

    def forward(
        self, logits: torch.Tensor, original: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (P, S, 256), original (P, S) bytes, positions (P, S) bool → (loss, accuracy)."""
        chosen = logits[positions]  # (M, 256)
        truth = original[positions].long()  # (M,)
        if truth.numel() == 0:
            zero = logits.sum() * 0.0
            return zero, zero.detach()
        loss = F.cross_entropy(chosen, truth)
        accuracy = (chosen.argmax(dim=-1) == truth).float().mean()
        return loss, accuracy.detach()


class MaskedByteModel(nn.Module):
    """Encoder + head: the module pretraining optimises; only the encoder is kept."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.encoder = PacketEncoder(config)
        self.head = MaskedByteHead(config)
        self.loss = MaskedByteLoss()
        self.contrast_projection = nn.Sequential(
            nn.Linear(config.embed_dim, config.embed_dim),
            nn.GELU(),
            nn.Linear(config.embed_dim, config.embed_dim),
        )

    def forward(
        self,
        masked: torch.Tensor,
        original: torch.Tensor,
        positions: torch.Tensor,
        side: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked-byte loss, byte accuracy, connection embedding (B, E)) of one masked view."""
        direction, iat, length, valid = side
        out = self.encoder.encode(masked, direction, iat, length, valid)
        logits = self.head(out)  # (P, S, 256)
        snaplen = masked.shape[-1]
        rows = out.packet_rows
        flat_original = original.reshape(-1, snaplen).index_select(0, rows)  # (P, S)
        flat_positions = positions.reshape(-1, snaplen).index_select(0, rows)  # (P, S)
        loss, accuracy = self.loss(logits, flat_original, flat_positions)
        return loss, accuracy, out.connection_embedding


def connection_contrast(
    projection: nn.Module, first: torch.Tensor, second: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE: each connection's two views must find each other among the batch's connections."""
    a = F.normalize(projection(first), dim=-1)  # (B, E)
    b = F.normalize(projection(second), dim=-1)  # (B, E)
    logits = a @ b.T / temperature  # (B, B)
    labels = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


# ---------------------------------------------------------------- data


@dataclass
class PacketData:
    """Model inputs of the connections of one or more splits, concatenated; no labels."""

    arrays: dict[str, np.ndarray]
    sources: list[dict[str, Any]]

    @property
    def connections(self) -> int:
        return len(self.arrays["valid"])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_packets(datasets: Sequence[Path], split: str, config: EncoderConfig) -> PacketData:
    """Input arrays of `split` of every dataset (no label columns are read); empty connections are dropped."""
    if split == "test":
        raise ValueError("pretraining never reads the test split")
    parts: list[dict[str, np.ndarray]] = []
    sources: list[dict[str, Any]] = []
    for directory in datasets:
        path = Path(directory) / f"{split}.parquet"
        arrays = load_split(directory, split, columns=())
        _check_geometry(path, arrays["bytes"].shape, config)
        has_packets = arrays["valid"].any(axis=1)
        dropped = int((~has_packets).sum())
        if dropped:
            log.warning("%s: %d connections without packets skipped", path, dropped)
        parts.append({name: arrays[name][has_packets] for name in INPUT_NAMES})
        sources.append(
            {"path": str(path), "sha256": file_sha256(path), "connections": int(has_packets.sum())}
        )
        log.info("%s: %d connections", path, int(has_packets.sum()))
    merged = {name: np.concatenate([p[name] for p in parts]) for name in INPUT_NAMES}
    return PacketData(merged, sources)


def _check_geometry(path: Path, shape: tuple[int, ...], config: EncoderConfig) -> None:
    if tuple(shape[1:]) != (config.max_packets, config.snaplen):
        raise ValueError(
            f"{path}: packets are {shape[1]}x{shape[2]}, the encoder expects "
            f"{config.max_packets}x{config.snaplen} (max_packets x snaplen)"
        )


def _batch(data: PacketData, rows: np.ndarray) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(data.arrays[name][rows])) for name in INPUT_NAMES}


def _targets(rule: TargetRule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    targets = rule.targets(batch["bytes"].numpy(), batch["length"].numpy())
    return torch.from_numpy(targets) & batch["valid"].unsqueeze(-1)


# ---------------------------------------------------------------- training


def _learning_rate(step: int, total: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


@dataclass
class StepLoss:
    total: torch.Tensor  # what the optimiser minimises
    masked_bytes: float  # masked-byte cross-entropy of the first view (nats)
    accuracy: float  # byte accuracy of the first view
    contrast: float  # same-connection InfoNCE, 0 when not computed
    target_bytes: int  # loss positions of the first view


def _mask(
    batch: dict[str, torch.Tensor],
    valid: torch.Tensor,
    targets: torch.Tensor,
    config: PretrainConfig,
    patch_bytes: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask the packets marked in `valid` (a view may keep fewer packets than the connection has)."""
    view_targets = targets & valid.unsqueeze(-1)  # (B, N, S)
    return mask_batch(batch["bytes"], valid, view_targets, patch_bytes, config.mask_ratio, generator)


def second_view(
    batch: dict[str, torch.Tensor], config: PretrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, iat) of another view of the same connections: a random subset of packets, jittered timing."""
    valid = batch["valid"]
    keep = (torch.rand(valid.shape, generator=generator) < config.view_keep) & valid  # (B, N)
    first_packet = valid & (valid.cumsum(dim=1) == 1)  # (B, N)
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, first_packet)
    jitter = torch.exp(torch.randn(valid.shape, generator=generator) * config.view_iat_jitter)  # (B, N)
    return keep, batch["iat"] * jitter


def _step_loss(
    model: MaskedByteModel,
    batch: dict[str, torch.Tensor],
    rule: TargetRule,
    config: PretrainConfig,
    generator: torch.Generator,
    contrast: bool = True,
) -> StepLoss:
    """Masked-byte loss of one view; with `contrast`, also of a second view, plus the same-connection task."""
    patch_bytes = model.encoder.config.patch_bytes
    targets = _targets(rule, batch)
    masked, positions = _mask(batch, batch["valid"], targets, config, patch_bytes, generator)
    side = (batch["direction"], batch["iat"], batch["length"], batch["valid"])
    loss, accuracy, connection = model(masked, batch["bytes"], positions, side)
    if not contrast or config.contrast_weight <= 0:
        return StepLoss(loss, loss.item(), float(accuracy), 0.0, int(positions.sum()))
    valid_b, iat_b = second_view(batch, config, generator)
    masked_b, positions_b = _mask(batch, valid_b, targets, config, patch_bytes, generator)
    side_b = (batch["direction"], iat_b, batch["length"], valid_b)
    loss_b, _, connection_b = model(masked_b, batch["bytes"], positions_b, side_b)
    contrast_loss = connection_contrast(
        model.contrast_projection, connection, connection_b, config.contrast_temperature
    )
    total = 0.5 * (loss + loss_b) + config.contrast_weight * contrast_loss
    return StepLoss(total, loss.item(), float(accuracy), contrast_loss.item(), int(positions.sum()))


def held_out_loss(
    model: MaskedByteModel, data: PacketData, rule: TargetRule, config: PretrainConfig
) -> dict[str, float]:
    """Masked-byte loss and accuracy on held-out connections, with a fixed mask, next to a position-frequency
    baseline (the cross-entropy of predicting each target from its position's byte histogram)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    rows = np.arange(min(data.connections, config.eval_connections))
    total_loss, total_correct, total_count = 0.0, 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), config.batch_size):
            batch = _batch(data, rows[start : start + config.batch_size])
            step = _step_loss(model, batch, rule, config, generator, contrast=False)
            total_loss += step.masked_bytes * step.target_bytes
            total_correct += step.accuracy * step.target_bytes
            total_count += step.target_bytes
    model.train()
    return {
        "connections": len(rows),
        "target_bytes": total_count,
        "loss": total_loss / max(total_count, 1),
        "accuracy": total_correct / max(total_count, 1),
    }


def _target_values(data: PacketData, rule: TargetRule, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, byte values) of every target byte of the first `limit` connections."""
    rows = np.arange(min(data.connections, limit))
    packet_bytes = data.arrays["bytes"][rows]  # (B, N, S)
    targets = rule.targets(packet_bytes, data.arrays["length"][rows]) & data.arrays["valid"][rows][..., None]
    return np.nonzero(targets)[-1], packet_bytes[targets]


def position_baseline(train: PacketData, held_out: PacketData, rule: TargetRule, limit: int) -> float:
    """Cross-entropy (nats) of a per-position byte histogram, fit on train targets, on held-out targets.

    A model that does not beat it has learnt only which byte values are common where."""
    counts = np.ones((rule.snaplen, BYTE_VALUES))  # add-one smoothing
    positions, values = _target_values(train, rule, limit)
    np.add.at(counts, (positions, values), 1.0)
    probability = counts / counts.sum(axis=1, keepdims=True)  # (S, 256)
    positions, values = _target_values(held_out, rule, limit)
    return float(-np.log(probability[positions, values]).mean()) if len(values) else float("nan")


def pretrain(
    datasets: Sequence[Path],
    encoder_config: EncoderConfig,
    config: PretrainConfig,
    out: Path,
) -> dict[str, Any]:
    """Train, write `encoder.pt` and `loss_curve.json` into `out`; returns the training record."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train = load_packets(datasets, "train", encoder_config)
    if train.connections == 0:
        raise ValueError("the train splits hold no connection with packets")
    rule = _fit_target_rule(train, encoder_config, config, rng)
    log.info("target rule: %s", rule.stats)
    model = MaskedByteModel(encoder_config)
    model.train()
    steps_per_epoch = math.ceil(train.connections / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    step, curve, seconds = _train_steps(model, train, rule, config, rng, generator, steps_per_epoch, total)
    record: dict[str, Any] = {
        "objective": "masked-byte modelling"
        + (" + same-connection contrast" if config.contrast_weight > 0 else ""),
        "pretrain_config": asdict(config),
        "steps": step,
        "epochs_seen": step / steps_per_epoch,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "encoder_parameters": parameter_count(model.encoder),
        "train": train.sources,
        "target_rule": rule.to_dict(),
        "loss_curve": curve,
    }
    record["held_out"] = _held_out(model, datasets, train, rule, config, encoder_config)
    out.mkdir(parents=True, exist_ok=True)
    heads = {"head": model.head.state_dict(), "contrast_projection": model.contrast_projection.state_dict()}
    save_checkpoint(out / CHECKPOINT_NAME, model.encoder, record, heads)
    (out / LOSS_CURVE_NAME).write_text(json.dumps({"steps": step, "curve": curve}, indent=1) + "\n")
    log.info("wrote %s and %s", out / CHECKPOINT_NAME, out / LOSS_CURVE_NAME)
    return record


def _fit_target_rule(
    train: PacketData, encoder_config: EncoderConfig, config: PretrainConfig, rng: np.random.Generator
) -> TargetRule:
    """The target rule fitted on up to `config.rule_packets` valid training packets drawn with `rng`."""
    rule_rows = np.flatnonzero(train.arrays["valid"].reshape(-1))  # valid packets, flattened
    if len(rule_rows) > config.rule_packets:
        rule_rows = np.sort(rng.choice(rule_rows, config.rule_packets, replace=False))
    snaplen = encoder_config.snaplen
    return TargetRule.fit(
        train.arrays["bytes"].reshape(-1, snaplen)[rule_rows],
        train.arrays["length"].reshape(-1)[rule_rows],
        config.zero_share,
        config.min_layout_packets,
    )


def _train_steps(
    model: MaskedByteModel,
    train: PacketData,
    rule: TargetRule,
    config: PretrainConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
    steps_per_epoch: int,
    total: int,
) -> tuple[int, list[dict[str, float]], float]:
    """Run `total` optimiser steps over shuffled epochs; returns (steps taken, loss curve, seconds)."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    curve: list[dict[str, float]] = []
    window_loss, window_accuracy, window_contrast, window_steps = 0.0, 0.0, 0.0, 0
    started = time.monotonic()
    step = 0
    while step < total:
        order = rng.permutation(train.connections)
        for start in range(0, len(order), config.batch_size):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, total, config)
            batch = _batch(train, order[start : start + config.batch_size])
            if config.tool_invariance > 0:
                varied = vary_tool_fields(
                    {k: v.numpy() for k, v in batch.items()}, rng, config.tool_invariance
                )
                batch["bytes"], batch["length"] = (torch.from_numpy(varied[k]) for k in ("bytes", "length"))
            result = _optimiser_step(model, optimizer, batch, rule, config, generator)
            step += 1
            window_loss += result.masked_bytes
            window_accuracy += result.accuracy
            window_contrast += result.contrast
            window_steps += 1
            if step % config.log_every == 0 or step == total:
                point = {
                    "step": step,
                    "epoch": (step - 1) // steps_per_epoch + 1,
                    "loss": window_loss / window_steps,
                    "accuracy": window_accuracy / window_steps,
                    "contrast": window_contrast / window_steps,
                    "seconds": time.monotonic() - started,
                }
                curve.append(point)
                log.info(
                    "step %d/%d masked-byte loss %.4f accuracy %.3f contrast %.3f",
                    step,
                    total,
                    point["loss"],
                    point["accuracy"],
                    point["contrast"],
                )
                window_loss, window_accuracy, window_contrast, window_steps = 0.0, 0.0, 0.0, 0
    return step, curve, time.monotonic() - started


def _optimiser_step(
    model: MaskedByteModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    rule: TargetRule,
    config: PretrainConfig,
    generator: torch.Generator,
) -> StepLoss:
    """One optimiser step on `batch` with clipped gradients; returns the step's losses."""
    result = _step_loss(model, batch, rule, config, generator)
    optimizer.zero_grad(set_to_none=True)
    result.total.backward()
    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return result


def _held_out(
    model: MaskedByteModel,
    datasets: Sequence[Path],
    train: PacketData,
    rule: TargetRule,
    config: PretrainConfig,
    encoder_config: EncoderConfig,
) -> dict[str, Any] | None:
    present = [d for d in datasets if (Path(d) / "val.parquet").is_file()]
    if not present:
        return None
    val = load_packets(present, "val", encoder_config)
    if val.connections == 0:
        return None
    result: dict[str, Any] = held_out_loss(model, val, rule, config)
    result["position_baseline_loss"] = position_baseline(train, val, rule, 20_000)
    result["val"] = val.sources
    log.info("held-out: %s", {k: v for k, v in result.items() if k != "val"})
    return result


def run(
    datasets: Sequence[Path],
    config_name: str,
    out: Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """The `pretrain` command's work, callable from tests with a tiny config."""
    encoder_config = load_config(config_name)
    settings = PretrainConfig(
        seed=seed,
        max_steps=max_steps,
        **({"epochs": epochs} if epochs is not None else {}),
        **overrides,
    )
    return pretrain([Path(d) for d in datasets], encoder_config, settings, Path(out))
