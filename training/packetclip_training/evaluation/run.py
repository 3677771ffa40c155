"""The evaluation: every number the report states, computed in one run on one dataset's test split.

Owns the order of work and the results dictionary: the reasoner's verdicts (coarse and fine, held-out variants,
real captures per file), zero-shot classification, the comparison models on the same rows, the data-scarcity
curve, unseen classes, an embedding sample for the plot and, given an exported bundle, the efficiency comparison.
Metrics, figures and markdown come from `evaluation.metrics`, `.figures` and `.report`; models from theirs.

What "honest" means here: the test split is flow- and time-disjoint from training (whole attack episodes, a guard
gap for other traffic, whole real files) and holds the held-out attack variants, which no stage trains on. The
packet encoder's self-supervised pretraining reads only the train split. The data-scarcity curve subsamples the
labelled rows the reasoner and the baselines learn from; contexts (the originators' recent packets) are unlabelled
traffic a sensor has anyway, so they stay whole.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import Mission
from packetclip_training.align.run import run_alignment
from packetclip_training.align.train import AlignConfig
from packetclip_training.align.zeroshot import (
    class_matrix,
    prompt_embeddings,
    scores,
)
from packetclip_training.align.zeroshot import (
    evaluate as zeroshot_evaluate,
)
from packetclip_training.baselines.features import feature_matrix, read_facts
from packetclip_training.evaluation.comparisons import capped_rows, class_indices, fit_tabular
from packetclip_training.evaluation.metrics import (
    aggregate_to_coarse,
    grouped_metrics,
    level_metrics,
    unseen_class_metrics,
)
from packetclip_training.evaluation.real import (
    ATTACK_FAMILIES,
    FALSE_ALARM_BUDGET,
    ScoredRows,
    argmax_labels,
    attack_scores,
    by_family,
    choose_threshold,
    false_alarm_rate,
    family_of,
    file_macro,
    mauc,
    operating_point_labels,
    recall_by_class,
    summarize,
)
from packetclip_training.models.encoder import PacketEncoder
from packetclip_training.models.heads import AlignmentHeads
from packetclip_training.models.reasoner import Reasoner
from packetclip_training.reasoner.data import SplitEmbeddings
from packetclip_training.reasoner.fit import fit_reasoner, training_arrays
from packetclip_training.reasoner.model import TrainConfig, predict

log = logging.getLogger(__name__)

ATTACK_CLASSES = [c for c in FINE_CLASSES if c != "benign"]
PACKETCLIP = "PacketCLIP"  # the reasoner's row in the real-traffic block
PACKETCLIP_AT_POINT = f"{PACKETCLIP} at its operating point"  # its row at the bundle's decision rule


@dataclass
class EvaluateConfig:
    fractions: tuple[float, ...] = (1.0, 0.7, 0.5, 0.4, 0.3, 0.1)
    unseen: tuple[str, ...] = ("slowloris", "os_scan", "dictionary_attack")  # one per attack mission
    reasoner: TrainConfig = field(default_factory=TrainConfig)
    # the settings of every alignment the evaluation retrains (unseen classes, left-out families): the main
    # alignment's, as its checkpoint records them (`align.train.recorded_config`)
    align: AlignConfig = field(default_factory=AlignConfig)
    comparison_cap: int = 20_000  # train rows per fine class for the tabular models
    comparison_models: tuple[str, ...] = ("lightgbm", "xgboost", "dnn", "linear")
    flow_models: tuple[str, ...] = ("lightgbm", "xgboost")
    align_per_class: int = 3000  # as the align command's default
    embedding_points: int = 3000
    # the 100 % point of the data-scarcity curve: the main reasoner, or one retrained with `reasoner`'s settings
    # (the fair choice when those are lighter than the main model's, so every point has the same budget)
    scarcity_reuses_main: bool = False
    seed: int = 0


@dataclass
class Inputs:
    """Everything trained before the evaluation, frozen during it."""

    dataset: Path
    encoder: PacketEncoder
    heads: AlignmentHeads
    reasoner: Reasoner
    missions: list[Mission]
    splits: dict[str, SplitEmbeddings]
    reasoner_train: SplitEmbeddings  # what retrained reasoners fit: the train split, with its one-sided view
    encode_texts: Callable[[list[str]], np.ndarray]
    concept_text: Callable[[AlignmentHeads], np.ndarray]  # concept embeddings through a given g_T
    work: Path  # scratch directory for the unseen-class alignment runs


def _labels(split: SplitEmbeddings) -> np.ndarray:
    return np.asarray([str(v) for v in split.columns["fine"]], dtype=object)


def _coarse_truth(fine: np.ndarray) -> np.ndarray:
    return np.asarray([FINE_TO_COARSE.get(str(v), "") for v in fine], dtype=object)


def verdict_metrics(fine_truth: np.ndarray, coarse: np.ndarray, fine: np.ndarray) -> dict[str, Any]:
    """Coarse and fine metrics of one model's probabilities."""
    return {
        "coarse": level_metrics(_coarse_truth(fine_truth), coarse, list(COARSE_CLASSES)),
        "fine": level_metrics(fine_truth, fine, list(FINE_CLASSES)),
    }


