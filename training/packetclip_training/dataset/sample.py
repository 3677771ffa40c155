"""A small, class-balanced sample of a built dataset, in the same layout: what tests and tiny training configs use.

Owns the choice of rows (up to `per_class` per fine class and split, a seeded draw) and the sample's build record,
which names the parent dataset and its output hashes. Does not featurize or label anything: rows are copied as
they are, so the sample carries the parent's splits, featurizer version and schema.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from packetclip_training.dataset.card import BUILD_RECORD, CARD_JSON, write_card
from packetclip_training.dataset.splits import SPLITS


def sample_dataset(parent: Path, out: Path, per_class: int, seed: int = 0, force: bool = False) -> dict:
    """Write up to `per_class` rows of every fine class of every split of `parent` into `out`; returns the card."""
    parent, out = Path(parent), Path(out)
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    parent_card = json.loads((parent / CARD_JSON).read_text())
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        table = pq.read_table(parent / f"{split}.parquet")
        fine = table.column("fine").to_numpy(zero_copy_only=False)
        keep: list[int] = []
        for name in np.unique(fine):
            rows = np.flatnonzero(fine == name)
            keep += sorted(rng.choice(rows, size=min(per_class, len(rows)), replace=False).tolist())
        chosen = table.take(pa.array(sorted(keep), type=pa.int64()))
        order = pc.sort_indices(chosen, sort_keys=[("ts", "ascending")])
        pq.write_table(chosen.take(order), out / f"{split}.parquet", compression="zstd")
    record = json.loads((parent / BUILD_RECORD).read_text())
    record["name"] = out.name
    record["sample_of"] = {
        "name": parent_card["name"],
        "outputs": parent_card["outputs"],
        "per_class": per_class,
        "seed": seed,
    }
    (out / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return write_card(out)
