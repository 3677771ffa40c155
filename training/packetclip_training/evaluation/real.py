"""The real-traffic evaluation: how a bundle does on real captures from other networks, by source family.

Owns: the source families of the real-capture MANIFEST (`family_of`), running every file through the runtime
`Engine` exactly as `packetclip classify FILE` would (one capture, one sensor: a fresh engine state per file),
labelling each verdict with the dataset's MANIFEST rule (`dataset.labelling.ManifestLabeller`, via
`dataset.sources.load_manifest`), and the numbers: per family and overall, connection-level recall per coarse
class and benign false-alarm rate at the argmax verdict, per-file-macro versions of both (so one large capture
does not stand for its family), one-vs-rest mAUC, and the same recall and false alarms at an operating point
whose threshold is chosen on one family of real benign traffic and judged on the others. It also records the
shape of each capture's connections (packets per connection, one-way share, originators per responder), which
says what a per-connection model can see of a flood.

Does not own: the labelling rule, the featurizer, the models, the report's number formats
(`evaluation.report`) nor the command (`evaluation.real_cli`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packetclip.bundle import Bundle
from packetclip.classes import COARSE_CLASSES, coarse_of
from packetclip.engine import Engine, Verdict
from packetclip.featurizer import Connection
from packetclip.pipeline import classify_captures
from packetclip_training.baselines.scoring import mean_auc
from packetclip_training.dataset.labelling import Drop
from packetclip_training.dataset.sources import MANIFEST_COLUMNS, RealCapture, load_manifest, read_tsv
from packetclip_training.dataset.store import read_columns
from packetclip_training.evaluation.metrics import per_class_auc
from packetclip_training.evaluation.report import format_score, markdown_table

log = logging.getLogger(__name__)

BENIGN = COARSE_CLASSES[0]
REAL_DATA_ENV = "PACKETCLIP_REAL_DATA"
# A sensor raising more than 1 % of its benign connections gets switched off (as `metrics.UNSEEN_FPR_LIMIT`).
FALSE_ALARM_BUDGET = 0.01

# The family rule, in the order it is applied (real.json repeats it: the report says how rows were grouped).
# StopDDoS/packet-captures: public DDoS captures, one-way incoming traffic, ≥ 99 % attack, no attacker address
DDOS_FOLDER = "packet-captures"
SOURCE_NAMES = {"nDPI": "ndpi", "zeek": "zeek", "suricata-verify": "suricata"}
FAMILY_RULE = (
    f"files under {DDOS_FOLDER}/ → ddos-public; other files whose manifest label is not benign → "
    "real-attacks; benign files → <source>-benign, the source being the file's top folder (nDPI → ndpi, "
    "zeek → zeek, suricata-verify → suricata)"
)
ATTACK_FAMILIES = ("ddos-public", "real-attacks")
SHIPPED = "the bundle's operating point"
DATASET_SPLITS = ("train", "val", "test")
NOT_IN_DATASET = "not in the dataset"


def family_of(file: str, coarse: str) -> str:
    """The source family of one MANIFEST row (`file` relative to the manifest, `coarse` its label column)."""
    top = file.split("/", 1)[0]
    if top == DDOS_FOLDER:
        return "ddos-public"
    if coarse != BENIGN:
        return "real-attacks"
    return f"{SOURCE_NAMES.get(top, top.lower())}-benign"


def default_real_data(repo_root: Path | None = None) -> Path:
    """`PACKETCLIP_REAL_DATA`, else `../shared/data/real` from the repository root (as the tests find it)."""
    if os.environ.get(REAL_DATA_ENV):
        return Path(os.environ[REAL_DATA_ENV])
    root = repo_root or Path(__file__).resolve().parents[3]
    return root.parent / "shared" / "data" / "real"


# ---------------------------------------------------------------------------------------------------------------
# Classifying the captures


@dataclass
class ScoredRows:
    """Every labelled connection of a run, one entry each (coarse classes in COARSE_CLASSES order)."""

    truth: np.ndarray  # coarse class names (object)
    fine_truth: np.ndarray  # fine class names (object)
    probabilities: np.ndarray  # (n, 4) coarse probabilities
    files: np.ndarray  # source file per row (object)
    families: np.ndarray  # family per row (object)

    def __len__(self) -> int:
        return len(self.truth)


@dataclass
class FileRun:
    """One capture's labelled verdicts and the shape of its connections."""

    file: str
    family: str
    manifest_attack: str
    truth: list[str] = field(default_factory=list)
    fine_truth: list[str] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    fine_predicted: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    shape: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    sha256: str = ""  # of the capture's bytes: what ties it to a dataset's inputs


