"""Helpers several test folders share (not a test module): a stand-in text encoder and tiny trained bundles.

Imported as `tests.support` (tests is a package; see tests/__init__.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO / "samples" / "dataset-default"


def hashed_text_vectors(texts: list[str], dim: int = 384) -> np.ndarray:
    """Deterministic stand-in for the text encoder: a bag of hashed words, so shared words mean similar vectors."""
    out = np.zeros((len(texts), dim), np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    return out


def train_tiny_checkpoints(
    work: Path,
    encode: Callable[[list[str]], np.ndarray] = hashed_text_vectors,
    context_payload: bool = False,
    context_features: int | None = None,
    responder_features: int | None = None,
) -> Path:
    """encoder.pt, align.pt and reasoner.pt in `work`: a tiny random encoder, untrained heads and a reasoner
    trained one short epoch on the committed dataset sample. Their verdicts mean little; their files are real.
    `context_payload`, `context_features` (the first so many `CONTEXT_FEATURES`) and `responder_features` (0: none)
    make a reasoner like older bundles'."""
    import torch

    from packetclip.missions import load_missions
    from packetclip_training.align.train import save_heads
    from packetclip_training.models.encoder import PacketEncoder, load_config, save_checkpoint
    from packetclip_training.models.heads import AlignmentHeads
    from packetclip_training.models.reasoner import ReasonerConfig
    from packetclip_training.reasoner.data import embed_split
    from packetclip_training.reasoner.fit import concept_embeddings, fit_reasoner
    from packetclip_training.reasoner.model import TrainConfig, save_reasoner

    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoder = PacketEncoder(load_config("tiny")).eval()
    save_checkpoint(work / "encoder.pt", encoder, {"objective": "none (test)"})
    heads = AlignmentHeads(encoder.config.embed_dim, 384, "both")
    save_heads(work / "align.pt", heads, {"test": True})
    missions = load_missions()
    train = embed_split(encoder, SAMPLE_DATASET, "train")
    concepts = concept_embeddings(missions, heads, encode)
    settings = TrainConfig(epochs=1, min_per_class=20, max_per_class=40)
    config = ReasonerConfig(
        embed_dim=encoder.config.embed_dim,
        aligned_dim=heads.packet_head.out_features,
        context_payload=context_payload,
        **({} if context_features is None else {"context_features": context_features}),
        **({} if responder_features is None else {"responder_features": responder_features}),
    )
    fit = fit_reasoner(train, None, heads, missions, concepts, settings, config)
    save_reasoner(work / "reasoner.pt", fit.model, missions, {"test": True})
    return work


def export_tiny_bundles(
    work: Path,
    versions: Sequence[str | None] = (None,),
    encode: Callable[[list[str]], np.ndarray] = hashed_text_vectors,
    context_payload: bool = False,
    context_features: int | None = None,
    responder_features: int | None = None,
    **export_options: Any,
) -> list[Path]:
    """One bundle per version (`work/bundle-<version>`) from the same tiny checkpoints (`train_tiny_checkpoints`)."""
    from packetclip_training.export.export import export_bundle

    if not (work / "reasoner.pt").is_file():
        train_tiny_checkpoints(work, encode, context_payload, context_features, responder_features)
    options = {"metrics": {"coarse_mauc": 0.5}, "cache": work / "cache", **export_options}
    return [
        export_bundle(
            SAMPLE_DATASET,
            work / "encoder.pt",
            work / "align.pt",
            work / "reasoner.pt",
            work / f"bundle-{version or 'default'}",
            version=version,
            encode_texts=encode,
            **options,
        )
        for version in versions
    ]