def heldout_variants(split: SplitEmbeddings, fine: np.ndarray) -> dict[str, Any]:
    """Fine-class metrics per held-out variant (tools and settings no stage trained on)."""
    heldout = split.columns["heldout"].astype(bool)
    truth = _labels(split)
    variants = np.asarray([str(v) for v in split.columns["variant"]], dtype=object)
    return grouped_metrics(truth[heldout], fine[heldout], list(FINE_CLASSES), variants[heldout])


def _overall(
    split: SplitEmbeddings, truth: np.ndarray, coarse: np.ndarray, fine: np.ndarray, heldout: bool
) -> dict:
    """Metrics over the rows of held-out variants (`heldout`) or over every other row (tools trained on)."""
    rows = split.columns["heldout"].astype(bool) == heldout
    return {"rows": int(rows.sum()), **verdict_metrics(truth[rows], coarse[rows], fine[rows])}


def per_file(split: SplitEmbeddings, fine: np.ndarray) -> dict[str, Any]:
    """Fine-class metrics per real capture file of the test split."""
    real = np.asarray([str(v) == "real" for v in split.columns["source_kind"]])
    files = np.asarray([str(v) for v in split.columns["source_file"]], dtype=object)
    return grouped_metrics(_labels(split)[real], fine[real], list(FINE_CLASSES), files[real], min_rows=1)


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values.astype(str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def reasoner_probabilities(model: Reasoner, split: SplitEmbeddings) -> tuple[np.ndarray, np.ndarray]:
    coarse, fine, _, _ = predict(model, training_arrays(split, FINE_CLASSES))
    return coarse.astype(np.float64), fine.astype(np.float64)


def zero_shot(heads: AlignmentHeads, prompts: np.ndarray, split: SplitEmbeddings) -> dict[str, Any]:
    """Zero-shot fine classification from class descriptions alone: all 11 classes, and the 10 attack classes."""
    classes = class_matrix(heads, prompts)
    logits = scores(heads, split.connection, classes)
    truth = _labels(split)
    result = {"all_classes": zeroshot_evaluate(logits, truth)}
    attack = np.asarray([t != "benign" for t in truth])
    attack_columns = [FINE_CLASSES.index(c) for c in ATTACK_CLASSES]
    result["attack_classes"] = zeroshot_evaluate(
        logits[attack][:, attack_columns], truth[attack], ATTACK_CLASSES
    )
    return result


def comparisons(
    inputs: Inputs, config: EvaluateConfig, fraction: float = 1.0, which: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Flow-feature boosting and embedding-based models, trained on the same train rows; test probabilities."""
    train, val, test = (inputs.splits[s] for s in ("train", "val", "test"))
    labels = {s: class_indices(_labels(inputs.splits[s])) for s in ("train", "val", "test")}
    rows = capped_rows(labels["train"], config.comparison_cap, config.seed, fraction)
    val_rows = capped_rows(labels["val"], config.comparison_cap, config.seed)
    facts = {s: feature_matrix(read_facts(inputs.dataset, s)).values for s in ("train", "val", "test")}
    wanted = which or [f"flow_{m}" for m in config.flow_models] + [
        f"embedding_{m}" for m in config.comparison_models
    ]
    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        source, model = name.split("_", 1)
        matrix = (
            facts
            if source == "flow"
            else {"train": train.connection, "val": val.connection, "test": test.connection}
        )
        scored = fit_tabular(
            model,
            matrix["train"][rows],
            labels["train"][rows],
            matrix["val"][val_rows],
            labels["val"][val_rows],
            matrix["test"],
            config.seed,
        )
        coarse, _ = aggregate_to_coarse(
            scored.fine, list(FINE_CLASSES), dict(FINE_TO_COARSE), list(COARSE_CLASSES)
        )
        out[name] = {
            "coarse": coarse,
            "fine": scored.fine,
            "seconds": scored.seconds,
            "train_rows": scored.train_rows,
        }
    return out


def scarcity(inputs: Inputs, config: EvaluateConfig, full: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Coarse mAUC at each share of the labelled training rows, for the reasoner and the flow baselines."""
    test = inputs.splits["test"]
    coarse_truth = _coarse_truth(_labels(test))
    curve: dict[str, dict[str, float | None]] = {"PacketCLIP reasoner": {}}
    for fraction in config.fractions:
        key = f"{round(fraction * 100)}"
        if fraction >= 1.0 and config.scarcity_reuses_main:
            coarse = full[0]
        else:
            fit = fit_reasoner(
                inputs.reasoner_train,
                None,
                inputs.heads,
                inputs.missions,
                inputs.concept_text(inputs.heads),
                config.reasoner,
                fraction=fraction,
            )
            coarse = reasoner_probabilities(fit.model, test)[0]
        curve["PacketCLIP reasoner"][key] = level_metrics(coarse_truth, coarse, list(COARSE_CLASSES))["mauc"]
        flows = comparisons(inputs, config, fraction, [f"flow_{m}" for m in config.flow_models])
        for name, scored in flows.items():
            label = f"flow {name.split('_', 1)[1]}"
            metrics = level_metrics(coarse_truth, scored["coarse"], list(COARSE_CLASSES))
            curve.setdefault(label, {})[key] = metrics["mauc"]
        log.info("scarcity %s%%: %s", key, {k: v.get(key) for k, v in curve.items()})
    return {"fractions": [round(f * 100) for f in config.fractions], "coarse_mauc": curve}


def unseen(inputs: Inputs, config: EvaluateConfig, name: str) -> dict[str, Any]:
    """Alignment and reasoner trained without `name`; then detect it from its description alone."""
    started = time.monotonic()
    heads = _heads_without(inputs, config, inputs.work / f"unseen-{name}", exclude=(name,))
    test = inputs.splits["test"]
    truth = _labels(test)
    prompts = prompt_embeddings(inputs.encode_texts)
    logits = scores(heads, test.connection, class_matrix(heads, prompts))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probability = shifted[:, FINE_CLASSES.index(name)] / shifted.sum(axis=1)
    result: dict[str, Any] = {"class": name, "zero_shot": unseen_class_metrics(truth, probability, name)}
    classes = [c for c in FINE_CLASSES if c != name]
    fit = fit_reasoner(
        inputs.reasoner_train,
        None,
        heads,
        inputs.missions,
        inputs.concept_text(heads),
        config.reasoner,
        classes=classes,
    )
    coarse, _ = reasoner_probabilities(fit.model, test)
    mask = truth == name
    predicted = np.asarray(COARSE_CLASSES, dtype=object)[np.argmax(coarse, axis=1)]
    result["reasoner_without_class"] = {
        "connections": int(mask.sum()),
        "predicted_coarse": _counts(predicted[mask]),
        "flagged_as_attack": float(np.mean(predicted[mask] != "benign")) if mask.any() else None,
        "right_coarse_class": float(np.mean(predicted[mask] == FINE_TO_COARSE[name])) if mask.any() else None,
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def embedding_sample(inputs: Inputs, config: EvaluateConfig) -> dict[str, np.ndarray]:
    """Aligned vectors of a class-balanced test sample, for the embedding plot."""
    test = inputs.splits["test"]
    labels = _labels(test)
    rows = capped_rows(
        class_indices(labels), max(1, config.embedding_points // len(FINE_CLASSES)), config.seed
    )
    with torch.no_grad():
        aligned = inputs.heads.project_packets(torch.from_numpy(test.connection[rows])).numpy()
    return {"embeddings": aligned, "labels": labels[rows]}


def during_attacks(splits: Sequence[SplitEmbeddings], rows: SplitEmbeddings) -> np.ndarray:
    """bool (n,) over `rows`: the connection started while an attack episode of its own lab run was under way,
    from the first to the last connection start of the episode as the `splits` (every split: an episode of one
    split can overlap another split's benign traffic) hold it. Benign requests to a server under a flood meet
    that flood's victim-side activity; this tells their false alarms apart from quiet-time ones."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for split in splits:
        episode = split.columns["episode"].astype(str)
        attack = episode != ""
        if not attack.any():
            continue
        frame = pd.DataFrame(
            {
                "source": split.columns["source"].astype(str)[attack],
                "episode": episode[attack],
                "ts": split.columns["ts"].astype(np.float64)[attack],
            }
        )
        for (source, _), ts in frame.groupby(["source", "episode"])["ts"]:
            spans.setdefault(str(source), []).append((float(ts.min()), float(ts.max())))
    inside = np.zeros(len(rows), bool)
    sources = rows.columns["source"].astype(str)
    ts = rows.columns["ts"].astype(np.float64)
    for source, intervals in spans.items():
        mine = np.flatnonzero(sources == source)
        if not len(mine):
            continue
        starts, ends = np.array(sorted(intervals)).T
        ends = np.maximum.accumulate(ends)  # sorted by start: the latest end reached so far covers overlaps
        last = np.searchsorted(starts, ts[mine], side="right") - 1
        inside[mine] = (last >= 0) & (ts[mine] <= ends[np.maximum(last, 0)])
    return inside


def operating_point(
    inputs: Inputs, test_coarse: np.ndarray, budget: float = FALSE_ALARM_BUDGET
) -> dict[str, Any] | None:
    """The decision rule the bundle ships: the smallest `attack_threshold` (an attack only when 1 - P(benign)
    reaches it) that raises at most `budget` of the real benign connections of the validation split — whole
    capture files no stage trained on — then judged on the test split's real benign files (other files again),
    its lab benign traffic and every class's recall. None when the validation split holds no real benign traffic.
    """
    val = inputs.splits["val"]
    val_coarse, _ = reasoner_probabilities(inputs.reasoner, val)
    val_truth = _coarse_truth(_labels(val))
    calibration = (val.columns["source_kind"].astype(str) == "real") & (val_truth == "benign")
    calibration_files = val.columns["source"].astype(str)[calibration]
    threshold = choose_threshold(attack_scores(val_coarse[calibration]), budget, calibration_files)
    if threshold is None:
        return None
    test = inputs.splits["test"]
    truth = _coarse_truth(_labels(test))
    kind = test.columns["source_kind"].astype(str)
    at_point = operating_point_labels(test_coarse, threshold)
    at_argmax = argmax_labels(test_coarse)
    files = test.columns["source"].astype(str)
    judged: dict[str, Any] = {}
    lab = kind == "lab"
    attacking = during_attacks(list(inputs.splits.values()), test)
    groups = (
        ("real", kind == "real"),
        ("lab", lab),
        ("lab_during_attacks", lab & attacking),
        ("lab_outside_attacks", lab & ~attacking),
        ("all", np.ones(len(kind), bool)),
    )
    for name, rows in groups:
        judged[name] = {
            "connections": int(rows.sum()),
            "benign_connections": int((rows & (truth == "benign")).sum()),
            "false_alarms": false_alarm_rate(truth[rows], at_point[rows]),
            "false_alarms_argmax": false_alarm_rate(truth[rows], at_argmax[rows]),
            "false_alarms_file_macro": file_macro(truth[rows], at_point[rows], files[rows])["false_alarm"],
            "recall": recall_by_class(truth[rows], at_point[rows]),
            "recall_argmax": recall_by_class(truth[rows], at_argmax[rows]),
        }
    return {
        "attack_threshold": threshold,
        "budget": budget,
        "chosen_on": "real benign connections of the validation split (whole capture files held out of training)",
        "weighting": "each file weighs the same",
        "calibration_connections": int(calibration.sum()),
        "calibration_files": len(set(calibration_files.tolist())),
        "calibration_false_alarms": false_alarm_rate(
            val_truth[calibration], operating_point_labels(val_coarse[calibration], threshold)
        ),
        "calibration_false_alarms_file_macro": file_macro(
            val_truth[calibration],
            operating_point_labels(val_coarse[calibration], threshold),
            calibration_files,
        )["false_alarm"],
        "test": judged,
    }


def real_families(split: SplitEmbeddings) -> np.ndarray:
    """Each row's real source family (`evaluation.real.family_of`; a file is an attack file when any of its
    connections is labelled an attack), "" for the lab's rows."""
    out = np.full(len(split), "", dtype=object)
    real = np.flatnonzero(split.columns["source_kind"].astype(str) == "real")
    files = split.columns["source"].astype(str)[real]
    attack_files = set(files[_coarse_truth(_labels(split))[real] != "benign"].tolist())
    out[real] = [family_of(f, "attack" if f in attack_files else "benign") for f in files.tolist()]
    return out


def real_traffic(
    test: SplitEmbeddings, models: dict[str, np.ndarray], threshold: float | None
) -> dict[str, Any] | None:
    """The test split's real captures — whole files no stage trained on, the held-out source families among
    them — by source family (`evaluation.real.family_of`): every model's recall per coarse class, benign false
    alarms and mAUC at its argmax verdict, and PacketCLIP's at its operating point. `models` maps a name to its
    coarse probabilities over the whole test split. None when the test split holds no real capture."""
    families = real_families(test)
    real = families != ""
    if not real.any():
        return None
    files = test.columns["source"].astype(str)[real].astype(object)
    truth = _coarse_truth(_labels(test))[real].astype(object)
    rows = ScoredRows(truth, truth, np.zeros((len(truth), len(COARSE_CLASSES))), files, families[real])
    out: dict[str, Any] = {"families": sorted(set(families[real].tolist())), "models": {}}
    for name, coarse in models.items():
        rows.probabilities = coarse[real]
        by, overall = by_family(rows, argmax_labels(rows.probabilities))
        out["models"][name] = {"families": by, "overall": overall}
        if name == PACKETCLIP and threshold is not None:
            by, overall = by_family(
                rows, operating_point_labels(rows.probabilities, threshold), with_auc=False
            )
            out["models"][PACKETCLIP_AT_POINT] = {"families": by, "overall": overall}
    return out


@dataclass
class FlowFacts:
    """Every split's flow-baseline features, labels and sources, read once for all the left-out families."""

    matrix: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    sources: dict[str, np.ndarray]

    @classmethod
    def read(cls, dataset: Path) -> FlowFacts:
        facts = {s: read_facts(dataset, s, extra=("source",)) for s in ("train", "val", "test")}
        return cls(
            {s: feature_matrix(f).values for s, f in facts.items()},
            {s: class_indices(f["fine"]) for s, f in facts.items()},
            {s: f["source"].astype(str) for s, f in facts.items()},
        )


def leave_family_out(
    inputs: Inputs,
    config: EvaluateConfig,
    family: str,
    families: dict[str, np.ndarray],
    flows: FlowFacts,
) -> dict[str, Any]:
    """Alignment, reasoner and flow baselines retrained without one real source family's files (unless no stage
    trained on them: then the main models), then judged on
    every connection of that family (whichever split holds its files) and, for the mAUC, on every real
    connection no model here trained on (the family's and the test split's other real files). The operating
    point is chosen again on the validation split's real benign files outside the family. The encoder stays:
    its pretraining reads no labels (it has read the bytes of the family's training files; the recipe's
    `real.test_only` families it has not). `families`: `real_families` of each split."""
    started = time.monotonic()
    splits = inputs.splits
    sources = sorted(
        {str(s) for name, split in splits.items() for s in split.columns["source"][families[name] == family]}
    )
    excluded = np.isin(inputs.reasoner_train.columns["source"].astype(str), sources)
    # a family the recipe already keeps out of every stage (`real.test_only`: no file in train or val) is judged
    # with the main models, which are that very experiment at full strength
    retrained = any((families[name] == family).any() for name in ("train", "val"))
    judge = _reasoner_without(inputs, config, family, sources, excluded) if retrained else inputs.reasoner
    judged = _judged_rows(splits, families, family)
    truth = np.concatenate([_coarse_truth(_labels(splits[n]))[r] for n, r in judged.items()]).astype(object)
    in_family = np.concatenate([families[n][r] == family for n, r in judged.items()])
    files = np.concatenate([splits[n].columns["source"].astype(str)[r] for n, r in judged.items()]).astype(
        object
    )
    scored = {
        PACKETCLIP: np.concatenate(
            [predict(judge, training_arrays(splits[n], FINE_CLASSES), r)[0] for n, r in judged.items()]
        ).astype(np.float64)
    }
    for model in config.flow_models:
        scored[f"flow {model}"] = _flow_without(flows, config, model, sources, judged)
    calibration, threshold = _threshold_without(judge, splits["val"], families["val"], family)
    models: dict[str, Any] = {}
    for name, coarse in scored.items():
        verdicts = {name: argmax_labels(coarse)}
        if name == PACKETCLIP and threshold is not None:
            verdicts[PACKETCLIP_AT_POINT] = operating_point_labels(coarse, threshold)
        for label, predicted in verdicts.items():
            summary = summarize(
                truth[in_family], coarse[in_family], predicted[in_family], files[in_family], with_auc=False
            )
            models[label] = {**summary, "mauc_unseen_real": mauc(truth, coarse)["mauc"]}
            if label == PACKETCLIP_AT_POINT:
                models[label]["false_alarm_files"] = false_alarm_files(
                    truth[in_family], predicted[in_family], files[in_family]
                )
    return {
        "family": family,
        "retrained": retrained,
        "files": len(sources),
        "train_rows_left_out": int(excluded.sum()),
        "attack_threshold": threshold,
        "calibration_benign": len(calibration),
        "unseen_real_connections": len(truth),
        "models": models,
        "seconds": round(time.monotonic() - started, 1),
    }


def false_alarm_files(
    truth: np.ndarray, predicted: np.ndarray, files: np.ndarray, most: int = 5
) -> list[dict[str, Any]]:
    """The files with the most benign connections raised as an attack, most first (ties by name): each with its
    raised and benign connections and the classes they were raised as. Where a left-out family's false alarms
    come from."""
    raised = (truth == "benign") & (predicted != "benign")
    counted = []
    for file in np.unique(files[raised]):
        mine = files == file
        counted.append((-int((raised & mine).sum()), str(file), mine))
    return [
        {
            "file": file,
            "raised": -negative,
            "benign": int(((truth == "benign") & mine).sum()),
            "as": dict(Counter(predicted[raised & mine].tolist()).most_common()),
        }
        for negative, file, mine in sorted(counted, key=lambda item: item[:2])[:most]
    ]


def _heads_without(
    inputs: Inputs,
    config: EvaluateConfig,
    work: Path,
    exclude: tuple[str, ...] = (),
    exclude_sources: tuple[str, ...] = (),
) -> AlignmentHeads:
    """Alignment heads retrained in `work` (the default recipe's steps) without the fine classes `exclude` or the
    source files `exclude_sources`."""
    run_alignment(
        inputs.dataset,
        inputs.encoder,
        work,
        replace(config.align, seed=config.seed),
        inputs.encode_texts,
        config.align_per_class,
        2000,
        4,
        exclude=exclude,
        exclude_sources=exclude_sources,
    )
    from packetclip_training.align.train import load_heads

    heads, _ = load_heads(work / "align.pt")
    return heads


def _reasoner_without(
    inputs: Inputs, config: EvaluateConfig, family: str, sources: Sequence[str], excluded: np.ndarray
) -> Reasoner:
    """The reasoner retrained, on alignment heads retrained, without the family's files (`sources`)."""
    heads = _heads_without(inputs, config, inputs.work / f"loso-{family}", exclude_sources=tuple(sources))
    return fit_reasoner(
        inputs.reasoner_train,
        None,
        heads,
        inputs.missions,
        inputs.concept_text(heads),
        config.reasoner,
        exclude=excluded,
    ).model


def _judged_rows(
    splits: dict[str, SplitEmbeddings], families: dict[str, np.ndarray], family: str
) -> dict[str, np.ndarray]:
    """The rows judged, by split: the family's rows of every split and the test split's other real rows (for
    the mAUC); splits with none are left out."""
    return {
        name: rows
        for name in splits
        if len(
            rows := np.flatnonzero((families[name] == family) | ((families[name] != "") & (name == "test")))
        )
    }


def _threshold_without(
    judge: Reasoner, val: SplitEmbeddings, val_families: np.ndarray, family: str
) -> tuple[np.ndarray, float | None]:
    """The validation rows of real benign files outside the family and the attack threshold chosen on them
    (None when there are none: argmax verdicts only)."""
    calibration = np.flatnonzero(
        (val_families != "") & (val_families != family) & (_coarse_truth(_labels(val)) == "benign")
    )
    threshold = None  # no real benign validation file outside the family: argmax verdicts only
    if len(calibration):
        val_coarse = predict(judge, training_arrays(val, FINE_CLASSES), calibration)[0]
        threshold = choose_threshold(
            attack_scores(val_coarse.astype(np.float64)),
            FALSE_ALARM_BUDGET,
            val.columns["source"].astype(str)[calibration],
        )
    return calibration, threshold


def _flow_without(
    flows: FlowFacts,
    config: EvaluateConfig,
    model: str,
    sources: Sequence[str],
    judged: dict[str, np.ndarray],
) -> np.ndarray:
    """Coarse probabilities of a flow baseline trained without `sources`, on the `judged` rows of each split."""
    labels, matrix = flows.labels, flows.matrix
    kept = {s: ~np.isin(flows.sources[s], list(sources)) for s in ("train", "val")}
    rows = {
        s: np.flatnonzero(kept[s])[capped_rows(labels[s][kept[s]], config.comparison_cap, config.seed)]
        for s in ("train", "val")
    }
    evaluated = np.concatenate([matrix[s][rows] for s, rows in judged.items()])
    fitted = fit_tabular(
        model,
        matrix["train"][rows["train"]],
        labels["train"][rows["train"]],
        matrix["val"][rows["val"]],
        labels["val"][rows["val"]],
        evaluated,
        config.seed,
    )
    coarse, _ = aggregate_to_coarse(
        fitted.fine, list(FINE_CLASSES), dict(FINE_TO_COARSE), list(COARSE_CLASSES)
    )
    return coarse.astype(np.float64)


def leave_families_out(inputs: Inputs, config: EvaluateConfig) -> list[dict[str, Any]]:
    """`leave_family_out` for every real source family with connections in the splits."""
    families = {name: real_families(split) for name, split in inputs.splits.items()}
    present = set().union(*(set(f.tolist()) for f in families.values())) - {""}
    if not present:
        return []
    flows = FlowFacts.read(inputs.dataset)
    return [
        leave_family_out(inputs, config, family, families, flows)
        for family in sorted(present, key=lambda f: (f not in ATTACK_FAMILIES, f))
    ]


def run_evaluation(inputs: Inputs, config: EvaluateConfig, parts: Sequence[str]) -> dict[str, Any]:
    """The results dictionary (the report's schema, see `evaluation.report`, plus `zero_shot`,
    `unseen_reasoner` and `_probabilities` for the figures); `parts` picks among zeroshot, comparisons,
    loso, scarcity, unseen, embeddings."""
    started = time.monotonic()
    test = inputs.splits["test"]
    truth = _labels(test)
    coarse, fine = reasoner_probabilities(inputs.reasoner, test)
    levels = verdict_metrics(truth, coarse, fine)
    results: dict[str, Any] = {
        "levels": levels,
        "heldout_variants": heldout_variants(test, fine),
        "heldout_overall": _overall(test, truth, coarse, fine, heldout=True),
        "seen_overall": _overall(test, truth, coarse, fine, heldout=False),
        "per_file": per_file(test, fine),
        "test_per_class": _counts(truth),
        "_probabilities": {"coarse": coarse, "fine": fine, "truth": truth},
    }
    point = operating_point(inputs, coarse)
    if point is not None:
        results["operating_point"] = point
    if "zeroshot" in parts:
        results["zero_shot"] = zero_shot(inputs.heads, prompt_embeddings(inputs.encode_texts), test)
    real_models = {PACKETCLIP: coarse}
    if "comparisons" in parts:
        results["baselines"] = {}
        for name, scored in comparisons(inputs, config).items():
            entry = verdict_metrics(truth, scored["coarse"], scored["fine"])
            entry.update(seconds=round(scored["seconds"], 1), train_rows=scored["train_rows"])
            results["baselines"][name.replace("_", " ")] = entry
            if name.startswith("flow_"):
                real_models[name.replace("_", " ")] = scored["coarse"]
    real = real_traffic(test, real_models, point["attack_threshold"] if point else None)
    if real is not None:
        results["real_traffic"] = real
    if "loso" in parts:
        results["leave_one_family_out"] = leave_families_out(inputs, config)
    if "scarcity" in parts:
        curve = scarcity(inputs, config, (coarse, fine))
        results["data_scarcity"] = {"target": 0.97, "metric": "coarse mAUC", "curves": curve["coarse_mauc"]}
    if "unseen" in parts:
        runs = [unseen(inputs, config, name) for name in config.unseen]
        results["unseen_classes"] = [run["zero_shot"] for run in runs]
        results["unseen_reasoner"] = [
            {"class": run["class"], **run["reasoner_without_class"]} for run in runs
        ]
    if "embeddings" in parts:
        results["_embedding_sample"] = embedding_sample(inputs, config)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def efficiency(
    inputs: Inputs,
    bundle_path: Path,
    round_seconds: float,
    rounds: int = 4,
    connections: int = 2048,
    etbert_config: Any = None,  # tests pass a tiny one; the report always measures the full architecture
) -> dict[str, Any]:
    """The bundle's ONNX pipeline (encoder, then reasoner) against ET-BERT's architecture, side by side, one
    onnxruntime thread each, on a class-balanced sample of real test connections with their contexts."""
    import tempfile

    from packetclip.bundle import load_bundle
    from packetclip_training.dataset.store import load_split
    from packetclip_training.evaluation import efficiency as timing
    from packetclip_training.models.flops import encoder_cost
    from packetclip_training.reasoner.model import reasoner_flops

    bundle = load_bundle(bundle_path)
    test = inputs.splits["test"]
    rows = capped_rows(class_indices(_labels(test)), max(1, connections // len(FINE_CLASSES)), 0)
    packed = load_split(inputs.dataset, "test", columns=())
    arrays = {name: np.ascontiguousarray(values[rows]) for name, values in packed.items()}
    del packed
    config = inputs.reasoner.config
    arrays.update(
        config.context_inputs(*training_arrays(test, FINE_CLASSES).context(rows, config.context_payload))
    )
    paths = bundle.model_paths
    candidate = timing.pipeline_candidate(
        "PacketCLIP (encoder + reasoner)",
        [(paths["encoder"], {}), (paths["reasoner"], {"connection": "connection_embedding"})],
        arrays,
        256,
    )
    cost = encoder_cost(inputs.encoder.config)
    mean_packets = float(arrays["valid"].sum(axis=1).mean())
    reasoner_parameters = sum(p.numel() for p in inputs.reasoner.parameters())
    packetclip_cost = {
        "parameters": cost.parameters + reasoner_parameters,
        "flops_per_packet": cost.flops_per_packet,
        "flops_per_connection": cost.flops_for(round(mean_packets)) + reasoner_flops(inputs.reasoner),
    }
    with tempfile.TemporaryDirectory(prefix="packetclip-etbert-") as work:
        result = timing.compare_with_etbert(
            candidate,
            packetclip_cost,
            work,
            round_seconds=round_seconds,
            rounds=rounds,
            etbert_config=etbert_config,
        )
    result["mean_valid_packets"] = mean_packets
    return result
