"""`lab cut`: a sample run directory keeps one episode per class, whole connection starts, and stays buildable.

Runs without root on the committed sample (itself cut from a `quick` lab run), cutting it further.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from packetclip.featurizer import featurize_pcap, read_frames
from packetclip_training.cli import main
from packetclip_training.dataset.build import build_dataset
from packetclip_training.dataset.recipe import Recipe

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "lab-quick"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_cut_keeps_budgets_and_only_frames_of_the_parent(tmp_path):
    out = tmp_path / "cut"
    argv = [
        "lab",
        "cut",
        str(SAMPLE),
        "--out",
        str(out),
        "--connections-per-episode",
        "5",
        "--benign-connections",
        "10",
        "--packets-per-connection",
        "3",
        "--snaplen",
        "96",
    ]
    assert main(argv) == 0
    parent_labels, labels = _rows(SAMPLE / "labels.tsv"), _rows(out / "labels.tsv")
    assert {r["fine"] for r in labels} == {r["fine"] for r in parent_labels}
    assert all(row in parent_labels for row in labels)

    parent_frames = {(round(ts, 6), frame[:96]) for ts, _, frame in read_frames(SAMPLE / "capture.pcap")}
    frames = list(read_frames(out / "capture.pcap"))
    assert frames and all(len(f) <= 96 for _, _, f in frames)
    assert all((round(ts, 6), f) in parent_frames for ts, _, f in frames)

    windows = {r["episode"]: (r["attacker_ip"], float(r["start_ts"]), float(r["end_ts"])) for r in labels}
    clients = {h["ip"] for h in _rows(out / "hosts.tsv") if h["role"] == "benign_client"}
    per_group: Counter = Counter()
    for conn in featurize_pcap(out / "capture.pcap"):
        assert conn.n_packets <= 3
        group = next(
            (e for e, (ip, s, t) in windows.items() if conn.orig_h == ip and s <= conn.ts <= t), None
        )
        per_group[group or ("benign" if conn.orig_h in clients else "other")] += 1
    assert per_group.pop("benign") <= 10 and "other" not in per_group
    assert set(per_group) == set(windows) and max(per_group.values()) <= 5


def test_committed_sample_builds_into_a_dataset_with_every_class(tmp_path):
    card = build_dataset(Recipe(name="sample", lab_runs=[SAMPLE]), tmp_path / "ds")
    present = {fine for fine, per_split in card["counts"]["fine"].items() if sum(per_split.values())}
    assert present == {r["fine"] for r in _rows(SAMPLE / "labels.tsv")} | {"benign"}
    assert len(present) == 11
