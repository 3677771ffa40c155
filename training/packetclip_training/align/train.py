"""Language alignment of PacketCLIP: the description pool, the training loop of the heads and their checkpoint.

Owns the description pool (a bounded set of distinct descriptions per connection bucket, so the frozen text
encoder runs once per distinct text), `train_alignment` and the heads' checkpoint (`save_heads`, `load_heads`).
Does not own the networks it trains (the heads `AlignmentHeads` and the loss `SymmetricInfoNCE`, in
`models.heads`), the packet encoder (frozen here; see `models.encoder`), the text encoder (`text`), the wording
of descriptions (`describe`) or the zero-shot evaluation (`align.zeroshot`).

Both encoders are frozen, so the loop trains on cached embeddings: connection embeddings are computed once per
connection, text embeddings once per distinct description.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from packetclip_training.describe.describe import describe_connection
from packetclip_training.describe.facts import FactsError
from packetclip_training.models.encoder import PacketEncoder, batch_tensors
from packetclip_training.models.heads import AlignmentHeads, SymmetricInfoNCE

log = logging.getLogger(__name__)

ALIGN_FORMAT = "packetclip-align-1"


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
    # weight of the class-aware target (`SymmetricInfoNCE`): 0 is CLIP's one positive per pair, 1 makes every pair
    # of the batch with the same fine class a positive. With CLIP's target, connections of one class described in
    # other words are negatives of each other; on the default dataset 1 raised test zero-shot top-1 from 0.450 to
    # 0.680 (seed 0) and from 0.548 to 0.716 (seed 1), docs/models.md
    class_weight: float = 1.0


def train_alignment(
    packet_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    choices: Sequence[np.ndarray],
    config: AlignConfig,
    on_epoch: Callable[[int, AlignmentHeads], dict[str, float]] | None = None,
    labels: np.ndarray | None = None,
) -> tuple[AlignmentHeads, list[dict[str, Any]]]:
    """Train the heads on cached embeddings; each epoch pairs every connection with one of its descriptions.

    `on_epoch(epoch, heads)` may return extra numbers (e.g. validation accuracy) recorded in the curve. `labels`
    (one integer class per connection) are what `config.class_weight` groups by; needed when it is above 0.
    """
    if config.class_weight > 0 and (labels is None or len(labels) != len(choices)):
        raise ValueError("class_weight above 0 needs one label per connection")
    classes = torch.from_numpy(np.asarray(labels, np.int64)) if labels is not None else None
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    heads = AlignmentHeads(
        packet_embeddings.shape[1], text_embeddings.shape[1], config.heads, config.shared_dim, config.seed
    )
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
            loss = loss_fn(
                heads.project_packets(packets[rows]),
                heads.project_texts(texts[text_rows]),
                heads.logit_scale(),
                None if classes is None else classes[rows],
                config.class_weight,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            heads.clamp_()
            losses.append(float(loss.detach()))
        heads.eval()
        point: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "logit_scale": float(heads.logit_scale().detach()),
        }
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


def recorded_config(payload: dict[str, Any]) -> AlignConfig:
    """The settings a heads checkpoint (`load_heads`'s payload) was trained with; a setting it does not record
    predates it and was off (class-aware targets: weight 0)."""
    recorded = payload.get("record", {}).get("config", {})
    known = {item.name for item in fields(AlignConfig)}
    return AlignConfig(**{"class_weight": 0.0, **{k: v for k, v in recorded.items() if k in known}})
