"""Leave-one-source-family-out: families from a MANIFEST, the held-out recipe, and the summary of each family's
evaluation as the report prints it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from packetclip_training.dataset.recipe import load_recipe
from packetclip_training.dataset.sources import MANIFEST_COLUMNS
from packetclip_training.loso_cli import AT_POINT, family_files, held_out_recipe, render, summarize

ROWS = [
    ("nDPI/a.pcap", "benign"),
    ("packet-captures/amp.pcap", "dos"),
    ("zeek/b.pcap", "benign"),
    ("zeek/scan.pcap", "recon"),
    ("nDPI/c.pcap", "benign"),
]


def _manifest(folder: Path) -> Path:
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for name, label in ROWS:
        values = {c: "" for c in MANIFEST_COLUMNS} | {"file": name, "label": label}
        lines.append("\t".join(values[c] for c in MANIFEST_COLUMNS))
    path = folder / "MANIFEST.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_families_and_a_recipe_that_holds_one_out(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    families = family_files(manifest)
    assert families == {
        "ndpi-benign": ["nDPI/a.pcap", "nDPI/c.pcap"],
        "ddos-public": ["packet-captures/amp.pcap"],
        "zeek-benign": ["zeek/b.pcap"],
        "real-attacks": ["zeek/scan.pcap"],
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "r", "lab": {"runs": [{"profile": "full", "seeds": [1]}]},
                                      "real": {"manifest": str(manifest), "test_only": ["packet-captures/*"]},
                                      "split": {"guard_s": 2.0}}))  # fmt: skip
    out = held_out_recipe(recipe, families["ndpi-benign"], tmp_path / "ndpi-benign" / "recipe.yaml")
    loaded = load_recipe(out)
    assert loaded.real_test_only == ["nDPI/a.pcap", "nDPI/c.pcap", "packet-captures/*"]
    assert loaded.split.guard_s == 2.0 and loaded.lab_runs == load_recipe(recipe).lab_runs
    assert loaded.name == "r-without-ndpi-benign"
    recipe.write_text(yaml.safe_dump({"name": "lab only", "lab": {"runs": []}}))
    with pytest.raises(click.ClickException, match="no real MANIFEST"):
        held_out_recipe(recipe, ["x"], tmp_path / "x" / "recipe.yaml")


def _summary(truth: dict[str, int], recall: dict[str, float | None], alarms: float | None) -> dict:
    return {"files": 2, "connections": sum(truth.values()), "truth": truth, "recall": recall,
            "false_alarm": alarms}  # fmt: skip


def test_summary_keeps_the_held_out_familys_rows_of_every_model() -> None:
    benign = {"benign": 100, "dos": 0, "recon": 0, "bruteforce": 0}
    dos = {"benign": 0, "dos": 50, "recon": 0, "bruteforce": 0}

    def block(family: str, truth: dict, recall: dict, alarms: float | None, mauc: float) -> dict:
        other = _summary(benign, {"benign": 1.0}, 0.0)
        entry = {
            "families": {family: _summary(truth, recall, alarms), "zeek-benign": other},
            "overall": {"mauc": mauc},
        }
        return {"real_traffic": {"models": {"PacketCLIP": entry, AT_POINT: entry, "flow xgboost": entry}},
                "operating_point": {"attack_threshold": 0.9, "calibration_connections": 40}}  # fmt: skip

    results = {
        "ndpi-benign": block("ndpi-benign", benign, {"benign": 0.99, "dos": None}, 0.01, 0.97),
        "ddos-public": block("ddos-public", dos, {"benign": None, "dos": 0.8}, None, 0.95),
    }
    summary = summarize(results, "shared")
    rows = summary["families"]["ndpi-benign"]["rows"]
    assert [row["model"] for row in rows] == ["PacketCLIP", AT_POINT, "flow xgboost"]
    assert rows[0]["false_alarm"] == 0.01 and rows[0]["mauc_all_real_test"] == 0.97
    assert summary["families"]["ddos-public"]["rows"][0]["recall"]["dos"] == 0.8
    text = render(summary)
    assert "| ddos-public | PacketCLIP | 2 | 50 | — | 0.800 | — | — | — | 0.950 |" in text
    assert "| ndpi-benign | flow xgboost | 2 | 100 | 0.990 | — | — | — | 1.0 % | 0.970 |" in text
    assert "ddos-public: threshold 0.9000 on 40 real benign validation connections" in text
