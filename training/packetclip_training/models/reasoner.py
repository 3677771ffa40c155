"""The reasoner's network: mission knowledge-graph networks and a temporal Transformer over recent packets.

Owns the model (`Reasoner`), its architecture (`ReasonerConfig`, and the inputs it may take,
`REASONER_INPUTS`), the dense form of the mission graphs it reasons over (`MissionGraphs`) and the probability
surface the bundle exports (`ReasonerSurface`, and `_NamedInputs`, its signature as exported). Does not own the
training loop, the losses, the checkpoint or the export (`reasoner.model`), embeddings and contexts
(`reasoner.data`), the packet encoder (`models.encoder`) or the alignment head g_P it is given (`models.heads`).
Inputs are frozen: connection and packet embeddings from the packet encoder, the alignment head g_P, and the text
embeddings of every concept (all-MiniLM-L6-v2, then g_T) — so concept nodes start from what the concept's words
mean.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
from packetclip.context import CONTEXT_FEATURES, CONTEXT_SLOTS, RESPONDER_FEATURES
from packetclip.missions import Mission
from packetclip_training.models.encoder import PADDING_BIAS, Block

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


class _NamedInputs(nn.Module):
    """The surface with exactly the inputs the model reads, in `names` order (the exported signature)."""

    def __init__(self, surface: ReasonerSurface, names: list[str]):
        super().__init__()
        self.surface = surface
        self.names = names

    def forward(self, *tensors):  # type: ignore[no-untyped-def]
        given = dict(zip(self.names, tensors, strict=True))
        return self.surface(*(given.get(name) for name in REASONER_INPUTS))
