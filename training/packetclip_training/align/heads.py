"""Language alignment of PacketCLIP: the SSL heads g_P and g_T, the symmetric InfoNCE loss and its training loop.

Owns the heads (`AlignmentHeads`, with the ablation settings none / packet / both), the loss (`SymmetricInfoNCE`,
an nn.Module that knows nothing of data), the description pool (a bounded set of distinct descriptions per
connection bucket, so the frozen text encoder runs once per distinct text), and `train_alignment`.
Does not own the packet encoder (frozen here; see `models.encoder`), the text encoder (`text`), the wording of
descriptions (`describe`) or the zero-shot evaluation (`align.zeroshot`).

Both encoders are frozen, so the loop trains on cached embeddings: connection embeddings are computed once per
connection, text embeddings once per distinct description.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from packetclip_training.describe.describe import describe_connection
from packetclip_training.describe.facts import FactsError
from packetclip_training.models.encoder import PacketEncoder, batch_tensors

log = logging.getLogger(__name__)

HEAD_SETTINGS = ("none", "packet", "both")
FACT_COLUMNS = ("duration", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes", "conn_state", "history",
                "service", "proto", "resp_p")  # fmt: skip
ALIGN_FORMAT = "packetclip-align-1"

# CLIP's bounds on the logit scale 1/τ: below 1 the softmax is nearly flat, above 100 training becomes unstable
MIN_LOGIT_SCALE = 1.0
MAX_LOGIT_SCALE = 100.0
INITIAL_LOGIT_SCALE = 1.0 / 0.07  # CLIP's starting temperature


class AlignmentHeads(nn.Module):
    """g_P and g_T: linear maps of connection and text embeddings into one shared space.

    `heads` selects the ablation:
    - "both": g_P (packet_dim → shared_dim) and g_T (text_dim → shared_dim), both learned;
    - "packet": only g_P is learned, packet_dim → text_dim; the text embedding is used as it is;
    - "none": nothing is learned but the temperature. The two sides have different widths, so the packet side
      goes through a fixed random projection (seeded Gaussian, scaled by 1/sqrt(packet_dim), registered as a
      buffer and never trained) into the text space; where the widths match, nothing is projected.
    """

    fixed_projection: torch.Tensor  # a buffer, registered only for "none" with unequal widths

    def __init__(
        self, packet_dim: int, text_dim: int, heads: str = "both", shared_dim: int = 256, seed: int = 0
    ):
        super().__init__()
        if heads not in HEAD_SETTINGS:
            raise ValueError(f"heads must be one of {', '.join(HEAD_SETTINGS)}, not {heads!r}")
        self.heads = heads
        self.packet_dim, self.text_dim = packet_dim, text_dim
        self.packet_head: nn.Module = nn.Identity()
        self.text_head: nn.Module = nn.Identity()
        if heads == "both":
            self.packet_head = nn.Linear(packet_dim, shared_dim)
            self.text_head = nn.Linear(text_dim, shared_dim)
        elif heads == "packet":
            self.packet_head = nn.Linear(packet_dim, text_dim)
        elif packet_dim != text_dim:
            generator = torch.Generator().manual_seed(seed)
            fixed = torch.randn(packet_dim, text_dim, generator=generator) / math.sqrt(packet_dim)
            self.register_buffer("fixed_projection", fixed)
        # the learned temperature lives here so a checkpoint of the heads is all zero-shot needs
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(INITIAL_LOGIT_SCALE)))

    def project_packets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, packet_dim) → (B, D) unit vectors in the shared space."""
        if hasattr(self, "fixed_projection"):
            return F.normalize(embeddings @ self.fixed_projection, dim=-1)
        return F.normalize(self.packet_head(embeddings), dim=-1)

    def project_texts(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(T, text_dim) → (T, D) unit vectors in the shared space."""
        return F.normalize(self.text_head(embeddings), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """1/τ, clamped to [MIN_LOGIT_SCALE, MAX_LOGIT_SCALE] (gradients stop at the bounds)."""
        return self.log_logit_scale.exp().clamp(MIN_LOGIT_SCALE, MAX_LOGIT_SCALE)

    def clamp_(self) -> None:
        """Keep the raw parameter inside the bounds too, so it cannot drift far past them unseen."""
        with torch.no_grad():
            self.log_logit_scale.clamp_(math.log(MIN_LOGIT_SCALE), math.log(MAX_LOGIT_SCALE))


class SymmetricInfoNCE(nn.Module):
    """CLIP's loss: mean of the packet→text and text→packet cross-entropies over a batch of matching pairs.

    Row i of `packets` and row i of `texts` are a positive pair; every other row of the batch is a negative.
    Inputs are expected L2-normalised; `logit_scale` is 1/τ.
    """

    def forward(self, packets: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        logits = logit_scale * packets @ texts.T  # (B, B)
        targets = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


@torch.inference_mode()
def connection_embeddings(
    encoder: PacketEncoder, arrays: Mapping[str, np.ndarray], batch_size: int = 512
) -> np.ndarray:
    """Frozen f_P over every connection of `arrays` (a `load_split` result) → float32 (B, embed_dim)."""
    encoder.eval()
    tensors = batch_tensors(dict(arrays))
    count = tensors[0].shape[0]
    out = [encoder(*(t[i : i + batch_size] for t in tensors))[1].numpy() for i in range(0, count, batch_size)]
    return (
        np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.config.embed_dim), np.float32)
    )


def _magnitude(value: object) -> int:
    """Order of magnitude of a count (0 for 0 or missing), so buckets group connections of similar size."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1
    return 0 if not math.isfinite(number) or number <= 0 else int(math.log2(number + 1.0))


def bucket_key(fine: str, facts: Mapping[str, object]) -> tuple[object, ...]:
    """Connections sharing a key share a pool of descriptions: same class, protocol, state, service, sizes."""
    return (
        fine,
        str(facts.get("proto") or ""),
        str(facts.get("conn_state") or ""),
        str(facts.get("service") or ""),
        _magnitude(facts.get("orig_pkts")),
        _magnitude(facts.get("resp_pkts")),
    )


@dataclass
class DescriptionPool:
    """Distinct descriptions and, per connection, which of them may describe it."""

    texts: list[str]  # every distinct description, encoded once
    choices: list[np.ndarray]  # per connection: indices into `texts` (its bucket's descriptions)
    skipped: int = 0  # connections whose facts could not be described (counted, left out of training)
    kept: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )  # row indices of described connections


