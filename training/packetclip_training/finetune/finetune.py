"""Fine-tuning the reasoner on analysts' feedback without forgetting what it was trained on.

Owns reading `packetclip-feedback/1` exports (`packetclip.feedback`) into reasoner training rows, the checks that
the feedback and the factory's checkpoints belong to the bundle being corrected, the replayed sample of the base
training data, the short fine-tuning loop, and the before/after measurements a fine-tuned bundle records.

What a feedback row trains on: the reasoner inputs exactly as the sensor fed them (connection embedding, context
features and validity, responder features, and the context embeddings for a reasoner that reads them). The encoder
is frozen and the rows are refused unless its sha256 is the base bundle's, so the embedding is the one the factory
would compute (to the bundle's parity tolerance); the context and responder features were built from the traffic
the sensor saw around the connection, which the export does not hold and the factory could not rebuild.

"Never forgets": every step is a batch of replayed base training rows (a class-stratified sample of the views the
base reasoner trained on, with its augmentations) plus a batch of feedback rows drawn with replacement. Replayed
rows keep their labels' loss and are also pulled towards the base reasoner's own output on them (a KL term): the
fine-tune may move the model only where the feedback asks. The temporal-smoothing loss is left out: a sample has
no predecessors.

Does not own the model (`models.reasoner`) or its checkpoint (`reasoner.model`), embeddings (`reasoner.data`),
the bundle format (`export.bundle`, `export.export`) or the command (`finetune.cli`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from packetclip.bundle import PARITY_TOLERANCE, Bundle, max_abs_difference
from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.engine import decide
from packetclip.feedback import EXPORT_FORMAT, read_export_arrays
from packetclip.missions import Mission
from packetclip_training.export.encoder import INPUT_NAMES
from packetclip_training.models.encoder import PacketEncoder, batch_tensors
from packetclip_training.models.reasoner import Reasoner
from packetclip_training.reasoner.data import VIEWS, SplitEmbeddings, cached_split
from packetclip_training.reasoner.fit import quick_metrics
from packetclip_training.reasoner.model import (
    REASONER_OUTPUTS,
    TrainConfig,
    behaviour_dropout,
    concept_targets,
    rate_jitter,
)

log = logging.getLogger(__name__)

BENIGN = COARSE_CLASSES.index("benign")


class FinetuneError(ValueError):
    """The feedback or the checkpoints cannot fine-tune this bundle; the message says which row or file."""


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 200  # a few hundred steps: a correction, not a retraining
    batch_size: int = 256  # replayed base rows per step
    feedback_batch: int = 64  # feedback rows per step, drawn with replacement (a fifth of every batch)
    learning_rate: float = 2e-4  # a tenth of the base training's peak rate
    weight_decay: float = 0.0  # decay would pull every weight, not only those the feedback moves
    anchor_weight: float = 1.0  # KL(base ‖ fine-tuned) on the replayed rows: stay where no label asks to move
    concept_weight: float = 0.2  # as the base training: concepts keep meaning what their names say
    replay_per_class: int = 2_000  # replayed rows per fine class and view (the pool the batches draw from)
    # the base training's augmentations, on replayed rows only (a feedback row is what the sensor saw)
    behaviour_dropout: float = TrainConfig.behaviour_dropout
    rate_jitter: float = TrainConfig.rate_jitter
    rate_jitter_factor: float = TrainConfig.rate_jitter_factor
    seed: int = 0

    @classmethod
    def following(cls, record: dict[str, Any], **overrides: Any) -> FinetuneConfig:
        """Settings whose augmentations are those the base reasoner's record says it trained with."""
        base = record.get("train_config", {})
        known = {f.name for f in fields(cls)}
        inherited = {
            k: base[k] for k in ("behaviour_dropout", "rate_jitter", "rate_jitter_factor") if k in base
        }
        return cls(**{**inherited, **{k: v for k, v in overrides.items() if k in known and v is not None}})