class EngineStandIn:
    """What `classify_captures` asks of an engine, passed through to one: the base of stand-ins that note
    something of each micro-batch on the way (a second pass over the captures would only re-read it)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def featurizer_config(self) -> Any:
        return self.engine.featurizer_config

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size


class _ShapeRecorder(EngineStandIn):
    """Notes each connection's packet counts, which verdicts do not carry; the verdicts come back in the order
    the connections are noted, so the two lists align."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.connections: list[tuple[str, str, int, int]] = []  # orig_h, resp_h, orig_pkts, resp_pkts

    def classify(self, connections: Sequence[Connection], sensor: str = "") -> list[Verdict]:
        verdicts = self.engine.classify(connections, sensor)
        by_uid = {c.uid: c for c in connections}
        for verdict in verdicts:
            conn = by_uid[verdict.uid]
            self.connections.append((conn.orig_h, conn.resp_h, conn.orig_pkts, conn.resp_pkts))
        return verdicts


def connection_shape(connections: Sequence[tuple[str, str, int, int]]) -> dict[str, Any]:
    """What a capture's connections show a per-connection model; rows (orig_h, resp_h, orig_pkts, resp_pkts).

    Packet counts are those at release (the first `max_packets` packets for a long connection).
    """
    if not connections:
        return {"connections": 0}
    orig_pkts = np.asarray([c[2] for c in connections], dtype=float)
    resp_pkts = np.asarray([c[3] for c in connections], dtype=float)
    originators_of: dict[str, set[str]] = defaultdict(set)
    for orig_h, resp_h, _, _ in connections:
        originators_of[resp_h].add(orig_h)
    busiest = max(originators_of.items(), key=lambda kv: len(kv[1]))
    return {
        "connections": len(connections),
        "packets_per_connection": float((orig_pkts + resp_pkts).mean()),
        "single_packet_share": float(((orig_pkts + resp_pkts) == 1).mean()),
        "one_way_share": float(((orig_pkts == 0) | (resp_pkts == 0)).mean()),
        "responder_silent_share": float((resp_pkts == 0).mean()),
        "originators": len({c[0] for c in connections}),
        "responders": len(originators_of),
        "busiest_responder_originators": len(busiest[1]),
        "busiest_responder_connections": sum(1 for c in connections if c[1] == busiest[0]),
    }


def classify_file(engine: Engine, capture: RealCapture, family: str) -> FileRun:
    """One capture through the engine as `packetclip classify FILE` runs it, labelled by the manifest."""
    run = FileRun(capture.file, family, capture.fine, sha256=capture.sha256)
    engine.reset()  # one capture, one sensor: no originator context or cache carried over from another file
    recorder = _ShapeRecorder(engine)
    verdicts: list[Verdict] = []
    summary = classify_captures(recorder, [capture.path], verdicts.append)  # type: ignore[arg-type]
    if summary.file_errors:
        run.error = "; ".join(summary.file_errors)
    run.shape = connection_shape(recorder.connections)
    for verdict in verdicts:
        label = capture.labeller.label(verdict)
        if isinstance(label, Drop):
            run.dropped[label.reason] += 1
            continue
        run.truth.append(label.coarse)
        run.fine_truth.append(label.fine)
        run.probabilities.append([verdict.scores[name] for name in COARSE_CLASSES])
        run.fine_predicted.append(verdict.attack)
    return run