def build_description_pool(
    fine: Sequence[str], facts: Sequence[Mapping[str, object]], per_bucket: int, seed: int
) -> DescriptionPool:
    """`per_bucket` descriptions per bucket, each written from the facts of a random member of that bucket."""
    rng = random.Random(seed)
    members: dict[tuple[object, ...], list[int]] = {}
    for row, (label, record) in enumerate(zip(fine, facts, strict=True)):
        members.setdefault(bucket_key(label, record), []).append(row)
    texts: list[str] = []
    index_of: dict[str, int] = {}
    bucket_texts: dict[tuple[object, ...], np.ndarray] = {}
    for key, rows in members.items():
        chosen: list[int] = []
        for _ in range(per_bucket * 3):  # a few extra tries: some draws repeat a text or hit malformed facts
            if len(chosen) >= per_bucket:
                break
            row = rng.choice(rows)
            try:
                text = describe_connection(facts[row], str(key[0]), rng)
            except FactsError:
                continue
            if text not in index_of:
                index_of[text] = len(texts)
                texts.append(text)
            if index_of[text] not in chosen:
                chosen.append(index_of[text])
        if chosen:
            bucket_texts[key] = np.asarray(chosen, np.int64)
    choices, kept, skipped = [], [], 0
    for row, (label, record) in enumerate(zip(fine, facts, strict=True)):
        key = bucket_key(label, record)
        if key not in bucket_texts:
            skipped += 1
            continue
        choices.append(bucket_texts[key])
        kept.append(row)
    if skipped:
        log.warning(
            "%d connections have facts no description can be written from; left out of alignment", skipped
        )
    log.info(
        "%d distinct descriptions over %d buckets for %d connections",
        len(texts),
        len(bucket_texts),
        len(kept),
    )
    return DescriptionPool(texts, choices, skipped, np.asarray(kept, np.int64))


@dataclass
class AlignConfig:
    heads: str = "both"  # ablation setting, see AlignmentHeads
    shared_dim: int = 256  # width of the shared space when both heads are learned
    epochs: int = 20
    batch_size: int = 256  # InfoNCE negatives per positive; larger is a harder, more informative task
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_alignment(
    packet_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    choices: Sequence[np.ndarray],
    config: AlignConfig,
    on_epoch: Callable[[int, AlignmentHeads], dict[str, float]] | None = None,
) -> tuple[AlignmentHeads, list[dict[str, Any]]]:
    """Train the heads on cached embeddings; each epoch pairs every connection with one of its descriptions.

    `on_epoch(epoch, heads)` may return extra numbers (e.g. validation accuracy) recorded in the curve.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    heads = AlignmentHeads(packet_embeddings.shape[1], text_embeddings.shape[1], config.heads, config.shared_dim,
                           config.seed)  # fmt: skip
    loss_fn = SymmetricInfoNCE()
    optimizer = torch.optim.AdamW(
        heads.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    packets, texts = torch.from_numpy(packet_embeddings), torch.from_numpy(text_embeddings)
    curve: list[dict[str, Any]] = []
    for epoch in range(1, config.epochs + 1):
        heads.train()
        order = rng.permutation(len(choices))
        picked = np.asarray([rng.choice(choices[i]) for i in order], np.int64)
        losses = []
        for start in range(0, len(order) - 1, config.batch_size):
            rows, text_rows = (
                order[start : start + config.batch_size],
                picked[start : start + config.batch_size],
            )
            if len(rows) < 2:  # a single pair has no negatives
                continue
            loss = loss_fn(heads.project_packets(packets[rows]), heads.project_texts(texts[text_rows]),
                           heads.logit_scale())  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            heads.clamp_()
            losses.append(float(loss.detach()))
        heads.eval()
        point: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                                 "logit_scale": float(heads.logit_scale().detach())}  # fmt: skip
        if on_epoch is not None:
            point.update(on_epoch(epoch, heads))
        curve.append(point)
        log.info("epoch %d: %s", epoch, point)
    return heads, curve


def save_heads(path: Any, heads: AlignmentHeads, record: dict[str, Any]) -> None:
    """Write what rebuilds the heads (widths, setting, weights) and how they were trained."""
    payload = {
        "format": ALIGN_FORMAT,
        "packet_dim": heads.packet_dim,
        "text_dim": heads.text_dim,
        "heads": heads.heads,
        "shared_dim": getattr(heads.text_head, "out_features", heads.text_dim),
        "state_dict": heads.state_dict(),
        "record": record,
    }
    torch.save(payload, path)


def load_heads(path: Any) -> tuple[AlignmentHeads, dict[str, Any]]:
    """Rebuild saved heads in eval mode; returns (heads, full payload)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != ALIGN_FORMAT:
        raise ValueError(f"{path}: not an alignment checkpoint (format {payload.get('format')!r})")
    heads = AlignmentHeads(
        payload["packet_dim"], payload["text_dim"], payload["heads"], payload["shared_dim"]
    )
    heads.load_state_dict(payload["state_dict"])
    heads.eval()
    return heads, payload
