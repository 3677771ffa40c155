"""The reasoner: mission knowledge-graph networks and a temporal Transformer over the originator's recent packets.

Owns the model (`Reasoner`), the dense form of the mission graphs it reasons over (`MissionGraphs`), its training
loop (`train_reasoner`) with the losses, and its checkpoint. Inputs are frozen: connection and packet embeddings
from the packet encoder, the alignment head g_P, and the text embeddings of every concept (all-MiniLM-L6-v2, then
g_T) — so concept nodes start from what the concept's words mean.

Forward pass for B connections:
1. Sensor node: z = g_P(connection embedding) (the language-aligned vector, also an output for explanations),
   s = tanh(W_s z), width `gnn_width` (8).
2. Per mission, concept nodes h⁰_c = tanh(W_c t_c), t_c the concept's aligned text embedding. Messages follow the
   mission's DAG (sensor → key concepts → associated concepts, plus the mission's extra edges): h_v = mean over
   parents u of (h_u ⊙ h⁰_v). The DAG is a dense row-normalised parent matrix and the propagation runs depth
   times, which reaches the DAG's fixpoint; only MatMul/Mul/Tanh are exported (no scatter, no index_add_).
   A concept's activation is sigmoid(⟨h_c, u⟩ + b) with u, b shared by all concepts (no per-concept bias to
   memorise); the embedding node of a mission is the mean of its leaf concepts.
3. Temporal Transformer (d = 128, 8 heads) over [the connection] + the A = 30 most recent packets of the same
   originator, empty slots masked; the connection token's final state summarises the originator's activity.
   A context slot is the packet's `packetclip.context.CONTEXT_FEATURES` (when, to whom, which port, which way,
   and what it was: protocol, TCP flags, payload size): the originator's behaviour, not its bytes. One layer by
   default, whose only query is the connection token. With `context_payload` the slot also carries the packet's
   embedding; off by default, because every earlier packet of an unfamiliar tool then pulls the verdict towards
   whatever the tool's bytes resemble (a flood of malformed SYNs read as an OS scan) while the timing and ports
   say flood. The connection's own bytes still reach the model through its embedding. The responder's recent
   inbound activity (`packetclip.context.RESPONDER_FEATURES`: how many connections and distinct sources reached
   it lately, how fast, how many went unanswered) is added to the connection token before it attends: a spoofed
   or reflected flood has no originator history, only a victim.
4. An MLP over the concatenated mission embeddings and the temporal state gives coarse and fine logits.

Losses: cross-entropy on coarse and fine classes; concept supervision (a concept listed for the true fine class in
its mission's `classes:` should be active, others not) so that activations mean what their names say; temporal
smoothing: the coarse distribution of a connection and of its originator's previous connection should agree
(squared difference, weighted), since an originator's activity changes class rarely between two connections.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.context import CONTEXT_FEATURES, CONTEXT_SLOTS, RESPONDER_FEATURES
from packetclip.missions import Mission
from packetclip_training.augment.tool_invariance import jitter_responder_rates
from packetclip_training.models.encoder import PADDING_BIAS, Block

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "packetclip.reasoner/1"
# all a reasoner may take, in this order
REASONER_INPUTS = ["connection", "context", "context_features", "context_valid", "responder_features"]


@dataclass(frozen=True)
class ReasonerConfig:
    """Architecture; every field is part of the checkpoint."""

    embed_dim: int = 128  # E: the packet encoder's embedding width
    aligned_dim: int = 256  # D: width of the language-aligned space (g_P's output)
    slots: int = CONTEXT_SLOTS  # A: context packets per connection
    context_features: int = len(CONTEXT_FEATURES)  # the first this many of CONTEXT_FEATURES (older models: 5)
    gnn_width: int = 8  # node width of the mission graphs, as PacketCLIP's reasoner
    temporal_dim: int = 128  # d of the temporal Transformer
    temporal_heads: int = 8
    # one layer: the connection token attends once over its context slots, whose features already say when, where
    # and what each earlier packet was; a second layer (the slots attending to each other first) cost 119 µs per
    # connection on one core against 44 µs for one (exported, lab capture)
    temporal_layers: int = 1
    temporal_ffn: int = 256
    hidden: int = 128  # width of the classification MLP
    dropout: float = 0.1  # on the MLP input: the temporal state is wide next to the 8-wide mission embeddings
    context_payload: bool = False  # context slots also carry the earlier packets' embeddings (docstring)
    # the first this many of RESPONDER_FEATURES join the connection token (0: a model from before them)
    responder_features: int = len(RESPONDER_FEATURES)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReasonerConfig:
        known = {f.name for f in fields(cls)}
        # checkpoints from before these options read payloads and no responder features
        values = {"context_payload": True, "responder_features": 0, **values}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def input_names(self) -> list[str]:
        """The inputs the exported reasoner takes (a reasoner that reads no payload has no `context`, one from
        before the responder features no `responder_features`)."""
        skipped = {"context"} if not self.context_payload else set()
        if not self.responder_features:
            skipped.add("responder_features")
        return [name for name in REASONER_INPUTS if name not in skipped]

    def context_inputs(
        self, context: np.ndarray, features: np.ndarray, valid: np.ndarray, responder: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The exported reasoner's context inputs by name (`SplitEmbeddings.context`'s four arrays): `context`
        only when it reads payloads, the features as wide as it reads (older reasoners: the first five)."""
        named = {
            "context": context,
            "context_features": features[..., : self.context_features],
            "context_valid": valid,
            "responder_features": responder[..., : self.responder_features],
        }
        return {name: value for name, value in named.items() if name in self.input_names}

    @property
    def feature_names(self) -> list[str]:
        """The context features the reasoner reads, as its bundle's manifest names them."""
        return list(CONTEXT_FEATURES[: self.context_features])

    @property
    def responder_feature_names(self) -> list[str]:
        """The responder features the reasoner reads, as its bundle's manifest names them."""
        return list(RESPONDER_FEATURES[: self.responder_features])


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_per_class: int = 20_000  # rows drawn per fine class per epoch: the data is flood-dominated
    min_per_class: int = 2_000  # small classes are drawn with replacement up to this many per epoch
    concept_weight: float = 0.2
    smoothing_weight: float = 0.1
    smoothing_window: float = 60.0  # seconds: a previous connection older than this is not smoothed towards
    # share of training rows whose packet embeddings (the connection's and, with `context_payload`, its
    # context's) are hidden, leaving only the context's timing/responder/port features: every attack tool leaves
    # its own byte fingerprint, and a model that can lean on bytes alone learns tools, not behaviours (see
    # `behaviour_dropout`). On by principle: a new tool's bytes are unfamiliar, its behaviour is not. Measured
    # on the default dataset (one training run each, and runs of one setting differ by several points of fine
    # top-1): with features-only context slots and the one-sided view, 0.0 gave 0.824 and 0.898, 0.3 gave 0.884;
    # an earlier model that also read context payloads gained nothing from 0.5
    behaviour_dropout: float = 0.3
    # train also on the originator-only view of every training connection (`augment.one_sided`): a flood whose
    # replies never reach the sensor must still read as a flood, not as the silent probes of a scan
    one_sided: bool = True
    # share of training connections whose tool-identifying header fields (the originator's ephemeral port and
    # TCP window; for another such share, the data its SYNs carry) are redrawn before they are embedded
    # (`augment.tool_invariance.vary_tool_fields`): a new tool's values are unfamiliar, its behaviour is not
    tool_invariance: float = 0.5
    # share of training rows towards a busy responder whose victim-side rate is rescaled by up to this factor
    # either way (`tool_invariance.jitter_responder_rates`): a tool's speed is its setting, not the attack
    rate_jitter: float = 0.5
    rate_jitter_factor: float = 4.0
    # share of each class's rows per epoch drawn from real captures where the class has any (with replacement, at
    # most `real_repeats` draws per real row on average): real benign traffic is 4 % of the benign rows and comes
    # from hundreds of applications the lab does not run; drawn at its share, the reasoner meets it rarely
    real_share: float = 0.0
    real_repeats: float = 4.0
    seed: int = 0


