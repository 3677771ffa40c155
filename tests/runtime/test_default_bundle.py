"""The embedded default bundle: it verifies, its models reproduce their parity fixtures under onnxruntime, its
manifest states what it was trained and measured on, and it classifies the committed lab sample right — a quick
lab run made apart from the training runs, so these connections were never trained on."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from packetclip.bundle import check_fixtures, default_bundle_path, load_bundle
from packetclip.engine import Engine
from packetclip.featurizer import featurize_pcap

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "lab-quick"
BUDGET_BYTES = 15 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle():
    path = default_bundle_path()
    if not (path / "manifest.json").is_file():
        pytest.skip(f"no embedded default bundle at {path}")
    return load_bundle(path)


def test_verifies_and_matches_its_fixtures(bundle) -> None:
    differences = check_fixtures(bundle)
    assert set(differences) == {"encoder", "reasoner"}
    assert max(differences.values()) < 1e-4
    size = sum(p.stat().st_size for p in bundle.root.rglob("*") if p.is_file())
    assert size <= BUDGET_BYTES


def test_manifest_states_data_and_metrics(bundle) -> None:
    manifest = bundle.manifest
    assert manifest["data_card"]["counts"]["total"]["test"] > 100_000
    # the evaluation's headline travels with the bundle; whether each target is met is the report's to say
    # (reports/README.md), this floor only catches a broken export
    assert manifest["metrics"]["4-class mAUC (coarse)"] >= 0.95
    assert 0.0 <= manifest["metrics"]["fine-class top-1"] <= 1.0
    assert manifest["models"]["encoder"]["parameters"] <= 1_000_000
    assert manifest["models"]["encoder"]["flops_per_packet"] <= 2_000_000


def _labels() -> list[dict[str, str]]:
    with (SAMPLE / "labels.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _truth(conn, episodes: list[dict[str, str]]) -> str | None:
    """The lab's labelling rule: an attacker's connection inside one of its episodes gets the episode's class;
    outside every episode it has no label; other hosts' traffic is benign."""
    attackers = {e["attacker_ip"] for e in episodes}
    if conn.orig_h not in attackers:
        return "benign"
    for episode in episodes:
        if episode["attacker_ip"] == conn.orig_h and float(episode["start_ts"]) <= conn.ts <= float(
            episode["end_ts"]
        ):
            return episode["fine"]
    return None


def test_the_sample_capture_is_classified_right(bundle) -> None:
    """Coarse labels right at the model's own ranking (argmax) and at the bundle's operating point. The point is
    chosen on real benign traffic, not on the lab's, and it may cost this short capture some attacks: a flood's
    first connections reach the model before the victim's side shows a flood, and slow password guessing scores
    near benign logins (2026.12.07-3: attacks 0.94 at argmax, 0.87 at its point of 0.984; benign 0.99 and 1.00)."""
    episodes = _labels()
    engine = Engine(bundle)
    try:
        connections = list(featurize_pcap(SAMPLE / "capture.pcap", engine.featurizer_config))
        verdicts = engine.classify(connections, sensor="capture.pcap")
    finally:
        engine.close()
    coarse_of = bundle.fine_to_coarse
    right_label, right_argmax, right_attack, counted = Counter(), Counter(), Counter(), Counter()
    for conn, verdict in zip(connections, verdicts, strict=True):
        truth = _truth(conn, episodes)
        if truth is None:
            continue
        counted[truth] += 1
        right_label[truth] += verdict.label == coarse_of[truth]
        right_argmax[truth] += max(verdict.scores, key=verdict.scores.__getitem__) == coarse_of[truth]
        right_attack[truth] += verdict.attack == truth
    attack_rows = sum(n for c, n in counted.items() if c != "benign")
    assert attack_rows > 100 and counted["benign"] > 20
    assert sum(right_argmax[c] for c in counted if c != "benign") / attack_rows >= 0.9
    assert right_argmax["benign"] / counted["benign"] >= 0.9
    assert sum(right_label[c] for c in counted if c != "benign") / attack_rows >= 0.85
    assert right_label["benign"] / counted["benign"] >= 0.95
    assert sum(right_attack.values()) / sum(counted.values()) >= 0.8
