"""The description bank a bundle carries: texts an explanation can quote, embedded in the aligned space.

Owns choosing the texts (descriptions written from real training connections of every class, bucketed as the
alignment run buckets them, plus the class prompts) and embedding them (frozen text encoder, then g_T, unit rows).
At run time the sensor compares a connection's aligned vector with these rows and quotes the nearest text of the
predicted class. Also owns the mission space's arrays (`mission_space_arrays`: a second pair of heads, and the
class prototypes the bank's texts give there). Does not own the wording (`describe`) or the bundle format
(`export.bundle`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from packetclip.classes import FINE_CLASSES
from packetclip_training.align.run import load_subset
from packetclip_training.align.train import build_description_pool
from packetclip_training.describe.describe import class_prompts
from packetclip_training.describe.facts import FACT_COLUMNS
from packetclip_training.models.heads import AlignmentHeads

log = logging.getLogger(__name__)


@dataclass
class DescriptionBank:
    texts: list[str]
    fine: list[str]  # the class each text describes
    embeddings: np.ndarray  # float32 (T, D) unit rows in the aligned space
    encoded: np.ndarray  # float32 (T, text_dim): the texts through the frozen text encoder, before g_T


def build_bank(
    dataset: Path,
    heads: AlignmentHeads,
    encode: Callable[[list[str]], np.ndarray],
    per_class: int = 400,
    per_bucket: int = 2,
    seed: int = 0,
) -> DescriptionBank:
    """Descriptions of up to `per_class` train connections per class, plus every class's prompts."""
    train = load_subset(dataset, "train", per_class, seed, FACT_COLUMNS)
    facts = [{name: train[name][i] for name in FACT_COLUMNS} for i in range(len(train["fine"]))]
    pool = build_description_pool(train["fine"].tolist(), facts, per_bucket, seed)
    owner: dict[int, str] = {}
    for row, choices in zip(pool.kept, pool.choices, strict=True):
        for text_index in choices:
            owner.setdefault(int(text_index), str(train["fine"][row]))
    texts = [pool.texts[i] for i in sorted(owner)]
    fine = [owner[i] for i in sorted(owner)]
    for name in FINE_CLASSES:
        prompts = class_prompts(name)
        texts += prompts
        fine += [name] * len(prompts)
    encoded = np.asarray(encode(texts), np.float32)
    with torch.no_grad():
        embedded = heads.project_texts(torch.from_numpy(encoded)).numpy().astype(np.float32)
    log.info("description bank: %d texts over %d classes", len(texts), len(set(fine)))
    return DescriptionBank(texts, fine, embedded, encoded)


def mission_space_arrays(heads: AlignmentHeads, bank: DescriptionBank) -> dict[str, np.ndarray]:
    """The arrays of a bundle's mission space (`packetclip.bundle.MissionSpace`) from a second pair of learned
    heads (`--heads both`, trained with CLIP's one positive per pair): both heads' weights, the temperature, and per
    fine class the normalised mean of the bank's texts placed by its g_T."""
    packet, text = heads.packet_head, heads.text_head
    if not (isinstance(packet, torch.nn.Linear) and isinstance(text, torch.nn.Linear)):
        raise ValueError(
            "a mission space needs alignment heads trained with --heads both (learned g_P and g_T)"
        )
    with torch.no_grad():
        rows = heads.project_texts(torch.from_numpy(bank.encoded)).numpy().astype(np.float32)
    fine = np.asarray(bank.fine)
    prototypes = np.stack([rows[fine == name].mean(axis=0) for name in FINE_CLASSES])
    prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    return {
        "packet_weight": packet.weight.detach().numpy(),
        "packet_bias": packet.bias.detach().numpy(),
        "text_weight": text.weight.detach().numpy(),
        "text_bias": text.bias.detach().numpy(),
        "logit_scale": heads.logit_scale().detach().numpy(),
        "prototypes": prototypes.astype(np.float32),
    }