class MissionGraphs(nn.Module):
    """Dense, constant form of the mission DAGs: concept text embeddings, parent matrices, leaf masks."""

    concept_text: torch.Tensor  # a buffer: (K, T) every concept's aligned text embedding, in graph order

    def __init__(self, missions: Sequence[Mission], concept_text: np.ndarray):
        super().__init__()
        self.mission_names = [m.name for m in missions]
        self.concepts: list[dict[str, str]] = []
        parents_list, leaves_list, sizes = [], [], []
        for mission in missions:
            names = list(mission.concepts())
            position = {name: i + 1 for i, name in enumerate(names)}  # column 0 is the sensor node
            parents = np.zeros((len(names), len(names) + 1), np.float32)
            for source, target in mission.graph_edges():
                if target not in position:
                    continue
                parents[position[target] - 1, 0 if source == mission.name else position[source]] = 1.0
            has_child = parents[:, 1:].sum(axis=0) > 0
            parents /= np.maximum(parents.sum(axis=1, keepdims=True), 1.0)
            leaves = (~has_child).astype(np.float32)
            parents_list.append(parents)
            leaves_list.append(leaves / max(leaves.sum(), 1.0))
            sizes.append(len(names))
            for name in names:
                kind = "key" if name in mission.key_concepts else "associated"
                self.concepts.append({"mission": mission.name, "concept": name, "kind": kind})
        if concept_text.shape[0] != len(self.concepts):
            raise ValueError(f"{concept_text.shape[0]} concept embeddings for {len(self.concepts)} concepts")
        self.sizes = sizes
        self.depth = max((_depth(p) for p in parents_list), default=1)
        self.register_buffer("concept_text", torch.from_numpy(np.ascontiguousarray(concept_text, np.float32)))
        for i, (parents, leaves) in enumerate(zip(parents_list, leaves_list, strict=True)):
            self.register_buffer(f"parents_{i}", torch.from_numpy(parents))
            self.register_buffer(f"leaves_{i}", torch.from_numpy(leaves))

    def parents(self, i: int) -> torch.Tensor:
        return getattr(self, f"parents_{i}")

    def leaves(self, i: int) -> torch.Tensor:
        return getattr(self, f"leaves_{i}")


