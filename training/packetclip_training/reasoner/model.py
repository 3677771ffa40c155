"""The reasoner's training: its loop with the losses, its checkpoint and its ONNX export.

Owns the training loop (`train_reasoner`, with the epoch draw, behaviour dropout and rate jitter), the training
configuration (`TrainConfig`) and the arrays it trains on (`TrainingArrays`), the concept targets, `predict`, the
checkpoint (`save_reasoner`, `load_reasoner`), the export of the probability surface (`export_reasoner`) and the
reasoner's cost (`reasoner_flops`). Does not own the networks (`Reasoner`, `ReasonerConfig`, `MissionGraphs`,
`ReasonerSurface`: `models.reasoner`, whose docstring describes the forward pass), embeddings and contexts
(`reasoner.data`) or the alignment heads (`models.heads`).

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import Mission
from packetclip_training.augment.tool_invariance import jitter_responder_rates
from packetclip_training.models.reasoner import (
    MissionGraphs,
    Reasoner,
    ReasonerConfig,
    ReasonerSurface,
    _NamedInputs,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "packetclip.reasoner/1"


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
