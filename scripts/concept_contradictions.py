"""Counts explanations that name a concept their connection's facts contradict, over captures run through a bundle.

Every capture goes through `packetclip classify`'s stream (tracker, first-packet order, engine) with the embedded
bundle (or `--model`). The concepts an explanation names are read back from its text (the "most activated" list
and the quoted description) and checked against `packetclip.concept_rules` for the connection, its originator's
activity and its responder's inbound connections as the explainer saw them: a concept is contradicted when its
fact tests fail, and off-class when the mission lists it only under other classes.

`--unchecked` lets the explainer name every concept again (how explanations were built before the rules), to
measure what the rules remove. Prints one JSON object.

    python scripts/concept_contradictions.py samples/lab-quick/capture.pcap
    python scripts/concept_contradictions.py ../shared/data/real/packet-captures --unchecked
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import packetclip.commands.classify as classify_command
from packetclip.bundle import default_bundle_path
from packetclip.concept_rules import ConceptRules
from packetclip.engine import Engine
from packetclip.explain import Explainer
from packetclip.missions import normalise_concept

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz")
_QUOTE = re.compile(r'closest description: "([^"]*)"')
_LISTED = re.compile(r"concepts most activated were (.*?)(?:; closest description|\.$)")


def captures(paths: Sequence[str], per_folder: int) -> list[Path]:
    """The captures named, and up to `per_folder` captures under each folder named (sorted, so repeatable)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))
            found += inside[:per_folder]
        else:
            found.append(path)
    return found


def named_concepts(text: str, attack: str, pattern: re.Pattern[str]) -> list[str]:
    """The concept names an explanation names: its "most activated" list and its quoted description. The
    class's own name ("a SYN flood") restates the verdict and is not read as a concept ("syn")."""
    parts = [match.group(1).lower() for regex in (_LISTED, _QUOTE) for match in regex.finditer(text)]
    verdict = re.compile(r"\b" + re.escape(attack.replace("_", " ")) + r"\b")
    return [match.group(0) for part in parts for match in pattern.finditer(verdict.sub(" ", part))]


class Recorder:
    """Wraps `Explainer.explain_batch`: keeps, per judged row, the concepts named that the rules reject."""

    def __init__(self, explainer: Explainer, unchecked: bool) -> None:
        self.explainer = explainer
        self.rules = ConceptRules(
            explainer.concepts, [], {}
        )  # facts only: class columns come from the explainer
        self.class_rules = explainer.concept_rules
        self.columns: dict[str, list[tuple[str, int]]] = {}
        for column, (mission, concept) in enumerate(explainer.concepts):
            self.columns.setdefault(normalise_concept(concept), []).append((mission, column))
        names = sorted(self.columns, key=len, reverse=True)
        self.pattern = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
        self.counts: Counter[str] = Counter()
        self.by_concept: Counter[str] = Counter()
        self.examples: list[str] = []
        original = explainer.explain_batch
        if unchecked:
            explainer.concept_rules.allowed = lambda connections, *_, **__: np.ones(  # type: ignore[method-assign]
                (len(connections), len(explainer.concepts)), dtype=bool
            )

        def explain_batch(
            connections: Any, activities: Any, labels: Any, attacks: Any, *rest: Any
        ) -> list[str]:
            texts = original(connections, activities, labels, attacks, *rest)
            responders = rest[2] if len(rest) > 2 and rest[2] is not None else [None] * len(connections)
            self._check(connections, activities, labels, attacks, responders, texts)
            return texts

        explainer.explain_batch = explain_batch  # type: ignore[method-assign]

    def _check(
        self,
        connections: Any,
        activities: Any,
        labels: Any,
        attacks: Sequence[str],
        responders: Any,
        texts: Sequence[str],
    ) -> None:
        facts = self.rules.facts_allow(connections, activities, responders)
        of_class = self.class_rules.class_allows(list(attacks))
        for row, text in enumerate(texts):
            self.counts["verdicts"] += 1
            if not self.explainer.reads_activity(labels[row], attacks[row]):
                continue
            self.counts["attack explanations"] += 1
            mission = self.explainer.mission_of_class.get(attacks[row], "")
            contradicted = off_class = False
            for name in named_concepts(text, attacks[row], self.pattern):
                candidates = self.columns[name]
                column = next((c for m, c in candidates if m == mission), candidates[0][1])
                if not facts[row, column]:
                    contradicted = True
                    self.by_concept[f"{attacks[row]}: {name}"] += 1
                elif not of_class[row, column]:
                    off_class = True
            self.counts["naming a contradicted concept"] += contradicted
            self.counts["naming an off-class concept"] += off_class and not contradicted
            if contradicted and len(self.examples) < 5:
                self.examples.append(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="captures, or folders of captures")
    parser.add_argument(
        "--model", default=str(default_bundle_path()), help="bundle (default: the embedded one)"
    )
    parser.add_argument("--per-folder", type=int, default=400, help="at most this many captures per folder")
    parser.add_argument("--max-frames", type=int, default=300_000, help="frames read per capture at most")
    parser.add_argument(
        "--unchecked", action="store_true", help="name concepts without the rules (as before)"
    )
    args = parser.parse_args(argv)

    read_frames = classify_command.read_frames

    def bounded(path: Any, stats: Any = None) -> Iterator[Any]:
        return itertools.islice(read_frames(path, stats), args.max_frames)

    classify_command.read_frames = bounded  # type: ignore[assignment]
    engine = Engine(args.model)
    recorder = Recorder(engine._models.explainer, args.unchecked)
    files = captures(args.paths, args.per_folder)
    unreadable = 0
    for path in files:
        engine.reset()
        summary = classify_command.classify_captures(engine, [path], lambda verdict: None)
        unreadable += len(summary.file_errors)
    judged = recorder.counts["attack explanations"]
    report = {
        "captures": len(files),
        "unreadable": unreadable,
        "checked": not args.unchecked,
        **recorder.counts,
        "contradicted share": round(recorder.counts["naming a contradicted concept"] / judged, 4)
        if judged
        else 0.0,
        "most contradicted": dict(recorder.by_concept.most_common(12)),
        "examples": recorder.examples,
    }
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