def _depth(parents: np.ndarray) -> int:
    """Longest path from the sensor in a parent matrix (column 0 = sensor), at least 1."""
    count = parents.shape[0]
    depth = np.zeros(count, np.int64)
    for _ in range(count):
        changed = False
        for node in range(count):
            sources = np.flatnonzero(parents[node])
            best = max((1 if s == 0 else depth[s - 1] + 1) for s in sources) if len(sources) else 1
            if best != depth[node]:
                depth[node], changed = best, True
        if not changed:
            break
    return int(depth.max()) if count else 1


class Reasoner(nn.Module):
    """See the module docstring. `forward` returns (coarse logits, fine logits, concept activations, aligned)."""

    def __init__(self, config: ReasonerConfig, graphs: MissionGraphs, packet_head: nn.Linear):
        super().__init__()
        c = config
        self.config = config
        self.graphs = graphs
        self.packet_head = packet_head  # g_P from alignment, frozen
        for parameter in self.packet_head.parameters():
            parameter.requires_grad_(False)
        self.sensor_projection = nn.Linear(c.aligned_dim, c.gnn_width)
        self.concept_projection = nn.Linear(graphs.concept_text.shape[1], c.gnn_width)
        self.activation_vector = nn.Parameter(torch.full((c.gnn_width,), 1.0 / math.sqrt(c.gnn_width)))
        self.activation_bias = nn.Parameter(torch.zeros(()))
        self.connection_token = nn.Linear(c.embed_dim, c.temporal_dim)
        self.responder_token = (
            nn.Linear(c.responder_features, c.temporal_dim) if c.responder_features else None
        )
        payload = c.embed_dim if c.context_payload else 0
        self.context_token = nn.Linear(payload + c.context_features, c.temporal_dim)
        self.slot_position = nn.Parameter(torch.zeros(1, c.slots + 1, c.temporal_dim))
        nn.init.normal_(self.slot_position, std=0.02)
        self.temporal = nn.ModuleList(
            Block(c.temporal_dim, c.temporal_heads, c.temporal_ffn) for _ in range(c.temporal_layers)
        )
        self.temporal_norm = nn.LayerNorm(c.temporal_dim)
        width = len(graphs.sizes) * c.gnn_width + c.temporal_dim
        self.head = nn.Sequential(
            nn.Dropout(c.dropout),
            nn.Linear(width, c.hidden),
            nn.GELU(),
            nn.Linear(c.hidden, len(COARSE_CLASSES) + len(FINE_CLASSES)),
        )

    def missions(self, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) aligned vectors → (mission embeddings (B, M·w), concept activations (B, K)).

        Node states are held as (B, w, k), concepts last, so that every product with a graph matrix has a
        constant 2-D right operand: one matrix product over all B·w rows, where (k, k+1) @ (B, k+1, w) would be
        B small products (and a product with a 1-D vector B·k of them) in onnxruntime.
        """
        sensor = torch.tanh(self.sensor_projection(aligned)).unsqueeze(2)  # (B, w, 1)
        initial = torch.tanh(self.concept_projection(self.graphs.concept_text))  # (K, w)
        weights = self.activation_vector.unsqueeze(1)  # (w, 1)
        embeddings, activations, start = [], [], 0
        for i, size in enumerate(self.graphs.sizes):
            h0 = initial[start : start + size].t().unsqueeze(0)  # (1, w, k)
            parents = self.graphs.parents(i).t()  # (k + 1, k)
            h = sensor * h0  # any start; depth rounds reach the DAG's fixpoint
            for _ in range(self.graphs.depth):
                nodes = torch.cat([sensor, h], dim=2)  # (B, w, k + 1)
                h = torch.matmul(nodes, parents) * h0  # mean over parents of h_u ⊙ h⁰_v
            activations.append(torch.sigmoid((h * weights).sum(dim=1) + self.activation_bias))  # (B, k)
            embeddings.append(torch.matmul(h, self.graphs.leaves(i).unsqueeze(1)).squeeze(2))  # (B, w)
            start += size
        return torch.cat(embeddings, dim=-1), torch.cat(activations, dim=-1)

    def temporal_state(
        self,
        connection: torch.Tensor,
        context: torch.Tensor | None,
        context_features: torch.Tensor,
        context_valid: torch.Tensor,
        responder_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, d): the connection token, with its responder's recent activity, after attending over the
        originator's recent packets."""
        first = self.connection_token(connection)  # (B, d)
        if self.responder_token is not None:
            assert responder_features is not None, "this reasoner reads responder features"
            first = first + self.responder_token(responder_features[..., : self.config.responder_features])
        first = first.unsqueeze(1)  # (B, 1, d)
        slot = context_features[..., : self.config.context_features]  # a model from before PACKET_FACTS: 5
        if self.config.context_payload:
            assert context is not None, "this reasoner reads the context packets' embeddings"
            slot = torch.cat([context, slot], dim=-1)
        rest = self.context_token(slot)  # (B, A, d)
        tokens = torch.cat([first, rest], dim=1) + self.slot_position  # (B, A + 1, d)
        present = torch.cat([torch.ones_like(context_valid[:, :1]), context_valid], dim=1).to(tokens.dtype)
        key_bias = ((1.0 - present) * PADDING_BIAS).reshape(-1, 1, 1, self.config.slots + 1)
        last = len(self.temporal) - 1
        for i, block in enumerate(self.temporal):
            # only the connection token's final state is read: the last layer computes that token alone
            tokens = block(tokens, key_bias, queries=1 if i == last else None)
        return self.temporal_norm(tokens[:, 0])

    def forward(
        self,
        connection: torch.Tensor,
        context: torch.Tensor | None,  # read only with `config.context_payload`
        context_features: torch.Tensor,
        context_valid: torch.Tensor,
        responder_features: torch.Tensor | None = None,  # read only with `config.responder_features`
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        aligned = F.normalize(self.packet_head(connection), dim=-1)
        mission_embeddings, activations = self.missions(aligned)
        state = self.temporal_state(connection, context, context_features, context_valid, responder_features)
        logits = self.head(torch.cat([mission_embeddings, state], dim=-1))
        coarse, fine = logits[:, : len(COARSE_CLASSES)], logits[:, len(COARSE_CLASSES) :]
        return coarse, fine, activations, aligned


class ReasonerSurface(nn.Module):
    """What the sensor runs: probabilities instead of logits (the exported graph)."""

    def __init__(self, reasoner: Reasoner):
        super().__init__()
        self.reasoner = reasoner

    def forward(self, connection, context, context_features, context_valid, responder_features=None):  # type: ignore[no-untyped-def]
        coarse, fine, concepts, aligned = self.reasoner(
            connection, context, context_features, context_valid, responder_features
        )
        return coarse.softmax(dim=-1), fine.softmax(dim=-1), concepts, aligned


# ---------------------------------------------------------------------------------------------- training


@dataclass
class TrainingArrays:
    """What one split contributes to training: inputs by row plus targets."""

    connection: np.ndarray  # float32 (n, E)
    # (rows, payload) → context arrays; without payload the context packets' embeddings are left out
    context: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    fine: np.ndarray  # int64 (n,) index into the fine classes trained on (-1: not trained on)
    previous: np.ndarray  # int64 (n,) previous connection of the same originator, -1 none
    previous_age: np.ndarray  # float64 (n,) seconds since that previous connection started
    real: np.ndarray | None = None  # bool (n,): the row comes from a real capture (None: unknown, all lab)


def concept_targets(graphs: MissionGraphs, missions: Sequence[Mission], classes: Sequence[str]) -> np.ndarray:
    """(C, K) 1 where a concept is listed for a fine class in its mission's `classes:` mapping."""
    column = {(c["mission"], c["concept"]): i for i, c in enumerate(graphs.concepts)}
    targets = np.zeros((len(classes), len(graphs.concepts)), np.float32)
    for mission in missions:
        for fine, words in mission.classes.items():
            if fine in classes:
                for word in words:
                    if (mission.name, word) in column:
                        targets[list(classes).index(fine), column[(mission.name, word)]] = 1.0
    return targets


def epoch_rows(
    fine: np.ndarray, config: TrainConfig, rng: np.random.Generator, real: np.ndarray | None = None
) -> np.ndarray:
    """One epoch's rows: ≤ max_per_class of each class, small classes drawn with replacement to min_per_class;
    with `real` (bool per row) and `config.real_share`, that share of each class's draw comes from its real rows
    (at most `real_repeats` times their number), the rest from its other rows."""
    picked = []
    for label in np.unique(fine[fine >= 0]):
        rows = np.flatnonzero(fine == label)
        if len(rows) >= config.max_per_class:
            count, replace = config.max_per_class, False
        elif len(rows) >= config.min_per_class:
            count, replace = len(rows), None  # every row once
        else:
            count, replace = config.min_per_class, True
        real_rows = rows[real[rows]] if real is not None and config.real_share > 0 else rows[:0]
        other = rows[~real[rows]] if real is not None and len(real_rows) else rows
        wanted = min(round(config.real_share * count), int(config.real_repeats * len(real_rows)))
        if len(real_rows) and len(other) and wanted > 0:
            picked.append(rng.choice(real_rows, wanted, replace=wanted > len(real_rows)))
            rest = count - wanted
            picked.append(rng.choice(other, rest, replace=rest > len(other)))
        elif replace is None:
            picked.append(rows)
        else:
            picked.append(rng.choice(rows, count, replace=replace))
    order = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return rng.permutation(order)


def _tensors(model: Reasoner, data: TrainingArrays, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    context, features, valid, responder = data.context(rows, model.config.context_payload)
    return (
        torch.from_numpy(data.connection[rows]),
        torch.from_numpy(context),
        torch.from_numpy(features),
        torch.from_numpy(valid),
        torch.from_numpy(responder),
    )


def behaviour_dropout(
    inputs: tuple[torch.Tensor, ...], share: float, rng: np.random.Generator
) -> tuple[torch.Tensor, ...]:
    """Zero the connection and context packet embeddings of a random `share` of the rows (context and responder
    features stay)."""
    if share <= 0:
        return inputs
    connection, context, *rest = inputs
    hidden = torch.from_numpy(rng.random(len(connection)) < share)
    if not hidden.any():
        return inputs
    keep = (~hidden).to(connection.dtype)
    return connection * keep[:, None], context * keep[:, None, None], *rest


def rate_jitter(
    inputs: tuple[torch.Tensor, ...], config: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, ...]:
    """The reasoner's inputs with the responder features' rates jittered (`jitter_responder_rates`)."""
    if config.rate_jitter <= 0:
        return inputs
    *rest, responder = inputs
    jittered = jitter_responder_rates(responder.numpy(), rng, config.rate_jitter, config.rate_jitter_factor)
    return *rest, torch.from_numpy(jittered)


def train_reasoner(
    model: Reasoner,
    train: TrainingArrays,
    classes: Sequence[str],
    targets: np.ndarray,
    config: TrainConfig,
    on_epoch: Callable[[int, Reasoner], dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Train in place; `classes` are the fine classes trained on (all, or all but an unseen one)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    coarse_index = torch.tensor([COARSE_CLASSES.index(FINE_TO_COARSE[f]) for f in classes])
    fine_index = torch.tensor([FINE_CLASSES.index(f) for f in classes])
    concept_target = torch.from_numpy(targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(
        1, math.ceil(len(epoch_rows(train.fine, config, rng, train.real)) / config.batch_size)
    )
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=total)
    curve: list[dict[str, Any]] = []
    started, step = time.monotonic(), 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        rows = epoch_rows(train.fine, config, rng, train.real)
        sums = np.zeros(4)
        for start in range(0, len(rows), config.batch_size):
            if step >= total:
                break
            batch = rows[start : start + config.batch_size]
            label = torch.from_numpy(train.fine[batch])
            inputs = behaviour_dropout(_tensors(model, train, batch), config.behaviour_dropout, rng)
            inputs = rate_jitter(inputs, config, rng)
            coarse, fine, activations, _ = model(*inputs)
            coarse_loss = F.cross_entropy(coarse, coarse_index[label])
            # fine logits of classes not trained on (an unseen class) are left out of the softmax
            fine_loss = F.cross_entropy(fine[:, fine_index], label)
            concept_loss = F.binary_cross_entropy(activations, concept_target[label])
            smoothing = _smoothing(model, train, batch, coarse, config)
            loss = (
                coarse_loss
                + fine_loss
                + config.concept_weight * concept_loss
                + config.smoothing_weight * smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            sums += [float(v.detach()) for v in (coarse_loss, fine_loss, concept_loss, smoothing)]
        batches = max(1, math.ceil(len(rows) / config.batch_size))
        point: dict[str, Any] = {
            "epoch": epoch,
            "coarse_loss": sums[0] / batches,
            "fine_loss": sums[1] / batches,
            "concept_loss": sums[2] / batches,
            "smoothing": sums[3] / batches,
            "seconds": round(time.monotonic() - started, 1),
        }
        model.eval()
        if on_epoch is not None:
            point.update(on_epoch(epoch, model))
        curve.append(point)
        log.info("reasoner epoch %d: %s", epoch, point)
    return curve


def _smoothing(
    model: Reasoner, data: TrainingArrays, batch: np.ndarray, coarse: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """Mean squared difference between a connection's coarse distribution and its predecessor's."""
    if config.smoothing_weight <= 0:
        return torch.zeros(())
    previous = data.previous[batch]
    usable = (previous >= 0) & (data.previous_age[batch] <= config.smoothing_window)
    if not usable.any():
        return torch.zeros(())
    with torch.no_grad():  # the predecessor is a fixed anchor; gradients flow through the current connection
        anchor = model(*_tensors(model, data, previous[usable]))[0].softmax(dim=-1)
    current = coarse[torch.from_numpy(np.flatnonzero(usable))].softmax(dim=-1)
    return ((current - anchor) ** 2).sum(dim=-1).mean()


@torch.inference_mode()
def predict(model: Reasoner, data: TrainingArrays, rows: np.ndarray | None = None, batch_size: int = 1024):
    """(coarse probabilities (n, 4), fine probabilities (n, 11), concept activations (n, K), aligned (n, D))."""
    model.eval()
    surface = ReasonerSurface(model)
    rows = np.arange(len(data.connection)) if rows is None else rows
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for start in range(0, len(rows), batch_size):
        outputs = surface(*_tensors(model, data, rows[start : start + batch_size]))
        for part, output in zip(parts, outputs, strict=True):
            part.append(output.numpy())
    return tuple(np.concatenate(p) if p else np.zeros((0, 0), np.float32) for p in parts)


def save_reasoner(path: Path, model: Reasoner, missions: Sequence[Mission], record: dict[str, Any]) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.config),
        "missions": [m.to_dict() for m in missions],
        "concept_text": model.graphs.concept_text.numpy(),
        "packet_head": {"in": model.packet_head.in_features, "out": model.packet_head.out_features},
        "state_dict": model.state_dict(),
        "record": record,
    }
    torch.save(payload, path)


def load_reasoner(path: Path) -> tuple[Reasoner, list[Mission], dict[str, Any]]:
    from packetclip.missions import parse_mission

    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a reasoner checkpoint (format {payload.get('format')!r})")
    missions = [parse_mission(m, f"{path}:{m['name']}") for m in payload["missions"]]
    graphs = MissionGraphs(missions, payload["concept_text"])
    head = nn.Linear(payload["packet_head"]["in"], payload["packet_head"]["out"])
    model = Reasoner(ReasonerConfig.from_dict(payload["config"]), graphs, head)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, missions, payload


REASONER_OUTPUTS = ["coarse", "fine", "concepts", "aligned"]
ONNX_OPSET = 17


class _NamedInputs(nn.Module):
    """The surface with exactly the inputs the model reads, in `names` order (the exported signature)."""

    def __init__(self, surface: ReasonerSurface, names: list[str]):
        super().__init__()
        self.surface = surface
        self.names = names

    def forward(self, *tensors):  # type: ignore[no-untyped-def]
        given = dict(zip(self.names, tensors, strict=True))
        return self.surface(*(given.get(name) for name in REASONER_INPUTS))


def export_reasoner(model: Reasoner, path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Export the probability surface with a dynamic batch axis; returns torch's outputs for `inputs`.

    `inputs` holds at least `model.config.input_names` (≥ 2 rows, so no batch size is baked in): those become
    the parity fixture the bundle writer checks and the graph's inputs, in that order.
    """
    import warnings

    if len(inputs["connection"]) < 2:
        raise ValueError("the reasoner fixture needs at least 2 rows")
    names = model.config.input_names
    surface = _NamedInputs(ReasonerSurface(model).eval(), names)
    tensors = tuple(torch.from_numpy(np.require(inputs[name], requirements=["W", "C"])) for name in names)
    with torch.no_grad():
        expected = {name: t.numpy() for name, t in zip(REASONER_OUTPUTS, surface(*tensors), strict=True)}
    dynamic = {name: {0: "batch"} for name in names + REASONER_OUTPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            surface,
            tensors,
            str(path),
            input_names=names,
            output_names=REASONER_OUTPUTS,
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return expected


def reasoner_flops(model: Reasoner) -> int:
    """FLOPs of one connection through the reasoner with a full context (the most it costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    c = model.config
    inputs = (
        torch.zeros(1, c.embed_dim),
        torch.zeros(1, c.slots, c.embed_dim),
        torch.zeros(1, c.slots, c.context_features),
        torch.ones(1, c.slots, dtype=torch.bool),
        torch.zeros(1, c.responder_features),
    )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(*inputs)
    return int(counter.get_total_flops())
