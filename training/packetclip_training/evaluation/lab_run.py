"""A bundle on a labelled lab run, variant by variant: what it says and what it read of the victim's side.

`packetclip-train evaluate` judges the dataset's splits; this judges any lab run directory (`labels.tsv`,
`hosts.tsv`, captures) the way a sensor meets it: every capture through `packetclip classify`'s own path (one
engine state per run, first-packet order, the bundle's operating point), each verdict labelled by the lab's rule
(`dataset.labelling.LabLabeller`). Per variant: connections, the share given the variant's coarse and fine class,
the most common verdicts, and the mean of each victim-side feature the reasoner read
(`packetclip.context.RESPONDER_FEATURES`) — a held-out tool that the model misreads usually differs from the
training variants of its class in one of those (rate, unanswered share, ports), and this table shows which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packetclip.bundle import Bundle
from packetclip.context import RESPONDER_FEATURES
from packetclip.engine import Engine, Verdict
from packetclip.featurizer import Connection
from packetclip.pipeline import classify_captures
from packetclip_training.dataset.labelling import Drop
from packetclip_training.dataset.sources import load_lab_run
from packetclip_training.evaluation.real import EngineStandIn

BENIGN_ROW = "benign"  # the row of every connection no episode claims
# the victim-side features the markdown table shows (all are in the JSON)
SHOWN_FEATURES = (
    "victim_log_rate",
    "victim_unanswered",
    "victim_single_packet",
    "victim_same_port",
    "victim_log_ports",
)


@dataclass
class VariantTally:
    """One variant's verdicts and the victim-side features behind them."""

    coarse: str
    fine: str
    heldout: bool
    connections: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    victim_side: np.ndarray = field(default_factory=lambda: np.zeros(len(RESPONDER_FEATURES)))

    def add(self, verdict: Verdict, victim_side: np.ndarray) -> None:
        self.connections += 1
        self.labels[verdict.label] += 1
        self.attacks[verdict.attack] += 1
        self.victim_side += victim_side

    def summary(self) -> dict[str, Any]:
        n = max(self.connections, 1)
        return {
            "coarse": self.coarse,
            "fine": self.fine,
            "heldout": self.heldout,
            "connections": self.connections,
            "coarse_recall": self.labels[self.coarse] / n,
            "fine_recall": self.attacks[self.fine] / n,
            "labels": dict(self.labels.most_common()),
            "attacks": dict(self.attacks.most_common()),
            "victim_side": dict(
                zip(RESPONDER_FEATURES, (self.victim_side / n).round(4).tolist(), strict=True)
            ),
        }


class _VictimSideRecorder(EngineStandIn):
    """Keeps each verdict's victim-side features (verdicts carry none); verdicts come back in the order given,
    as `Engine.classify` returns them."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.victim_side: dict[str, np.ndarray] = {}  # uid -> RESPONDER_FEATURES row

    def classify(self, connections: Sequence[Connection], sensor: str = "") -> list[Verdict]:
        verdicts, inference = self.engine.classify_batch(connections, sensor)
        by_uid = {verdict.uid: verdict for verdict in verdicts}
        for conn, row in zip(inference.connections, inference.responder_features, strict=True):
            self.victim_side[conn.uid] = row.astype(np.float64)
        return [by_uid[conn.uid] for conn in connections]


def evaluate_lab_run(bundle: Bundle | str | Path, run_path: Path) -> dict[str, Any]:
    """Every number of one lab run (JSON-ready): per variant and for benign traffic, plus what was dropped."""
    run = load_lab_run(run_path)
    labeller = run.labeller()
    engine = Engine(bundle)
    recorder = _VictimSideRecorder(engine)
    tallies: dict[str, VariantTally] = {}
    dropped: Counter[str] = Counter()

    def tally(verdict: Verdict) -> None:
        # counted as the verdicts come: a full run has a million of them, far too many to hold
        victim_side = recorder.victim_side.pop(verdict.uid)
        label = labeller.label(verdict)
        if isinstance(label, Drop):
            dropped[label.reason] += 1
            return
        name = label.variant or BENIGN_ROW
        row = tallies.get(name)
        if row is None:
            row = tallies[name] = VariantTally(label.coarse, label.fine, label.heldout)
        row.add(verdict, victim_side)

    summary = classify_captures(recorder, run.captures, tally)  # type: ignore[arg-type]
    return {
        "run": str(run.path),
        "bundle": engine.bundle.version,
        "attack_threshold": engine.bundle.attack_threshold,
        "connections": summary.connections,
        "dropped": dict(dropped),
        "file_errors": list(summary.file_errors),
        "variants": {name: tallies[name].summary() for name in sorted(tallies)},
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The per-variant table: recall of the variant's own classes, the leading verdicts, the victim side."""
    threshold = results["attack_threshold"]
    rule = "argmax" if threshold is None else f"1 − P(benign) ≥ {threshold:.4f}"
    lines = [
        f"# Bundle {results['bundle']} on the lab run {results['run']}",
        "",
        f"{results['connections']:,} connections classified through the sensor's path ({rule}); dropped by the "
        f"lab's labelling rule: {results['dropped'] or 'none'}.",
        "",
        "| variant | held out | connections | coarse recall | fine recall | most common verdicts | "
        + " | ".join(name.removeprefix("victim_") for name in SHOWN_FEATURES)
        + " |",
        "| --- | :---: | ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in SHOWN_FEATURES) + " |",
    ]
    for name, row in results["variants"].items():
        top = ", ".join(f"{attack} {count:,}" for attack, count in list(row["attacks"].items())[:3])
        features = " | ".join(f"{row['victim_side'][feature]:.3f}" for feature in SHOWN_FEATURES)
        lines.append(
            f"| {name} | {'yes' if row['heldout'] else ''} | {row['connections']:,} | {row['coarse_recall']:.3f} | "
            f"{row['fine_recall']:.3f} | {top} | {features} |"
        )
    return "\n".join(lines) + "\n"
