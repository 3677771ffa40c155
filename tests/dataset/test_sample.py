"""`dataset sample`: a class-balanced subset in the parent's layout, splits and schema, naming its parent."""

import json

import pyarrow.parquet as pq

from packetclip_training.dataset import load_split
from packetclip_training.dataset.build import build_dataset
from packetclip_training.dataset.recipe import Recipe
from packetclip_training.dataset.sample import sample_dataset
from packetclip_training.dataset.splits import SPLITS
from tests.dataset.dataset_testdata import REAL, make_sshguess_lab_run
from tests.real_captures import require_real_data as require_real


def test_sample_keeps_splits_schema_and_caps_each_class(tmp_path):
    require_real()
    parent = tmp_path / "parent"
    recipe = Recipe(
        name="parent",
        lab_runs=[make_sshguess_lab_run(tmp_path / "run")],
        real_manifest=REAL / "MANIFEST.tsv",
        real_include=[
            "nDPI/tests/cfgs/default/pcap/synscan.pcap",
            "zeek/testing/btest/Traces/ftp/bruteforce.pcap",
        ],
    )
    build_dataset(recipe, parent)
    card = sample_dataset(parent, tmp_path / "sample", per_class=3, seed=1)
    parent_card = json.loads((parent / "card.json").read_text())
    for split in SPLITS:
        for fine, per_split in card["counts"]["fine"].items():
            assert per_split[split] == min(3, parent_card["counts"]["fine"][fine][split])
        assert pq.read_schema(tmp_path / "sample" / f"{split}.parquet") == pq.read_schema(
            parent / f"{split}.parquet"
        )
    parent_uids = set(load_split(parent, "train")["uid"])
    sample = load_split(tmp_path / "sample", "train")
    assert set(sample["uid"]) <= parent_uids and len(sample["uid"]) > 0
    assert card["sample_of"]["outputs"] == parent_card["outputs"]
    assert "A sample of dataset" in (tmp_path / "sample" / "card.md").read_text()
