"""The alignment heads g_P and g_T and CLIP's symmetric InfoNCE loss: the networks of the `align` stage.

Owns the heads (`AlignmentHeads`, with the ablation settings none / packet / both, and the learned temperature
1/τ that zero-shot scoring reads from them) and the loss (`SymmetricInfoNCE`, an nn.Module that knows nothing of
data). Does not own the description pool, the training loop or the heads' checkpoint (`align.train`), the
zero-shot evaluation (`align.zeroshot`), the packet encoder (`models.encoder`) or the text encoder (`text`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_SETTINGS = ("none", "packet", "both")

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
    With `labels` (one class per pair) and `class_weight` w > 0, the target of row i is (1 − w) on its own pair
    plus w spread evenly over every pair of its class, its own included: pairs of one class stop being pushed
    apart (with w = 1 this is UniCL's label-aware target, Yang et al., "Unified Contrastive Learning in
    Image-Text-Label Space", CVPR 2022). Inputs are expected L2-normalised; `logit_scale` is 1/τ.
    """

    def forward(
        self,
        packets: torch.Tensor,
        texts: torch.Tensor,
        logit_scale: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_weight: float = 0.0,
    ) -> torch.Tensor:
        logits = logit_scale * packets @ texts.T  # (B, B)
        if labels is None or class_weight <= 0:
            targets = torch.arange(logits.shape[0], device=logits.device)
            return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        same = (labels[:, None] == labels[None, :]).to(logits.dtype)
        eye = torch.eye(len(labels), dtype=logits.dtype, device=logits.device)
        soft = (1.0 - class_weight) * eye + class_weight * same / same.sum(dim=1, keepdim=True)
        # `same` is symmetric and so is each row's share, so the text→packet targets are the same matrix
        return 0.5 * (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft))