def classify_manifest(
    bundle: Bundle | str | Path,
    manifest: Path,
    include: list[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[FileRun]:
    """Every (matching) file of a manifest, verified against its hashes, classified and labelled.

    One engine serves every file (loading the models once) and is reset before each, which leaves it where a
    fresh `packetclip classify FILE` process starts.
    """
    captures = load_manifest(Path(manifest), include)
    families = _families(Path(manifest))
    engine = Engine(bundle)
    runs = []
    try:
        for index, capture in enumerate(captures):
            runs.append(classify_file(engine, capture, families[capture.file]))
            if progress is not None:
                progress(index + 1, len(captures), capture.file)
    finally:
        engine.close()
    return runs


def _families(manifest: Path) -> dict[str, str]:
    return {
        row["file"].strip(): family_of(row["file"].strip(), row["label"].strip())
        for row in read_tsv(manifest, MANIFEST_COLUMNS)
    }


def scored_rows(runs: Sequence[FileRun]) -> ScoredRows:
    """The labelled connections of every file as aligned arrays."""
    truth, fine, probabilities, files, families = [], [], [], [], []
    for run in runs:
        truth += run.truth
        fine += run.fine_truth
        probabilities += run.probabilities
        files += [run.file] * len(run.truth)
        families += [run.family] * len(run.truth)
    return ScoredRows(
        np.asarray(truth, dtype=object),
        np.asarray(fine, dtype=object),
        np.asarray(probabilities, dtype=np.float64).reshape(-1, len(COARSE_CLASSES)),
        np.asarray(files, dtype=object),
        np.asarray(families, dtype=object),
    )


# ---------------------------------------------------------------------------------------------------------------
# Metrics (pure functions of arrays)


def argmax_labels(probabilities: np.ndarray, classes: Sequence[str] = COARSE_CLASSES) -> np.ndarray:
    """The most likely class of every row (the verdict's `label`)."""
    return np.asarray(classes, dtype=object)[np.asarray(probabilities).argmax(axis=1)]


def attack_scores(probabilities: np.ndarray) -> np.ndarray:
    """1 - P(benign): how strongly each row says "some attack", whichever."""
    return 1.0 - np.asarray(probabilities, dtype=np.float64)[:, COARSE_CLASSES.index(BENIGN)]


def operating_point_labels(
    probabilities: np.ndarray, threshold: float, classes: Sequence[str] = COARSE_CLASSES
) -> np.ndarray:
    """Benign unless 1 - P(benign) ≥ threshold; an attack takes the most likely non-benign class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    benign_column = list(classes).index(BENIGN)
    attack_columns = [i for i in range(len(classes)) if i != benign_column]
    names = np.full(len(probabilities), BENIGN, dtype=object)
    flagged = attack_scores(probabilities) >= threshold
    if flagged.any():
        best = np.asarray(attack_columns)[probabilities[flagged][:, attack_columns].argmax(axis=1)]
        names[flagged] = np.asarray(classes, dtype=object)[best]
    return names


def choose_threshold(
    benign_attack_scores: np.ndarray, budget: float = FALSE_ALARM_BUDGET, files: np.ndarray | None = None
) -> float | None:
    """The smallest threshold t whose flagged share (score ≥ t) of the benign rows is at most `budget`; None
    without benign rows.

    Without `files` every row weighs the same: at most floor(budget · n) rows may be flagged, so t lies just above
    the highest score left unflagged (ties there are all kept out). With `files` (one name per row) every file
    weighs the same and its rows share its weight: the budget is a share of the average file's connections, so
    one chatty capture cannot set the operating point for all the others (`file_macro` judges the same way).
    With the whole weight within the budget every row may be flagged and t is 0.
    """
    scores = np.asarray(benign_attack_scores, dtype=np.float64)
    if len(scores) == 0:
        return None
    if files is None:
        weights = np.full(len(scores), 1.0 / len(scores))
    else:
        _, owner, sizes = np.unique(np.asarray(files, dtype=str), return_inverse=True, return_counts=True)
        weights = 1.0 / (sizes[owner] * len(sizes))
    values, at = np.unique(scores, return_inverse=True)  # ascending; rows with one score are flagged together
    flagged = np.cumsum(np.bincount(at, weights=weights, minlength=len(values))[::-1])  # highest values first
    # how many of the highest values may be flagged (1e-9: 29 rows of 1/100 sum to 0.29000000000000004, within a
    # budget of 0.29)
    fits = int((flagged <= budget * (1 + 1e-9) + 1e-12).sum())
    if fits >= len(values):
        return 0.0
    return float(np.nextafter(values[::-1][fits], np.inf))


def recall_by_class(
    truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str] = COARSE_CLASSES
) -> dict[str, float | None]:
    """Share of each class's rows predicted as that class; None for a class with no rows."""
    truth, predicted = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    out: dict[str, float | None] = {}
    for name in classes:
        rows = truth == name
        out[name] = float((predicted[rows] == name).mean()) if rows.any() else None
    return out


def false_alarm_rate(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Share of benign rows given any other label; None without benign rows."""
    benign = np.asarray(truth, dtype=object) == BENIGN
    if not benign.any():
        return None
    return float((np.asarray(predicted, dtype=object)[benign] != BENIGN).mean())


def file_macro(
    truth: np.ndarray, predicted: np.ndarray, files: np.ndarray, classes: Sequence[str] = COARSE_CLASSES
) -> dict[str, Any]:
    """Recall per class and false-alarm rate averaged over files (each file with rows of a class once)."""
    truth, predicted, files = (np.asarray(a, dtype=object) for a in (truth, predicted, files))
    per_class: dict[str, list[float]] = {name: [] for name in classes}
    alarms: list[float] = []
    for file in dict.fromkeys(files.tolist()):
        rows = files == file
        for name, value in recall_by_class(truth[rows], predicted[rows], classes).items():
            if value is not None:
                per_class[name].append(value)
        rate = false_alarm_rate(truth[rows], predicted[rows])
        if rate is not None:
            alarms.append(rate)
    return {
        "recall": {name: float(np.mean(v)) if v else None for name, v in per_class.items()},
        "files_per_class": {name: len(v) for name, v in per_class.items()},
        "false_alarm": float(np.mean(alarms)) if alarms else None,
        "files_with_benign": len(alarms),
    }


def mauc(
    truth: np.ndarray, probabilities: np.ndarray, classes: Sequence[str] = COARSE_CLASSES
) -> dict[str, Any]:
    """One-vs-rest AUC of each class with positive and negative rows, and their mean (`metrics`' rule)."""
    truth = np.asarray(truth, dtype=object)
    if len(truth) == 0:
        return {"mauc": None, "auc": dict.fromkeys(classes), "scoreable": []}
    rows = per_class_auc(truth, np.asarray(probabilities, dtype=np.float64), list(classes))
    aucs = {name: row["auc"] for name, row in rows.items()}
    return {"mauc": mean_auc(aucs), "auc": aucs, "scoreable": [n for n, v in aucs.items() if v is not None]}


def summarize(
    truth: np.ndarray,
    probabilities: np.ndarray,
    predicted: np.ndarray,
    files: np.ndarray,
    *,
    with_auc: bool = True,
) -> dict[str, Any]:
    """Connection-level and per-file-macro recall and false alarms of one group of rows (a family, all)."""
    truth = np.asarray(truth, dtype=object)
    counts = Counter(truth.tolist())
    macro = file_macro(truth, predicted, files)
    summary: dict[str, Any] = {
        "files": len(set(np.asarray(files, dtype=object).tolist())),
        "connections": len(truth),
        "truth": {name: counts.get(name, 0) for name in COARSE_CLASSES},
        "predicted": dict(Counter(np.asarray(predicted, dtype=object).tolist()).most_common()),
        "recall": recall_by_class(truth, predicted),
        "false_alarm": false_alarm_rate(truth, predicted),
        "file_macro": macro,
    }
    if with_auc:
        summary.update(mauc(truth, probabilities))
    return summary


def by_family(
    rows: ScoredRows, predicted: np.ndarray, *, with_auc: bool = True
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """`summarize` for every family (attack families first, then benign ones by name) and for all rows."""
    families = sorted(set(rows.families.tolist()), key=lambda f: (f not in ATTACK_FAMILIES, f))
    out = {}
    for family in families:
        mask = rows.families == family
        out[family] = summarize(
            rows.truth[mask], rows.probabilities[mask], predicted[mask], rows.files[mask], with_auc=with_auc
        )
    overall = summarize(rows.truth, rows.probabilities, predicted, rows.files, with_auc=with_auc)
    return out, overall


def operating_point(
    rows: ScoredRows, calibration: Sequence[str], budget: float = FALSE_ALARM_BUDGET
) -> dict[str, Any]:
    """Threshold chosen on the benign rows of the `calibration` families (each file weighing the same:
    `choose_threshold`), judged on every other benign row.

    Every family's numbers at that threshold are given; the calibration families' false alarms are in-sample
    (at most the budget by construction), the held-out ones are the honest estimate.
    """
    calibrating = np.isin(rows.families, np.asarray(list(calibration), dtype=object))
    benign = rows.truth == BENIGN
    chosen = calibrating & benign
    threshold = choose_threshold(attack_scores(rows.probabilities[chosen]), budget, rows.files[chosen])
    if threshold is None:
        raise ValueError(f"no benign connection in calibration families {list(calibration)}")
    predicted = operating_point_labels(rows.probabilities, threshold)
    held_out = ~calibrating & benign
    families, overall = by_family(rows, predicted, with_auc=False)
    held_out_families = sorted(set(rows.families[held_out].tolist()))
    return {
        "calibration": list(calibration),
        "budget": budget,
        "threshold": threshold,
        "calibration_benign": int((calibrating & benign).sum()),
        "calibration_false_alarm": false_alarm_rate(rows.truth[calibrating], predicted[calibrating]),
        "held_out": held_out_families,
        "held_out_benign": int(held_out.sum()),
        "held_out_false_alarm": false_alarm_rate(rows.truth[held_out], predicted[held_out]),
        "held_out_false_alarm_file_macro": file_macro(
            rows.truth[held_out], predicted[held_out], rows.files[held_out]
        )["false_alarm"],
        "families": families,
        "overall": overall,
    }


def benign_families(rows: ScoredRows) -> list[str]:
    """Families made only of benign files: the ones thresholds are calibrated on, in turn."""
    return sorted(
        f
        for f in set(rows.families.tolist())
        if f not in ATTACK_FAMILIES and (rows.truth[rows.families == f] == BENIGN).all()
    )


def file_rows(runs: Sequence[FileRun], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per capture: label counts, predictions at argmax and at each operating point, recall, shape."""
    out = []
    for run in runs:
        truth = np.asarray(run.truth, dtype=object)
        probabilities = np.asarray(run.probabilities, dtype=np.float64).reshape(-1, len(COARSE_CLASSES))
        predicted = argmax_labels(probabilities) if len(truth) else np.empty(0, dtype=object)
        row: dict[str, Any] = {
            "file": run.file,
            "family": run.family,
            "manifest_attack": run.manifest_attack,
            "connections": len(truth),
            "truth": dict(Counter(truth.tolist()).most_common()),
            "predicted": dict(Counter(predicted.tolist()).most_common()),
            "predicted_fine": dict(Counter(run.fine_predicted).most_common()),
            "recall": {k: v for k, v in recall_by_class(truth, predicted).items() if v is not None},
            "false_alarm": false_alarm_rate(truth, predicted),
            "at_operating_point": {},
            "dropped": dict(run.dropped),
            "shape": run.shape,
        }
        for name, threshold in thresholds.items():
            at = operating_point_labels(probabilities, threshold) if len(truth) else predicted
            row["at_operating_point"][name] = {
                "predicted": dict(Counter(at.tolist()).most_common()),
                "recall": {k: v for k, v in recall_by_class(truth, at).items() if v is not None},
                "false_alarm": false_alarm_rate(truth, at),
            }
        if run.error:
            row["error"] = run.error
        out.append(row)
    return out


def dataset_file_splits(dataset: Path) -> dict[str, str]:
    """sha256 → split of every real capture a built dataset holds connections of. Whole files go to one split
    (`dataset.splits.file_split`, or test for a family the recipe keeps out of training): read back from the
    splits themselves, the files named as the dataset card lists its inputs."""
    card = json.loads((Path(dataset) / "card.json").read_text(encoding="utf-8"))
    digests = {item["path"]: item["sha256"] for item in card.get("inputs", []) if item.get("kind") == "real"}
    splits: dict[str, str] = {}
    for split in DATASET_SPLITS:
        columns = read_columns(dataset, split, ["source_file", "source_kind"])
        for source in np.unique(columns["source_file"][columns["source_kind"] == "real"]):
            if str(source) in digests:
                splits[digests[str(source)]] = split
    return splits


def by_split(
    runs: Sequence[FileRun], splits: Mapping[str, str], shipped: float | None
) -> dict[str, dict[str, Any]]:
    """Per split of a dataset (and `NOT_IN_DATASET` for files it holds no connection of): the files' numbers by
    family at argmax and at the bundle's operating point. The test split's files are the ones no stage of a
    bundle trained on that dataset saw."""
    out: dict[str, dict[str, Any]] = {}
    for split in (*DATASET_SPLITS, NOT_IN_DATASET):
        chosen = [run for run in runs if splits.get(run.sha256, NOT_IN_DATASET) == split]
        rows = scored_rows(chosen)
        if not len(rows):
            continue
        families, overall = by_family(rows, argmax_labels(rows.probabilities))
        entry: dict[str, Any] = {"files": len(chosen), "argmax": {"families": families, "overall": overall}}
        if shipped is not None:
            entry["shipped"] = _at_threshold(rows, shipped)
        out[split] = entry
    return out


def _at_threshold(rows: ScoredRows, threshold: float) -> dict[str, Any]:
    """`by_family` of the verdicts a sensor gives at an attack threshold (no AUCs: they do not depend on it)."""
    families, overall = by_family(rows, operating_point_labels(rows.probabilities, threshold), with_auc=False)
    return {"families": families, "overall": overall}


def evaluate_runs(
    runs: Sequence[FileRun],
    budget: float = FALSE_ALARM_BUDGET,
    shipped: float | None = None,
    splits: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every number of the real-traffic evaluation from classified, labelled files (JSON-ready); `shipped` is
    the bundle's own operating point (`Bundle.attack_threshold`), judged on every family as the sensor applies it;
    `splits` (sha256 → split, `dataset_file_splits`) adds the numbers per split of the bundle's dataset."""
    rows = scored_rows(runs)
    families, overall = by_family(
        rows, argmax_labels(rows.probabilities) if len(rows) else np.empty(0, object)
    )
    shipped_point = None
    if shipped is not None and len(rows):
        shipped_point = {"threshold": shipped, **_at_threshold(rows, shipped)}
    # each benign family in turn calibrates and the others judge (with a single one nothing is held out)
    points = {
        f"calibrated on {family}": operating_point(rows, [family], budget) for family in benign_families(rows)
    }
    dropped: Counter[str] = Counter()
    for run in runs:
        dropped.update(run.dropped)
    thresholds = {name: point["threshold"] for name, point in points.items()}
    if shipped_point is not None:
        thresholds = {SHIPPED: shipped, **thresholds}
    return {
        "family_rule": FAMILY_RULE,
        "files": len(runs),
        "connections": len(rows),
        "dropped": dict(dropped),
        "file_errors": {run.file: run.error for run in runs if run.error},
        # tunnels, SCTP, routing protocols: nothing the featurizer makes a connection of
        "files_without_connections": [run.file for run in runs if not run.truth and not run.dropped],
        "argmax": {"families": families, "overall": overall},
        "shipped": shipped_point,
        "operating_points": points,
        "per_file": file_rows(runs, thresholds),
        "shape_by_family": _shape_by_family(runs),
        "by_split": None if splits is None else by_split(runs, splits, shipped),
    }


def _shape_by_family(runs: Sequence[FileRun]) -> dict[str, dict[str, Any]]:
    """Connection-weighted packets per connection and one-way share per family."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run.shape.get("connections"):
            grouped[run.family].append(run.shape)
    out = {}
    for family, shapes in sorted(grouped.items()):
        weights = np.asarray([s["connections"] for s in shapes], dtype=float)
        out[family] = {
            "connections": int(weights.sum()),
            **{
                key: float(np.average([s[key] for s in shapes], weights=weights))
                for key in ("packets_per_connection", "single_packet_share", "one_way_share")
            },
        }
    return out


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _pct(value: float | None) -> str:
    return format_score(None if value is None else 100 * value, 1) + ("" if value is None else " %")


def _recall_cells(summary: Mapping[str, Any], key: str = "recall") -> list[str]:
    """Recall per attack class and benign, with the per-file-macro value beside it where it differs."""
    cells = []
    for name in COARSE_CLASSES:
        value = summary[key][name]
        macro = summary["file_macro"]["recall"][name]
        text = format_score(value)
        if value is not None and macro is not None and abs(macro - value) >= 0.0005:
            text += f" ({format_score(macro)})"
        cells.append(text)
    return cells


def _family_table(families: Mapping[str, Mapping], overall: Mapping, with_auc: bool) -> list[str]:
    header = ["family", "files", "connections", *(f"recall {c}" for c in COARSE_CLASSES), "benign FA"]
    if with_auc:
        header += ["mAUC", "AUC classes"]
    table = []
    for name, summary in [*families.items(), ("**all**", overall)]:
        fa, fa_macro = summary["false_alarm"], summary["file_macro"]["false_alarm"]
        fa_text = _pct(fa) + (f" ({_pct(fa_macro)})" if fa is not None and fa_macro is not None else "")
        row = [name, summary["files"], summary["connections"], *_recall_cells(summary), fa_text]
        if with_auc:
            row += [format_score(summary["mauc"]), ", ".join(summary["scoreable"]) or "—"]
        table.append(row)
    return markdown_table(header, table)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The compact block: per family at argmax, the operating points, and the attack files one by one."""
    bundle = results.get("bundle", {})
    lines = [
        f"## Real traffic: {bundle.get('name', '?')} {bundle.get('version', '')}".rstrip(),
        "",
        _overview(results),
        "",
        "### At the argmax verdict",
        "",
        *_family_table(results["argmax"]["families"], results["argmax"]["overall"], with_auc=True),
    ]
    shipped = results.get("shipped")
    if shipped:
        lines += [
            "",
            f"### At the bundle's operating point: attack if 1 − P(benign) ≥ {shipped['threshold']:.4g}",
            "",
            "What the sensor reports (the threshold was chosen in training, on real benign captures of the "
            "validation split).",
            "",
            *_family_table(shipped["families"], shipped["overall"], with_auc=False),
        ]
    if results.get("by_split"):
        lines += ["", *_split_section(results["by_split"], shipped)]
    for name, point in results["operating_points"].items():
        lines += ["", *_operating_point_section(name, point)]
    attack_files = [row for row in results["per_file"] if row["family"] in ATTACK_FAMILIES]
    points = ([SHIPPED] if shipped else []) + list(results["operating_points"])
    if attack_files:
        lines += ["", *_attack_files_section(attack_files, points)]
    return "\n".join(lines) + "\n"


def _overview(results: Mapping[str, Any]) -> str:
    dropped = sum(results["dropped"].values())
    text = f"{results['files']:,} captures, {results['connections']:,} labelled connections"
    if dropped:
        text += f" ({dropped:,} dropped by the labelling rule: {results['dropped']})"
    if results["file_errors"]:
        text += f"; {len(results['file_errors'])} captures unreadable"
    if results["files_without_connections"]:
        text += (
            f"; {len(results['files_without_connections'])} captures gave no connection (tables count files "
        )
        text += "with at least one)"
    return (
        f"{text}. Families: {results['family_rule']}. Recall is connection-level, with the per-file mean in "
        "brackets where it differs; benign FA is the share of benign connections labelled anything else "
        "(per-file mean in brackets); — where a family has no such rows."
    )


def _split_section(splits: Mapping[str, Mapping[str, Any]], shipped: Mapping[str, Any] | None) -> list[str]:
    lines = [
        "### By the dataset's split",
        "",
        "Whole files, as the bundle's dataset split them: its test split's files were held out of every stage "
        "(its validation split's chose the operating point), so their numbers are the honest ones; the training "
        "split's are in-sample.",
    ]
    for split, entry in splits.items():
        lines += ["", f"**{split}** ({entry['files']:,} files), at the argmax verdict:", ""]
        lines += _family_table(entry["argmax"]["families"], entry["argmax"]["overall"], with_auc=True)
        if shipped and "shipped" in entry:
            lines += ["", f"**{split}**, at the bundle's operating point ({shipped['threshold']:.4g}):", ""]
            lines += _family_table(entry["shipped"]["families"], entry["shipped"]["overall"], with_auc=False)
    return lines


def _operating_point_section(name: str, point: Mapping[str, Any]) -> list[str]:
    return [
        f"### Operating point {name}: attack if 1 − P(benign) ≥ {point['threshold']:.4g}",
        "",
        f"The smallest threshold with ≤ {_pct(point['budget'])} false alarms, each file weighing the same, on "
        f"{point['calibration_benign']:,} benign connections of {', '.join(point['calibration'])} (in-sample "
        f"{_pct(point['calibration_false_alarm'])} of the connections); held out: {', '.join(point['held_out']) or 'nothing'}, "
        f"{point['held_out_benign']:,} benign connections, false alarms "
        f"**{_pct(point['held_out_false_alarm'])}** "
        f"(per-file mean {_pct(point['held_out_false_alarm_file_macro'])}).",
        "",
        *_family_table(point["families"], point["overall"], with_auc=False),
    ]


def _attack_files_section(rows: Sequence[Mapping[str, Any]], points: Sequence[str]) -> list[str]:
    header = ["file", "class", "connections", "predicted (argmax)", "recall"]
    header += [f"recall, {p}" for p in points]
    header += ["pkts/conn", "one-way", "originators (busiest responder's)"]
    table = []
    for row in rows:
        coarse, shape = coarse_of(row["manifest_attack"]), row["shape"]
        table.append(
            [
                row["file"],
                row["manifest_attack"],
                row["connections"],
                ", ".join(f"{k} {v:,}" for k, v in row["predicted"].items()),
                format_score(row["recall"].get(coarse)),
                *(format_score(row["at_operating_point"][p]["recall"].get(coarse)) for p in points),
                format_score(shape.get("packets_per_connection"), 2),
                _pct(shape.get("one_way_share")),
                f"{shape.get('originators', 0):,} ({shape.get('busiest_responder_originators', 0):,})",
            ]
        )
    return ["### Attack captures", "", *markdown_table(header, table)]