@dataclass
class ReasonerRows:
    """Reasoner inputs and targets of some rows, whatever they came from (replay, feedback, test split)."""

    connection: np.ndarray  # float32 (n, E)
    context: np.ndarray  # (n, A, E) context embeddings for a reasoner that reads them, else (n, A, 0)
    context_features: np.ndarray  # (n, A, F)
    context_valid: np.ndarray  # bool (n, A)
    responder_features: np.ndarray  # (n, V): every column the data has; the model reads its first ones
    coarse: np.ndarray  # int64 (n,) index into COARSE_CLASSES
    fine: np.ndarray  # int64 (n,) index into FINE_CLASSES, -1 where only the coarse class is known

    def __len__(self) -> int:
        return len(self.connection)

    def tensors(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The model's five inputs for `rows`, float32 (the valid mask bool)."""
        return (
            torch.from_numpy(self.connection[rows].astype(np.float32)),
            torch.from_numpy(self.context[rows].astype(np.float32)),
            torch.from_numpy(self.context_features[rows].astype(np.float32)),
            torch.from_numpy(self.context_valid[rows]),
            torch.from_numpy(self.responder_features[rows].astype(np.float32)),
        )

    def take(self, rows: np.ndarray) -> ReasonerRows:
        return ReasonerRows(*(getattr(self, f.name)[rows] for f in fields(self)))


def concatenate_rows(parts: Sequence[ReasonerRows]) -> ReasonerRows:
    return ReasonerRows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ReasonerRows)))


def split_rows(split: SplitEmbeddings, rows: np.ndarray, payload: bool) -> ReasonerRows:
    """Some rows of an embedded split as `ReasonerRows` (copies: the split can be freed)."""
    context, features, valid, responder = split.context(rows, payload)
    fine_names = [str(v) for v in split.columns["fine"][rows]]
    return ReasonerRows(
        split.connection[rows].copy(),
        context.astype(np.float16),
        features.astype(np.float16),
        valid,
        responder.astype(np.float16),
        np.asarray([COARSE_CLASSES.index(FINE_TO_COARSE[f]) for f in fine_names], np.int64),
        np.asarray([FINE_CLASSES.index(f) for f in fine_names], np.int64),
    )


# --- feedback -------------------------------------------------------------------------------------------------


@dataclass
class Feedback:
    """Labelled connections of one or more exports: their reasoner rows and who said what about them."""

    rows: ReasonerRows
    records: list[dict[str, Any]]  # the export records without their arrays

    def __len__(self) -> int:
        return len(self.records)

    @property
    def keys(self) -> list[tuple[str, float]]:
        """(uid, first-packet time): a labelled connection's identity in the feedback store."""
        return [(str(r["uid"]), float(r["ts"])) for r in self.records]

    def take(self, rows: np.ndarray) -> Feedback:
        return Feedback(self.rows.take(rows), [self.records[i] for i in rows])

    def counts(self) -> dict[str, int]:
        """Rows by the analyst's label."""
        labels = [str(r["label"]) for r in self.records]
        return {label: labels.count(label) for label in sorted(set(labels))}


