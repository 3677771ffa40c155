"""Dataset statistics, the dataset card (card.md + card.json) and the output manifest.

Owns what a built dataset says about itself: counts per class, split, source and variant, read back from the
parquet files; the build record (featurizer, inputs and their hashes, drops, split method) written by the build;
sha256 of every output. Does not build anything.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
from packetclip_training.dataset.sources import sha256_file
from packetclip_training.dataset.splits import SPLITS
from packetclip_training.dataset.store import iter_batches

log = logging.getLogger(__name__)

BUILD_RECORD = "build.json"
CARD_JSON = "card.json"
CARD_MD = "card.md"
MANIFEST = "manifest.json"


def dataset_stats(directory: Path) -> dict:
    """Counts per fine/coarse class, source kind, source and variant for every split, read from the parquet files."""
    directory = Path(directory)
    fine: dict[str, Counter] = {}
    coarse: dict[str, Counter] = {}
    per_source: dict[str, Counter] = {}
    per_kind: dict[str, Counter] = {}
    per_variant: dict[str, Counter] = {}
    totals: Counter = Counter()
    for split in SPLITS:
        path = directory / f"{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {directory} a built dataset?")
        for batch in iter_batches(path, columns=["source_kind", "source", "coarse", "fine", "variant"]):
            columns = batch.to_pydict()
            totals[split] += batch.num_rows
            for key, table in (
                ("fine", fine),
                ("coarse", coarse),
                ("source", per_source),
                ("source_kind", per_kind),
                ("variant", per_variant),
            ):
                for value in columns[key]:
                    if key == "variant" and not value:
                        continue
                    table.setdefault(value, Counter())[split] += 1

    def by_split(table: dict[str, Counter], order: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
        names = [name for name in order if name in table] + sorted(set(table) - set(order))
        return {name: {split: table[name][split] for split in SPLITS} for name in names}

    return {
        "total": {split: totals[split] for split in SPLITS},
        "fine": by_split(fine, FINE_CLASSES),
        "coarse": by_split(coarse, COARSE_CLASSES),
        "source_kind": by_split(per_kind),
        "source": by_split(per_source),
        "variant": by_split(per_variant),
    }


def format_stats(stats: dict) -> str:
    """A plain-text table of the class counts per split."""
    lines = [f"{'class':<22}" + "".join(f"{split:>10}" for split in SPLITS) + f"{'all':>10}"]
    for level in ("fine", "coarse"):
        lines.append(f"-- {level}")
        for name, counts in stats[level].items():
            row = [counts[split] for split in SPLITS]
            lines.append(f"{name:<22}" + "".join(f"{c:>10}" for c in row) + f"{sum(row):>10}")
    total = [stats["total"][split] for split in SPLITS]
    lines.append(f"{'total':<22}" + "".join(f"{c:>10}" for c in total) + f"{sum(total):>10}")
    return "\n".join(lines)


def output_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in names if (directory / name).is_file()}


def write_card(directory: Path) -> dict:
    """(Re)write card.json, card.md and manifest.json of a built dataset from its parquet files and build.json."""
    directory = Path(directory)
    record_path = directory / BUILD_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path}: missing; the card needs the build record written by `dataset build`"
        )
    record = json.loads(record_path.read_text())
    parquet = [f"{split}.parquet" for split in SPLITS]
    card = {
        "name": record.get("name", directory.name),
        "built": record.get("built"),
        "featurizer": record["featurizer"],
        "split": record["split"],
        "inputs": record["inputs"],
        "dropped": record["dropped"],
        "unmatched_flows": record.get("unmatched_flows", {}),
        "duplicate_inputs": record.get("duplicate_inputs", []),
        "parse": record.get("parse", {}),
        "build": record.get("build", {}),
        "counts": dataset_stats(directory),
        "outputs": output_hashes(directory, parquet),
    }
    if "sample_of" in record:
        card["sample_of"] = record["sample_of"]
    (directory / CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    (directory / CARD_MD).write_text(card_markdown(card))
    manifest = {"files": output_hashes(directory, [*parquet, BUILD_RECORD, CARD_JSON, CARD_MD])}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return card


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _count_rows(table: dict[str, dict[str, int]]) -> list[list]:
    return [[name, *(counts[s] for s in SPLITS), sum(counts.values())] for name, counts in table.items()]


def card_markdown(card: dict) -> str:
    counts = card["counts"]
    header = ["", *SPLITS, "all"]
    lines = [f"# Dataset card: {card['name']}", ""]
    lines += [f"Built {card['built']} with featurizer version {card['featurizer']['version']}.", ""]
    if "sample_of" in card:
        parent = card["sample_of"]
        lines += [
            f"A sample of dataset `{parent['name']}`: at most {parent['per_class']} connections per fine class",
            f"and split (seed {parent['seed']}); the parent's outputs had these sha256:",
            "",
            *(f"- `{name}`: `{digest}`" for name, digest in parent["outputs"].items()),
            "",
        ]
    lines += [
        "Model input per connection: the first `max_packets` packets (direction, inter-arrival time, length,",
        "first `snaplen` bytes from the IP header, lab-identifying fields masked). Addresses, ports and",
        "timestamps are stored for audit only and are never model input.",
        "",
    ]
    lines += ["## Featurizer", "", "```json", json.dumps(card["featurizer"], indent=2), "```", ""]
    lines += ["## Split", ""]
    lines += [f"- {key}: {value}" for key, value in card["split"].items()]
    lines += ["", "## Counts per fine class", "", *_table(["fine", *header[1:]], _count_rows(counts["fine"]))]
    lines += [
        "",
        "## Counts per coarse class",
        "",
        *_table(["coarse", *header[1:]], _count_rows(counts["coarse"])),
    ]
    total = [counts["total"][s] for s in SPLITS]
    lines += [
        "",
        f"Total: {sum(total)} connections ({', '.join(f'{s} {c}' for s, c in zip(SPLITS, total, strict=True))}).",
        "",
    ]
    lines += ["## Per source kind", "", *_table(["kind", *header[1:]], _count_rows(counts["source_kind"]))]
    lines += [
        "",
        "## Per variant (attacks)",
        "",
        *_table(["variant", *header[1:]], _count_rows(counts["variant"])),
    ]
    lines += ["", "## Per source", "", *_table(["source", *header[1:]], _count_rows(counts["source"]))]
    lines += ["", "## Dropped connections", ""]
    drops = [
        [kind, reason, count]
        for kind, reasons in card["dropped"].items()
        for reason, count in reasons.items()
    ]
    lines += _table(["source kind", "reason", "connections"], drops) if drops else ["None."]
    if card["unmatched_flows"]:
        lines += ["", "## Flow CSV rows no connection matched", ""]
        lines += _table(["csv", "rows"], [[k, v] for k, v in card["unmatched_flows"].items()])
    if card["duplicate_inputs"]:
        lines += ["", "## Inputs skipped as byte-identical to another input", ""]
        lines += _table(
            ["file", "same bytes as"], [[d["path"], d["same_as"]] for d in card["duplicate_inputs"]]
        )
    lines += ["", "## Inputs", ""]
    lines += _table(["kind", "file", "sha256"], [[i["kind"], i["path"], i["sha256"]] for i in card["inputs"]])
    lines += ["", "## Outputs", ""]
    lines += _table(["file", "sha256"], [[k, v] for k, v in card["outputs"].items()])
    return "\n".join(lines) + "\n"
