"""Trained checkpoints → a model bundle the sensor runs.

Owns gathering what a bundle carries — the two ONNX models with torch-made parity fixtures on real connections
of the test split, the concept list, the description bank, the missions, the dataset card's summary, the
evaluation's headline metrics and the training record — and handing it to
`packetclip_training.export.bundle.write_bundle`, which validates, writes and verifies (`export_bundle`, which
the `export` command and fine-tuning both call). The bundle format itself lives there and in
`packetclip.bundle`; signing and option parsing in `export.cli`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from packetclip.classes import FINE_CLASSES
from packetclip.context import CONTEXT_SLOTS, RESPONDER_CONNECTIONS, RESPONDER_WINDOW
from packetclip.featurizer import FEATURIZER_VERSION
from packetclip.missions import Mission, dump_mission
from packetclip_training.align.train import load_heads
from packetclip_training.export.bank import build_bank, mission_space_arrays
from packetclip_training.export.bundle import ModelSpec, write_bundle
from packetclip_training.export.encoder import (
    FIXTURE_NAME,
    INPUT_NAMES,
    ONNX_NAME,
    OUTPUT_NAMES,
    export_encoder,
)
from packetclip_training.models.encoder import PacketEncoder, load_checkpoint, parameter_count
from packetclip_training.models.flops import encoder_cost
from packetclip_training.models.reasoner import Reasoner, ReasonerConfig
from packetclip_training.reasoner.data import cached_split
from packetclip_training.reasoner.fit import training_arrays
from packetclip_training.reasoner.model import export_reasoner, load_reasoner

FIXTURE_ROWS = 8
DEFAULT_NAME = "packetclip-default"


def fixture_rows(fine: np.ndarray, valid_counts: np.ndarray, count: int = FIXTURE_ROWS) -> np.ndarray:
    """Test rows for the parity fixtures: one per class as far as they go, long connections first."""
    rows: list[int] = []
    for name in FINE_CLASSES:
        candidates = np.flatnonzero((fine == name) & (valid_counts > 0))
        if len(candidates):
            rows.append(int(candidates[np.argmax(valid_counts[candidates])]))
        if len(rows) >= count:
            break
    return np.asarray(sorted(rows), np.int64)


def context_section(config: ReasonerConfig) -> dict[str, Any]:
    """The manifest's `context`: what the runtime must feed the reasoner besides the connection (the originator
    slots' features and, for a reasoner that reads them, the responder features with their window)."""
    section: dict[str, Any] = {"slots": CONTEXT_SLOTS, "features": config.feature_names}
    if config.responder_features:
        section["responder_features"] = config.responder_feature_names
        section["responder_window"] = RESPONDER_WINDOW
        section["responder_connections"] = RESPONDER_CONNECTIONS
    return section


def data_card_summary(dataset: Path) -> dict[str, Any]:
    """The dataset card's identity and counts (its per-file input list stays in the dataset)."""
    card = json.loads((dataset / "card.json").read_text())
    keep = ("name", "built", "featurizer", "split", "dropped", "build", "outputs")
    summary = {key: card[key] for key in keep if key in card}
    counts = card.get("counts", {})
    summary["counts"] = {
        key: counts[key] for key in ("total", "fine", "coarse", "source_kind") if key in counts
    }
    return summary


def dataset_window(dataset: Path) -> dict[str, float]:
    """The featurizer window the dataset was cut with, as the manifest's `featurizer.window` (absent when the
    dataset kept the first max_packets packets whatever their time): the sensor must cut connections the same
    way."""
    card = json.loads((dataset / "card.json").read_text())
    window = card.get("featurizer", {}).get("config", {}).get("window")
    return {} if window is None else {"window": float(window)}