def read_export(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every record of `packetclip feedback export` files, in file then line order; the last label of a
    connection given twice wins."""
    by_key: dict[tuple[str, float], dict[str, Any]] = {}
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FinetuneError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
                found = record.get("format") if isinstance(record, dict) else type(record).__name__
                raise FinetuneError(f"{path}:{number}: not a {EXPORT_FORMAT} record (format {found!r})")
            record["_where"] = f"{path}:{number}"
            by_key[(str(record["uid"]), float(record["ts"]))] = record
    return list(by_key.values())


def encoder_sha256(bundle: Bundle) -> str:
    """The sha256 of a bundle's encoder file, as the sensor writes it into every kept input's description."""
    encoder = bundle.model_paths.get("encoder")
    if encoder is None:
        raise FinetuneError(f"bundle {bundle.source}: no encoder model")
    return str(bundle.manifest["files"][encoder.name])


def feedback_rows(records: Sequence[dict[str, Any]], base: Bundle, reasoner: Reasoner) -> Feedback:
    """Feedback records → rows the reasoner trains on; refuses a record from another embedding space (its encoder
    sha256 is not the base bundle's) or with other feature columns than the reasoner reads."""
    want_sha = encoder_sha256(base)
    config = reasoner.config
    parts = []
    for record in records:
        where, described = record.get("_where", record.get("uid")), record["bundle"]
        got_sha = str(described.get("encoder_sha256", ""))
        if got_sha != want_sha:
            raise FinetuneError(
                f"{where}: uid {record['uid']} was classified by bundle {described.get('name')} "
                f"{described.get('version')}, whose encoder (sha256 {got_sha[:12] or 'unknown'}…) is not the "
                f"encoder of {base.name} {base.version} (sha256 {want_sha[:12]}…): its inputs live in another "
                "embedding space. Fine-tune the bundle that made the verdicts, with that bundle's checkpoints."
            )
        columns = list(described.get("context_features", []))
        if columns[: config.context_features] != config.feature_names:
            raise FinetuneError(
                f"{where}: uid {record['uid']}: context features {columns} are not the reasoner's "
                f"{config.feature_names}"
            )
        responder = list(described.get("responder_features", []))
        if responder[: config.responder_features] != config.responder_feature_names:
            raise FinetuneError(
                f"{where}: uid {record['uid']}: responder features {responder} do not start with the "
                f"reasoner's {config.responder_feature_names}"
            )
        arrays = read_export_arrays(record)
        slots = arrays["context_valid"].shape[0]
        if config.context_payload and "context" not in arrays:
            raise FinetuneError(
                f"{where}: uid {record['uid']}: no context embeddings for a reasoner reading them"
            )
        context = arrays["context"] if config.context_payload else np.zeros((slots, 0), np.float32)
        label = str(record["label"])
        fine = record.get("fine")
        parts.append(
            ReasonerRows(
                arrays["connection"][None].astype(np.float32),
                context[None].astype(np.float16),
                arrays["context_features"][None].astype(np.float16),
                arrays["context_valid"][None].astype(bool),
                arrays["responder_features"][None].astype(np.float16),
                np.asarray([COARSE_CLASSES.index(str(record["coarse"]))], np.int64),
                np.asarray([FINE_CLASSES.index(fine) if fine else -1], np.int64),
            )
        )
        log.debug("feedback %s: %s", record["uid"], label)
    if not parts:
        raise FinetuneError("no feedback rows")
    plain = [{k: v for k, v in r.items() if k not in ("arrays", "_where")} for r in records]
    return Feedback(concatenate_rows(parts), plain)


def check_checkpoints(base: Bundle, encoder: PacketEncoder, reasoner: Reasoner) -> dict[str, float]:
    """Refuse checkpoints that did not make `base`: each must reproduce the bundle's parity fixture (what torch
    computed at export) within the bundle's tolerance. Returns role → max |difference|."""
    differences = {}
    fixtures = base.fixture_paths
    with np.load(fixtures["encoder"]) as stored:
        encoder_inputs = {name: stored[name] for name in INPUT_NAMES}
        expected = stored["connection_embedding"]
    with torch.inference_mode():
        got = encoder.eval()(*batch_tensors(encoder_inputs))[1].numpy()
    differences["encoder"] = max_abs_difference(got, expected) if got.shape == expected.shape else math.inf
    with np.load(fixtures["reasoner"]) as stored:
        arrays = {name: stored[name] for name in stored.files}
    inputs = [arrays.get(name) for name in ("connection", "context", "context_features", "context_valid")]
    inputs.append(arrays.get("responder_features"))
    with torch.inference_mode():
        outputs = reasoner.eval()(*(None if a is None else torch.from_numpy(a) for a in inputs))
        probabilities = (outputs[0].softmax(-1), outputs[1].softmax(-1), outputs[2], outputs[3])
    differences["reasoner"] = max(
        max_abs_difference(value.numpy(), arrays[name]) if value.shape == arrays[name].shape else math.inf
        for name, value in zip(REASONER_OUTPUTS, probabilities, strict=True)
    )
    for role, difference in differences.items():
        if difference > PARITY_TOLERANCE:
            raise FinetuneError(
                f"the {role} checkpoint did not make bundle {base.name} {base.version}: it misses the bundle's "
                f"{role} fixture by {difference:.3g} (> {PARITY_TOLERANCE:g}). Give the checkpoints that bundle "
                "was exported from."
            )
    return differences


def holdout_rows(feedback: Feedback, share: float, seed: int) -> np.ndarray:
    """A seeded `share` of each label's rows (at least one of a label with two or more), kept out of training."""
    if share <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(r["label"]) for r in feedback.records])
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        count = min(len(rows) - 1, max(1, round(share * len(rows))))
        if count > 0:
            picked.append(rng.choice(rows, count, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


# --- replay -------------------------------------------------------------------------------------------------


def replay_views(record: dict[str, Any]) -> tuple[list[str], float]:
    """The views of the train split the base reasoner trained on, and its tool-invariance share (its record;
    the base training's defaults when the record has none)."""
    config = {**asdict(TrainConfig()), **record.get("train_config", {})}
    views = list(VIEWS) if config["one_sided"] else ["both"]
    return views, float(config["tool_invariance"])


def replay_sample(
    encoder: PacketEncoder,
    encoder_path: Path,
    dataset: Path,
    cache: Path | None,
    views: Sequence[str],
    tool_invariance: float,
    per_class: int,
    payload: bool,
    seed: int,
) -> ReasonerRows:
    """Up to `per_class` training rows of every fine class from each view (`reasoner.data.cached_split`, so the
    cache the reasoner stage wrote is reused), held compactly; each view is freed before the next is read."""
    rng = np.random.default_rng(seed)
    parts = []
    for view in views:
        split = cached_split(encoder, encoder_path, dataset, "train", cache, view, tool_invariance)
        labels = np.asarray([str(v) for v in split.columns["fine"]])
        picked = []
        for label in FINE_CLASSES:
            rows = np.flatnonzero(labels == label)
            picked.append(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False))
        parts.append(split_rows(split, np.sort(np.concatenate(picked)), payload))
        del split
    return concatenate_rows(parts)


# --- the loop -----------------------------------------------------------------------------------------------


def finetune_reasoner(
    base: Reasoner,
    missions: Sequence[Mission],
    replay: ReasonerRows,
    feedback: ReasonerRows,
    config: FinetuneConfig,
) -> tuple[Reasoner, list[dict[str, float]]]:
    """A fine-tuned copy of `base` (left as it is) and its loss curve (every tenth of the steps)."""
    if not len(feedback):
        raise FinetuneError("no feedback rows to train on")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    base = base.eval()
    model = copy.deepcopy(base)
    concepts = torch.from_numpy(concept_targets(model.graphs, missions, FINE_CLASSES))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    augment = TrainConfig(rate_jitter=config.rate_jitter, rate_jitter_factor=config.rate_jitter_factor)
    curve: list[dict[str, float]] = []
    sums, since, started = np.zeros(3), 0, time.monotonic()
    report_every = max(1, config.steps // 10)
    model.train()
    for step in range(1, config.steps + 1):
        rows = rng.choice(len(replay), min(config.batch_size, len(replay)), replace=False)
        inputs = behaviour_dropout(replay.tensors(rows), config.behaviour_dropout, rng)
        inputs = rate_jitter(inputs, augment, rng)
        replay_loss, anchor = _labelled_loss(model, inputs, replay, rows, concepts, config, base)
        chosen = rng.choice(len(feedback), config.feedback_batch, replace=True)
        feedback_loss, _ = _labelled_loss(model, feedback.tensors(chosen), feedback, chosen, concepts, config)
        loss = replay_loss + config.anchor_weight * anchor + feedback_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        sums += [float(replay_loss.detach()), float(anchor.detach()), float(feedback_loss.detach())]
        since += 1
        if step % report_every == 0 or step == config.steps:
            point = {
                "step": step,
                "replay_loss": float(sums[0] / since),
                "anchor_kl": float(sums[1] / since),
                "feedback_loss": float(sums[2] / since),
                "seconds": round(time.monotonic() - started, 1),
            }
            curve.append(point)
            log.info("finetune step %d: %s", step, point)
            sums[:], since = 0.0, 0
    return model.eval(), curve


def _labelled_loss(
    model: Reasoner,
    inputs: tuple[torch.Tensor, ...],
    data: ReasonerRows,
    rows: np.ndarray,
    concepts: torch.Tensor,
    config: FinetuneConfig,
    anchor_to: Reasoner | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(coarse CE + fine CE and concept loss where the fine class is known, KL from `anchor_to`'s outputs on the
    same inputs; zero without one)."""
    coarse, fine, activations, _ = model(*inputs)
    coarse_target = torch.from_numpy(data.coarse[rows])
    fine_target = torch.from_numpy(data.fine[rows])
    loss = F.cross_entropy(coarse, coarse_target)
    known = fine_target >= 0
    if bool(known.any()):
        loss = loss + F.cross_entropy(fine[known], fine_target[known])
        loss = loss + config.concept_weight * F.binary_cross_entropy(
            activations[known], concepts[fine_target[known]]
        )
    anchor = torch.zeros(())
    if anchor_to is not None:
        with torch.no_grad():
            base_coarse, base_fine, _, _ = anchor_to(*inputs)
        anchor = F.kl_div(
            coarse.log_softmax(-1), base_coarse.log_softmax(-1), log_target=True, reduction="batchmean"
        ) + F.kl_div(fine.log_softmax(-1), base_fine.log_softmax(-1), log_target=True, reduction="batchmean")
    return loss, anchor


# --- measuring ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def probabilities(
    model: Reasoner, data: ReasonerRows, batch_size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(coarse (n, 4), fine (n, 11)) probabilities, as the exported reasoner gives them."""
    model.eval()
    coarse, fine = [], []
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        c, f, _, _ = model(*data.tensors(rows))
        coarse.append(c.softmax(-1).numpy())
        fine.append(f.softmax(-1).numpy())
    if not coarse:
        return np.zeros((0, len(COARSE_CLASSES)), np.float32), np.zeros((0, len(FINE_CLASSES)), np.float32)
    return np.concatenate(coarse), np.concatenate(fine)


def label_metrics(data: ReasonerRows, coarse: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """How verdicts at the operating point (`threshold`; None: argmax) agree with labels: the share of benign
    rows called an attack, of attack rows called an attack, and of rows given their labelled coarse class."""
    verdict = decide(coarse, BENIGN, threshold)
    benign = data.coarse == BENIGN
    attack = ~benign
    return {
        "rows": len(data),
        "benign_rows": int(benign.sum()),
        "benign_false_alarms": _share(verdict[benign] != BENIGN),
        "attack_rows": int(attack.sum()),
        "attacks_detected": _share(verdict[attack] != BENIGN),
        "coarse_agreement": _share(verdict == data.coarse),
        "mean_p_labelled": float(np.mean(coarse[np.arange(len(data)), data.coarse])) if len(data) else None,
    }


def split_metrics(
    data: ReasonerRows, real: np.ndarray, coarse: np.ndarray, fine: np.ndarray, threshold: float | None
) -> dict[str, Any]:
    """Coarse mAUC, fine top-1 and coarse accuracy (`reasoner.fit.quick_metrics`) and benign false alarms at the
    operating point, of all benign rows and of the real captures' benign rows."""
    truth = np.asarray(FINE_CLASSES)[data.fine]
    metrics: dict[str, Any] = {"rows": len(data), **quick_metrics(truth, coarse, fine)}
    verdict = decide(coarse, BENIGN, threshold)
    benign = data.coarse == BENIGN
    metrics["benign_false_alarms"] = _share(verdict[benign] != BENIGN)
    metrics["real_benign_rows"] = int((benign & real).sum())
    metrics["real_benign_false_alarms"] = _share(verdict[benign & real] != BENIGN)
    return metrics


def split_sample(
    split: SplitEmbeddings, rows: int, seed: int, payload: bool
) -> tuple[ReasonerRows, np.ndarray]:
    """A uniform sample of `rows` test rows (0: all; uniform so fine top-1 estimates the split's), with whether
    each comes from a real capture."""
    count = len(split)
    picked = (
        np.arange(count)
        if rows <= 0 or rows >= count
        else np.sort(np.random.default_rng(seed).choice(count, rows, replace=False))
    )
    kinds = split.columns.get("source_kind")
    real = (
        np.zeros(len(picked), bool)
        if kinds is None
        else np.asarray([str(k) == "real" for k in kinds[picked]])
    )
    return split_rows(split, picked, payload), real


def _share(flags: np.ndarray) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


@dataclass
class BeforeAfter:
    """A measurement of the base and the fine-tuned reasoner on the same rows."""

    before: dict[str, Any]
    after: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, **self.notes}


def compare(
    base: Reasoner,
    tuned: Reasoner,
    data: ReasonerRows,
    threshold: float | None,
    records: Sequence[dict[str, Any]],
) -> BeforeAfter:
    """`label_metrics` of both models on feedback rows, and how many of the sensor's verdicts the base reproduces
    (its operating point on its own inputs: a check that the rows are what the base bundle saw)."""
    base_coarse, _ = probabilities(base, data)
    tuned_coarse, _ = probabilities(tuned, data)
    reproduced = decide(base_coarse, BENIGN, threshold)
    sensor = [str(r["verdict"]["label"]) for r in records]
    same = sum(COARSE_CLASSES[v] == s for v, s in zip(reproduced, sensor, strict=True))
    return BeforeAfter(
        label_metrics(data, base_coarse, threshold),
        label_metrics(data, tuned_coarse, threshold),
        {"sensor_verdicts_reproduced": f"{same} of {len(sensor)}"},
    )


# --- the whole stage ----------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    reasoner: Path  # the fine-tuned checkpoint
    bundle: Path  # the bundle exported from it
    record: dict[str, Any]  # the `finetune` metadata the manifest carries


@dataclass
class _FeedbackSplit:
    """The feedback rows a fine-tune trains on and those it only measures."""

    feedback: Feedback  # every row of the feedback files
    held: np.ndarray  # rows of `feedback` held back from training
    trained: Feedback  # the rest of `feedback`
    evaluation: Feedback | None  # the held-back rows and the evaluate files' rows not trained on; None: none
    dropped: int  # rows of the evaluate files dropped because they are also training rows


def _split_feedback(
    feedback_paths: Sequence[Path],
    evaluate_paths: Sequence[Path],
    holdout: float,
    seed: int,
    base: Bundle,
    reasoner: Reasoner,
) -> _FeedbackSplit:
    """The feedback files' rows split into training rows and measured-only rows (`run_finetune`)."""
    feedback = feedback_rows(read_export(feedback_paths), base, reasoner)
    held = holdout_rows(feedback, holdout, seed)
    trained = feedback.take(np.setdiff1d(np.arange(len(feedback)), held))
    evaluated = [feedback.take(held)] if len(held) else []
    dropped = 0
    if evaluate_paths:
        extra = feedback_rows(read_export(evaluate_paths), base, reasoner)
        seen = set(trained.keys)
        keep = np.asarray([key not in seen for key in extra.keys])
        dropped = int((~keep).sum())
        evaluated.append(extra.take(np.flatnonzero(keep)))
    evaluation = (
        Feedback(concatenate_rows([e.rows for e in evaluated]), [r for e in evaluated for r in e.records])
        if evaluated and sum(len(e) for e in evaluated)
        else None
    )
    return _FeedbackSplit(feedback, held, trained, evaluation, dropped)


def _feedback_section(
    split: _FeedbackSplit, feedback_paths: Sequence[Path], evaluate_paths: Sequence[Path]
) -> dict[str, Any]:
    """The fine-tune record's `feedback`: the files and the rows trained on, held back and evaluated."""
    feedback, held, evaluation = split.feedback, split.held, split.evaluation
    return {
        "files": [str(p) for p in feedback_paths],
        "rows": len(feedback),
        "trained_on": split.trained.counts(),
        "held_back": feedback.take(held).counts() if len(held) else {},
        "evaluate_files": [str(p) for p in evaluate_paths],
        "evaluated": evaluation.counts() if evaluation is not None else {},
        "evaluate_rows_dropped_as_trained_on": split.dropped,
        "bundles": sorted({f"{r['bundle']['name']} {r['bundle']['version']}" for r in feedback.records}),
        "inputs": "the reasoner inputs the sensor fed its reasoner, as exported",
    }


def _feedback_comparisons(
    base: Reasoner, tuned: Reasoner, split: _FeedbackSplit, threshold: float | None
) -> dict[str, Any]:
    """The fine-tune record's `compare` of both models on the rows trained on and on the held-back rows."""
    trained, evaluation = split.trained, split.evaluation
    return {
        "feedback_rows_trained_on": compare(base, tuned, trained.rows, threshold, trained.records).to_dict(),
        "held_back_rows": (
            compare(base, tuned, evaluation.rows, threshold, evaluation.records).to_dict()
            if evaluation is not None
            else None
        ),
    }


def _replay_drift(base: Reasoner, tuned: Reasoner, replay: ReasonerRows, seed: int) -> float:
    """The mean L1 distance between the two models' coarse distributions on up to 5,000 replayed rows."""
    drift_rows = np.random.default_rng(seed).choice(len(replay), min(5_000, len(replay)), replace=False)
    return float(
        np.mean(
            np.abs(
                probabilities(tuned, replay.take(drift_rows))[0]
                - probabilities(base, replay.take(drift_rows))[0]
            ).sum(axis=1)
        )
    )


def _test_split_section(
    base: Reasoner,
    tuned: Reasoner,
    encoder: PacketEncoder,
    encoder_path: Path,
    dataset: Path,
    cache: Path | None,
    test_rows: int,
    seed: int,
    threshold: float | None,
) -> dict[str, Any]:
    """The fine-tune record's `test_split`: `split_metrics` of both models on a sample of the test split."""
    test = cached_split(encoder, encoder_path, dataset, "test", cache)
    sample, real = split_sample(test, test_rows, seed, base.config.context_payload)
    test_size = len(test)
    del test
    return {
        "rows": len(sample),
        "of": test_size,  # a uniform sample when fewer
        "before": split_metrics(sample, real, *probabilities(base, sample), threshold),
        "after": split_metrics(sample, real, *probabilities(tuned, sample), threshold),
    }


def run_finetune(
    base_bundle: Path,
    feedback_paths: Sequence[Path],
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    reasoner_path: Path,
    out: Path,
    *,
    evaluate_paths: Sequence[Path] = (),
    holdout: float = 0.0,
    config: FinetuneConfig | None = None,
    test_rows: int = 50_000,
    cache: Path | None = None,
    version: str | None = None,
    encode_texts: Any = None,
) -> FinetuneResult:
    """Check, fine-tune, measure and export: `out`/reasoner.pt, `out`/finetune.json and the bundle `out`/bundle.

    `config` None: `FinetuneConfig.following` the base reasoner's record. Rows of `evaluate_paths` (exports of
    connections the fine-tune must not see, e.g. the rest of the source) are measured only; a row that is also a
    training row is dropped from them and counted.
    """
    from packetclip.bundle import load_bundle
    from packetclip_training.models.encoder import load_checkpoint
    from packetclip_training.reasoner.model import load_reasoner

    started = time.monotonic()
    base = load_bundle(base_bundle, verify=True)
    encoder, _ = load_checkpoint(encoder_path)
    reasoner, missions, payload = load_reasoner(reasoner_path)
    parity = check_checkpoints(base, encoder, reasoner)
    base_record = payload.get("record", {})
    settings = config or FinetuneConfig.following(base_record)
    split = _split_feedback(feedback_paths, evaluate_paths, holdout, settings.seed, base, reasoner)

    views, tool_invariance = replay_views(base_record)
    replay = replay_sample(
        encoder, encoder_path, dataset, cache, views, tool_invariance, settings.replay_per_class,
        reasoner.config.context_payload, settings.seed,
    )  # fmt: skip
    log.info("fine-tuning on %d feedback rows with %d replayed rows", len(split.trained), len(replay))
    tuned, curve = finetune_reasoner(reasoner, missions, replay, split.trained.rows, settings)

    threshold = base.attack_threshold
    replay_drift = _replay_drift(reasoner, tuned, replay, settings.seed)
    test_split = _test_split_section(
        reasoner, tuned, encoder, encoder_path, dataset, cache, test_rows, settings.seed, threshold
    )
    record: dict[str, Any] = {
        "base_bundle": {"name": base.name, "version": base.version, "encoder_sha256": encoder_sha256(base)},
        "checkpoint_parity": parity,
        "feedback": _feedback_section(split, feedback_paths, evaluate_paths),
        "config": asdict(settings),
        "replay": {"views": views, "tool_invariance": tool_invariance, "rows": len(replay)},
        "operating_point": {"attack_threshold": threshold, "from": "the base bundle, not recalibrated"},
        "curve": curve,
        **_feedback_comparisons(reasoner, tuned, split, threshold),
        "replay_sample_mean_coarse_change": replay_drift,  # mean L1 distance of the coarse distributions
        "test_split": test_split,
    }
    record["seconds"] = round(time.monotonic() - started, 1)
    record = json.loads(json.dumps(record, default=_plain))
    return _write_finetune(
        out, tuned, missions, base, base_record, record, dataset, encoder_path, align_path,
        cache=cache, version=version, encode_texts=encode_texts,
    )  # fmt: skip


def _write_finetune(
    out: Path,
    tuned: Reasoner,
    missions: list[Mission],
    base: Bundle,
    base_record: dict[str, Any],
    record: dict[str, Any],
    dataset: Path,
    encoder_path: Path,
    align_path: Path,
    *,
    cache: Path | None,
    version: str | None,
    encode_texts: Any,
) -> FinetuneResult:
    """Write `out`/reasoner.pt and `out`/finetune.json, export the bundle `out`/bundle; returns all three."""
    from packetclip_training.export.export import export_bundle
    from packetclip_training.reasoner.model import save_reasoner

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "reasoner.pt"
    save_reasoner(checkpoint, tuned, missions, {**base_record, "finetune": record})
    (out / "finetune.json").write_text(json.dumps(record, indent=2) + "\n")
    bundle = export_bundle(
        dataset, encoder_path, align_path, checkpoint, out / "bundle",
        name=base.name, version=version or default_version(base.version), metrics=headline(record),
        cache=cache, encode_texts=encode_texts, decision=base.manifest.get("decision"),
    )  # fmt: skip
    return FinetuneResult(checkpoint, bundle, record)


def default_version(base_version: str) -> str:
    """The base version with the fine-tune's UTC time: `2026.12.07-2-ft202612081230`."""
    return f"{base_version}-ft{time.strftime('%Y%m%d%H%M', time.gmtime())}"


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `metrics` of a fine-tuned bundle: before → after figures flat (`packetclip models show`),
    and the whole `finetune` record."""
    base = record["base_bundle"]
    metrics: dict[str, Any] = {"fine-tune of": f"{base['name']} {base['version']}"}
    for label, count in record["feedback"]["trained_on"].items():
        metrics[f"feedback rows trained on: {label}"] = count
    held = record.get("held_back_rows")
    if held is not None:
        for stage in ("before", "after"):
            metrics[f"held-back feedback rows: benign false alarms, {stage}"] = held[stage][
                "benign_false_alarms"
            ]
            metrics[f"held-back feedback rows: attacks detected, {stage}"] = held[stage]["attacks_detected"]
    test = record["test_split"]
    for key, name in (
        ("coarse_mauc", "4-class mAUC (coarse)"),
        ("fine_top1", "fine-class top-1"),
        ("benign_false_alarms", "benign false alarms at the operating point"),
        ("real_benign_false_alarms", "real benign false alarms at the operating point"),
    ):
        for stage in ("before", "after"):
            metrics[f"test split: {name}, {stage}"] = test[stage][key]
    metrics["finetune"] = record
    return metrics


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
