"""End-to-end builds on real captures (the committed set or the extended corpus): a lab-format run dir, MANIFEST
files and a CICFlowMeter CSV joined to its pcap, through the real featurizer, into split parquet files and a card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from packetclip_training.cli import main as train_main
from packetclip_training.dataset import load_split
from packetclip_training.dataset.build import BuildError, build_dataset
from packetclip_training.dataset.recipe import FlowInput, Recipe
from packetclip_training.dataset.sources import SourceError, sha256_file
from packetclip_training.dataset.splits import SPLITS, SplitConfig
from packetclip_training.dataset.store import LABEL_OUTPUTS
from tests.dataset.dataset_testdata import FIXTURES, REAL, SSHGUESS, make_sshguess_lab_run
from tests.real_captures import require_real_data as require_real

# sshguess.pcap is the lab-format run's capture: a capture feeds one source only
REAL_FILES = [
    "zeek/testing/btest/Traces/ftp/bruteforce.pcap",
    "zeek/testing/btest/Traces/nmap-vsn.pcap",
    "nDPI/tests/cfgs/default/pcap/synscan.pcap",
    "nDPI/tests/cfgs/default/pcap/443-curl.pcap",
    "nDPI/tests/cfgs/default/pcap/tcp_scan.pcapng",
]


def recipe_for(tmp_path) -> Recipe:
    run = make_sshguess_lab_run(tmp_path / "runs" / "fixture-seed0")
    return Recipe(
        name="e2e",
        lab_runs=[run],
        real_manifest=REAL / "MANIFEST.tsv",
        real_include=REAL_FILES,
        split=SplitConfig(real_test_share=0.4, seed=3),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require_real()
    tmp_path = tmp_path_factory.mktemp("build")
    out = tmp_path / "ds"
    card = build_dataset(recipe_for(tmp_path), out, jobs=2)
    return out, card


def read_all(out):
    return {split: pq.read_table(out / f"{split}.parquet").to_pandas() for split in SPLITS}


def test_splits_are_disjoint_by_connection_and_time(built):
    out, _ = built
    frames = read_all(out)
    keys = {s: set(zip(f["source"], f["uid"], strict=True)) for s, f in frames.items()}
    cids = {s: set(zip(f["community_id"], f["ts"], strict=True)) for s, f in frames.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not keys[a] & keys[b]
        assert not cids[a] & cids[b]
    train, test = frames["train"], frames["test"]
    for (source, fine), group in train.groupby(["source", "fine"]):
        later = test[(test.source == source) & (test.fine == fine) & ~test.heldout]
        if len(later):
            assert group.last_ts.max() < later.ts.min(), (source, fine)
    assert not frames["train"].heldout.any() and not frames["val"].heldout.any()
    assert frames["test"].heldout.sum() == 2  # the two connections of the held-out episode


def test_real_captures_go_wholly_to_one_split(built):
    out, _ = built
    frames = read_all(out)
    real_sources = {s: set(f[f.source_kind == "real"].source) for s, f in frames.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not real_sources[a] & real_sources[b]
    assert set().union(*real_sources.values()) == set(REAL_FILES)


def test_labels_follow_the_rules_on_real_traffic(built):
    out, card = built
    frames = read_all(out)
    lab = pd.concat([f[f.source_kind == "lab"] for f in frames.values()])
    assert set(lab.fine) == {"dictionary_attack"} and (lab.orig_h == "192.168.56.1").all()
    assert 55478 not in set(lab.orig_p)  # between the episodes: dropped
    assert card["dropped"]["lab"] == {"attacker_outside_episode": 1}
    real = [f[f.source_kind == "real"] for f in frames.values()]
    by_file = {src: set(g.fine) for f in real for src, g in f.groupby("source")}
    assert by_file["zeek/testing/btest/Traces/ftp/bruteforce.pcap"] == {"dictionary_attack"}
    assert by_file["zeek/testing/btest/Traces/nmap-vsn.pcap"] == {"vulnerability_scan"}
    assert by_file["nDPI/tests/cfgs/default/pcap/443-curl.pcap"] == {"benign"}


def test_flow_csv_build_labels_joined_connections(tmp_path):
    require_real()
    csv = FIXTURES / "sshguess_aci_flows.csv"
    out = tmp_path / "flows"
    code = train_main(
        [
            "dataset",
            "build",
            "--flows",
            str(csv),
            "--pcap",
            str(REAL / SSHGUESS),
            "--utc-offset",
            "-3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    assert card["dropped"]["flows"] == {"no_matching_flow": 2}  # 55478 (row 40 s off) and 55480 (no row)
    assert card["dropped"]["flow_rows"] == {
        "bad_timestamp": 1,
        "label_mapped_to_drop:ARP Spoofing": 1,
        "unmapped_label:Mirai": 1,
    }
    assert card["unmatched_flows"] == {str(csv): 4}
    kept = sum(card["counts"]["total"].values()) + sum(card["dropped"].get("split", {}).values())
    assert kept == 9 and set(card["counts"]["fine"]) == {"dictionary_attack"}
    frames = read_all(out)
    assert all(
        (f.source_kind == "flows").all() and (f.orig_h == "192.168.56.1").all() for f in frames.values()
    )


def test_a_capture_feeding_two_sources_is_refused(tmp_path):
    require_real()
    recipe = recipe_for(tmp_path)
    recipe.flows = [FlowInput(FIXTURES / "sshguess_aci_flows.csv", [REAL / SSHGUESS], utc_offset_hours=-3)]
    with pytest.raises(BuildError, match="is an input of both"):
        build_dataset(recipe, tmp_path / "out")


def test_load_split_returns_pack_shaped_input_equal_to_the_featurizer(built):
    from packetclip.featurizer import FeaturizerConfig, featurize_pcap, pack

    out, _ = built
    config = FeaturizerConfig()
    connections = {c.uid: c for c in featurize_pcap(str(REAL / SSHGUESS), config=config)}
    compared = 0
    for split in SPLITS:
        arrays = load_split(out, split, columns=[*LABEL_OUTPUTS, "source_kind"])
        count = len(arrays["fine"])
        assert arrays["bytes"].shape == (count, config.max_packets, config.snaplen)
        assert arrays["bytes"].dtype == np.uint8 and arrays["direction"].dtype == np.int8
        assert arrays["iat"].dtype == np.float32 and arrays["length"].dtype == np.int32
        assert arrays["valid"].shape == (count, config.max_packets)
        for i in np.flatnonzero(arrays["source_kind"] == "lab"):  # the lab run's capture is sshguess.pcap
            expected = pack([connections[arrays["uid"][i]]], config)
            for name in ("bytes", "direction", "iat", "length", "valid"):
                np.testing.assert_array_equal(arrays[name][i], expected[name][0], err_msg=name)
            compared += 1
    assert compared >= 7


def test_stats_json_matches_the_parquet_files(built, capsys):
    out, _ = built
    assert train_main(["dataset", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    frames = read_all(out)
    for split, frame in frames.items():
        assert stats["total"][split] == len(frame)
        for fine, count in frame.fine.value_counts().items():
            assert stats["fine"][fine][split] == count
        for coarse, count in frame.coarse.value_counts().items():
            assert stats["coarse"][coarse][split] == count


def test_card_and_manifest_hash_inputs_and_outputs(built):
    out, card = built
    from packetclip.featurizer import FEATURIZER_VERSION

    assert card["featurizer"]["version"] == FEATURIZER_VERSION
    assert card["featurizer"]["config"]["max_packets"] == 30
    assert card["split"]["seed"] == 3 and "time split" in card["split"]["method"]
    inputs = {entry["path"]: entry["sha256"] for entry in card["inputs"]}
    nmap = REAL / "zeek/testing/btest/Traces/nmap-vsn.pcap"
    assert inputs[str(nmap)] == sha256_file(nmap)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {*(f"{s}.parquet" for s in SPLITS), "build.json", "card.json", "card.md"}
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest, name
    text = (out / "card.md").read_text()
    assert "| dictionary_attack |" in text and "attacker_outside_episode" in text
    assert card["build"]["connections_seen"] > 0 and card["build"]["connections_per_s"] > 0
    # the card command rewrites a lost card identically in content
    (out / "card.md").unlink()
    assert train_main(["dataset", "card", str(out)]) == 0
    assert (out / "card.md").read_text() == text


def test_build_is_deterministic(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    build_dataset(recipe_for(tmp_path), again, jobs=1)
    first = json.loads((out / "manifest.json").read_text())["files"]
    second = json.loads((again / "manifest.json").read_text())["files"]
    for split in SPLITS:
        left = pq.read_table(out / f"{split}.parquet").drop_columns(["source", "source_file"])
        right = pq.read_table(again / f"{split}.parquet").drop_columns(["source", "source_file"])
        assert left.equals(right), split
    assert first.keys() == second.keys()


def test_sha_mismatch_is_refused(tmp_path):
    require_real()
    rows = (REAL / "MANIFEST.tsv").read_text().splitlines()
    row = next(r for r in rows if r.startswith(SSHGUESS + "\t")).split("\t")
    row[0] = str(REAL / SSHGUESS)
    row[2] = "0" * 16
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text(rows[0] + "\n" + "\t".join(row) + "\n")
    code = train_main(["dataset", "build", "--real-manifest", str(manifest), "--out", str(tmp_path / "o")])
    assert code == 1
    with pytest.raises(SourceError, match=r"sha256 mismatch for .*sshguess\.pcap: manifest says 0{16}"):
        build_dataset(Recipe(real_manifest=manifest), tmp_path / "o2")


def test_existing_dataset_needs_force(built, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(built[0], target)
    code = train_main(
        [
            "dataset",
            "build",
            "--real-manifest",
            str(REAL / "MANIFEST.tsv"),
            "--real-include",
            SSHGUESS,
            "--out",
            str(target),
        ]
    )
    assert code == 1
    assert (
        train_main(
            [
                "dataset",
                "build",
                "--real-manifest",
                str(REAL / "MANIFEST.tsv"),
                "--real-include",
                SSHGUESS,
                "--out",
                str(target),
                "--force",
            ]
        )
        == 0
    )
    assert json.loads((target / "card.json").read_text())["counts"]["total"] != built[1]["counts"]["total"]


def test_window_option_cuts_the_dataset_and_is_recorded(tmp_path):
    require_real()
    csv = FIXTURES / "sshguess_aci_flows.csv"
    spans = {}
    for window in (None, 0.01):  # this capture's connections send their first 30 packets within 0.08 s
        out = tmp_path / f"w{window}"
        extra = [] if window is None else ["--window", str(window)]
        code = train_main(
            [
                "dataset",
                "build",
                "--flows",
                str(csv),
                "--pcap",
                str(REAL / SSHGUESS),
                "--utc-offset",
                "-3",
                "--out",
                str(out),
                *extra,
            ]
        )
        assert code == 0
        card = json.loads((out / "card.json").read_text())
        assert card["featurizer"]["config"]["window"] == window
        frames = pd.concat(read_all(out).values())
        # seconds from each connection's first kept packet to its last kept one
        spans[window] = max(
            float(np.sum(np.asarray(iat)[1:n])) for iat, n in zip(frames["iat"], frames["n"], strict=True)
        )
    assert spans[0.01] <= 0.01 < spans[None]