def export_bundle(
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    reasoner_path: Path,
    out: Path,
    *,
    name: str = DEFAULT_NAME,
    version: str | None = None,
    metrics: dict[str, Any] | None = None,
    cache: Path | None = None,
    encode_texts: Callable[[list[str]], np.ndarray] | None = None,
    decision: dict[str, Any] | None = None,
    mission_align_path: Path | None = None,
) -> Path:
    """Write a verified bundle folder at `out` (absent or empty); `encode_texts` defaults to all-MiniLM-L6-v2;
    `decision` is the operating point the evaluation chose (`decision.json`), None for argmax verdicts;
    `mission_align_path` a second alignment (CLIP's targets, on the same encoder) whose space user-written missions
    are scored in (`mission_space.npz`), None to score them in the aligned space."""
    if encode_texts is None:
        from packetclip_training.text.encoder import TextEncoder  # loads MiniLM: only when exporting

        encode_texts = TextEncoder().encode

    encoder, encoder_payload = load_checkpoint(encoder_path)
    heads, align_payload = load_heads(align_path)
    reasoner, missions, reasoner_payload = load_reasoner(reasoner_path)
    encoder_inputs, reasoner_inputs = _fixture_inputs(dataset, encoder, encoder_path, reasoner, cache)
    if not isinstance(heads.text_head, torch.nn.Linear):
        raise ValueError(f"{align_path}: a bundle needs alignment trained with --heads both (a learned g_T)")
    text_head = heads.text_head
    bank = build_bank(dataset, heads, encode_texts)
    mission_space, mission_payload = None, None
    if mission_align_path is not None:
        mission_heads, mission_payload = load_heads(mission_align_path)
        if mission_heads.packet_dim != heads.packet_dim or mission_heads.text_dim != heads.text_dim:
            raise ValueError(
                f"{mission_align_path}: heads for {mission_heads.packet_dim}/{mission_heads.text_dim}-wide "
                f"embeddings, {align_path} for {heads.packet_dim}/{heads.text_dim}: not the same encoders"
            )
        mission_space = mission_space_arrays(mission_heads, bank)
    cost = encoder_cost(encoder.config)
    with tempfile.TemporaryDirectory(prefix="packetclip-export-") as scratch:
        work = Path(scratch)
        models = _export_models(
            work, encoder_path, encoder, reasoner, encoder_inputs, reasoner_inputs, cost.flops_per_packet
        )
        mission_files = _write_missions(work / "missions", missions)
        record = _training_record(encoder, encoder_payload, align_payload, reasoner_payload)
        if mission_payload is not None:
            record["mission_alignment"] = _alignment_record(mission_payload)
        created = datetime.now(UTC)
        return write_bundle(
            out,
            name=name,
            version=version or created.strftime("%Y.%m.%d-%H%M"),
            models=models,
            concepts=reasoner.graphs.concepts,
            descriptions=(bank.texts, bank.fine, bank.embeddings),
            missions=mission_files,
            data_card=data_card_summary(dataset),
            metrics=metrics or {},
            training=json.loads(json.dumps(record, default=_plain)),
            featurizer={
                "version": FEATURIZER_VERSION,
                "max_packets": encoder.config.max_packets,
                "snaplen": encoder.config.snaplen,
                **dataset_window(dataset),
            },
            context=context_section(reasoner.config),
            created=created,
            text_head={
                "weight": text_head.weight.detach().numpy(),
                "bias": text_head.bias.detach().numpy(),
                "logit_scale": heads.logit_scale().detach().numpy(),
            },
            decision=decision,
            mission_space=mission_space,
        )


def _fixture_inputs(
    dataset: Path, encoder: PacketEncoder, encoder_path: Path, reasoner: Reasoner, cache: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The encoder's and the reasoner's inputs for the parity fixtures (`fixture_rows` of the test split)."""
    test = cached_split(encoder, encoder_path, dataset, "test", cache)
    fine = np.asarray([str(v) for v in test.columns["fine"]])
    rows = fixture_rows(fine, np.diff(test.offsets))
    from packetclip_training.dataset.store import load_split

    packed = load_split(dataset, "test", columns=())
    encoder_inputs = {key: np.ascontiguousarray(packed[key][rows]) for key in INPUT_NAMES}
    arrays = training_arrays(test, FINE_CLASSES)
    reasoner_inputs = {
        "connection": arrays.connection[rows],
        **reasoner.config.context_inputs(*arrays.context(rows, reasoner.config.context_payload)),
    }
    return encoder_inputs, reasoner_inputs


def _export_models(
    work: Path,
    encoder_path: Path,
    encoder: PacketEncoder,
    reasoner: Reasoner,
    encoder_inputs: dict[str, np.ndarray],
    reasoner_inputs: dict[str, np.ndarray],
    flops_per_packet: int,
) -> dict[str, ModelSpec]:
    """Export both models to ONNX under `work` with torch's outputs on the fixture inputs; returns their specs."""
    export_encoder(encoder_path, work / "encoder", encoder_inputs)
    with np.load(work / "encoder" / FIXTURE_NAME) as fixture:
        encoder_expected = {key: fixture[key] for key in OUTPUT_NAMES}
    reasoner_expected = export_reasoner(reasoner, work / "reasoner.onnx", reasoner_inputs)
    return {
        "encoder": ModelSpec(
            work / "encoder" / ONNX_NAME,
            encoder_inputs,
            encoder_expected,
            parameter_count(encoder),
            flops_per_packet,
        ),
        "reasoner": ModelSpec(
            work / "reasoner.onnx",
            reasoner_inputs,
            reasoner_expected,
            sum(p.numel() for p in reasoner.parameters()),
        ),
    }


def _write_missions(folder: Path, missions: Sequence[Mission]) -> list[Path]:
    """Write each mission as `folder`/<name>.yaml (`folder` must not exist); returns the files in order."""
    mission_files = []
    folder.mkdir()
    for mission in missions:
        path = folder / f"{mission.name}.yaml"
        path.write_text(dump_mission(mission))
        mission_files.append(path)
    return mission_files


def _training_record(
    encoder: PacketEncoder,
    encoder_payload: dict[str, Any],
    align_payload: dict[str, Any],
    reasoner_payload: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's `training`, before `_plain`: each stage's record and configuration."""
    return {
        "encoder": {
            k: encoder_payload["record"].get(k)
            for k in ("objective", "steps", "seconds", "held_out", "encoder_parameters")
        },
        "encoder_config": encoder.config.to_dict(),
        "alignment": _alignment_record(align_payload),
        "reasoner": reasoner_payload.get("record", {}),
        "reasoner_config": reasoner_payload.get("config", {}),
    }


def _alignment_record(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.get("record", {}).items() if k != "zeroshot"}


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
