"""Word-frequency figures per mission over generated descriptions (what the text side of training sees).

Owns collecting descriptions per mission (from a dataset split's real facts, or synthetic facts), counting content
words, and drawing one horizontal bar chart per mission (`wordfreq-<mission>.png`) plus `wordfreq.json`.
Malformed dataset rows are counted and skipped.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packetclip.classes import FINE_TO_COARSE
from packetclip_training.describe.describe import describe_connection
from packetclip_training.describe.facts import FACT_COLUMNS, FactsError
from packetclip_training.describe.synthetic import synthetic_facts

log = logging.getLogger(__name__)

# grammar words of the descriptions and English function words: the figures show content
STOPWORDS = frozenset(
    (
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "from",
        "by",
        "as",
        "at",
        "it",
        "its",
        "is",
        "was",
        "were",
        "be",
        "this",
        "that",
        "these",
        "those",
        "such",
        "which",
        "where",
        "while",
        "after",
        "over",
        "under",
        "into",
        "out",
        "back",
        "all",
        "none",
        "no",
        "not",
        "one",
        "came",
        "went",
        "sent",
        "received",
        "seen",
        "there",
        "their",
        "them",
        "they",
        "any",
        "both",
        "together",
        "would",
        "include",
        "includes",
        "taken",
        "like",
        "looks",
        "part",
        "points",
        "typical",
        "fits",
        "matches",
        "belongs",
        "characteristic",
        "notable",
        "think",
        "signs",
        "hallmarks",
        "concepts",
        "involved",
        "key",
        "traits",
        "shows",
        "combines",
        "suggests",
        "call",
        "analysts",
        "total",
    )
)
_WORD_RE = re.compile(r"[a-z][a-z'-]+")


@dataclass
class Corpus:
    """Descriptions per mission, with the rows that could not be described."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    skipped: int = 0


def describe_rows(rows: Iterable[tuple[Mapping[str, object], str]], seed: int = 0) -> Corpus:
    """One description per (facts, fine) row, grouped by mission (= coarse class)."""
    rng = random.Random(seed)
    corpus = Corpus()
    for facts, fine in rows:
        try:
            text = describe_connection(facts, fine, rng)
        except (FactsError, KeyError) as exc:
            corpus.skipped += 1
            log.debug("skipping row: %s", exc)
            continue
        corpus.texts.setdefault(FINE_TO_COARSE[fine], []).append(text)
    if corpus.skipped:
        log.warning("%d row(s) could not be described and were skipped", corpus.skipped)
    return corpus


def synthetic_rows(per_class: int, seed: int = 0) -> list[tuple[dict[str, object], str]]:
    """`per_class` synthetic facts rows for every fine class."""
    rng = random.Random(seed)
    return [(synthetic_facts(fine, rng), fine) for fine in FINE_TO_COARSE for _ in range(per_class)]


def dataset_rows(split_path: Path, per_class: int, seed: int = 0) -> list[tuple[dict[str, object], str]]:
    """Up to `per_class` rows per fine class of a dataset split (parquet), sampled reproducibly."""
    import pyarrow.parquet as pq

    table = pq.read_table(split_path, columns=[*FACT_COLUMNS, "fine"]).to_pylist()
    by_class: dict[str, list[dict[str, object]]] = {}
    for row in table:
        by_class.setdefault(str(row.pop("fine")), []).append(row)
    rng = random.Random(seed)
    out: list[tuple[dict[str, object], str]] = []
    for fine, rows in sorted(by_class.items()):
        chosen = rng.sample(rows, min(per_class, len(rows)))
        out += [(row, fine) for row in chosen]
    return out


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Content words (lower case, no stop words, no numbers)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w in _WORD_RE.findall(text.lower()) if w not in STOPWORDS)
    return counts


def write_figures(corpus: Corpus, out_dir: Path, top: int = 25) -> list[Path]:
    """One PNG per mission plus wordfreq.json; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a sensor or CI
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary: dict[str, object] = {"skipped_rows": corpus.skipped, "missions": {}}
    for mission, texts in sorted(corpus.texts.items()):
        common = word_counts(texts).most_common(top)
        summary["missions"][mission] = {"descriptions": len(texts), "top_words": common}  # type: ignore[index]
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(common) + 1.2))
        ax.barh([w for w, _ in reversed(common)], [c for _, c in reversed(common)], color="#3b6ea5")
        ax.set_title(f"{mission}: top {len(common)} words over {len(texts)} descriptions")
        ax.set_xlabel("occurrences")
        fig.tight_layout()
        path = out_dir / f"wordfreq-{mission}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    summary_path = out_dir / "wordfreq.json"
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return [*written, summary_path]
