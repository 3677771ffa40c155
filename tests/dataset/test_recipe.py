"""Recipe files: the committed default and validation of hand-written ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from packetclip_training.dataset.recipe import RecipeError, load_recipe

DEFAULT = Path(__file__).resolve().parents[2] / "training/packetclip_training/dataset/recipes/default.yaml"


def test_default_recipe_names_the_full_lab_profile_and_the_real_captures():
    recipe = load_recipe(DEFAULT)
    reflectors_and_line_rate = (
        "full-seed1-syn_flood-mausezahn-80-line-rate-syn_flood-mausezahn-dport-sweep-line-rate"
        "-udp_flood-nping-dns-reflect-any-4k-port443-udp_flood-python-dns-reflect-txt-2k-udp_flood-python-ntp-reflect-1k"
    )  # a run of some variants: their names, sorted, "/" as "-"
    assert recipe.lab_runs == [
        Path("lab-runs/full-seed1"),
        Path("lab-runs/full-seed2-vulnerability_scan"),
        Path("lab-runs") / reflectors_and_line_rate,
        Path("lab-runs/full-seed2-dictionary_attack"),
        *(
            Path(f"lab-runs/full-seed{seed}-os_scan-nmap-O-T4-4hosts-port_scan-nmap-sS-T4-top100-all-servers")
            for seed in (1, 2, 3)
        ),
    ]
    assert recipe.real_manifest == Path("../shared/data/real/MANIFEST.tsv") and recipe.real_include is None
    assert recipe.real_test_only == ["packet-captures/*"]
    assert recipe.featurizer == {"max_packets": 30, "snaplen": 128, "window": 5.0}
    assert recipe.split.train == 0.7 and recipe.split.real_test_share == 0.2


def test_flows_and_explicit_run_dirs(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "lab: {run_dirs: [a/b]}\n"
        "flows: [{csv: f.csv, pcaps: [x.pcap, y.pcap], label_map: m.yaml, utc_offset_hours: -3}]\n"
    )
    recipe = load_recipe(path)
    assert recipe.lab_runs == [Path("a/b")] and recipe.name == "r"
    flow = recipe.flows[0]
    assert flow.pcaps == [Path("x.pcap"), Path("y.pcap")] and flow.utc_offset_hours == -3
    assert flow.label_map == "m.yaml" and flow.tolerance_s == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labs: {}\n", "unknown key"),
        ("flows: [{csv: f.csv}]\n", "need csv and pcaps"),
        ("split: {train: 0.95, val: 0.1}\n", "split"),
        ("lab: {runs: [{profile: full}]}\n", "profile and seeds"),
    ],
)
def test_bad_recipes_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_lab_runs_restricted_to_classes_have_their_own_directory(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "lab:\n  runs_dir: runs\n  runs:\n    - {profile: full, seeds: [1]}\n"
        "    - {profile: full, seeds: [2, 3], only: [vulnerability_scan, os_scan]}\n"
        "    - {profile: full, seeds: [4], only: [syn_flood/hping3-80-data120]}\n"
    )
    recipe = load_recipe(recipe_file)
    assert [str(p) for p in recipe.lab_runs] == [
        "runs/full-seed1",
        "runs/full-seed2-os_scan-vulnerability_scan",
        "runs/full-seed3-os_scan-vulnerability_scan",
        "runs/full-seed4-syn_flood-hping3-80-data120",
    ]
    # what `packetclip-train lab recipe` runs to make each of them
    assert [(s.profile, s.seed, s.only, str(s.path)) for s in recipe.lab_run_specs] == [
        ("full", 1, (), "runs/full-seed1"),
        ("full", 2, ("os_scan", "vulnerability_scan"), "runs/full-seed2-os_scan-vulnerability_scan"),
        ("full", 3, ("os_scan", "vulnerability_scan"), "runs/full-seed3-os_scan-vulnerability_scan"),
        ("full", 4, ("syn_flood/hping3-80-data120",), "runs/full-seed4-syn_flood-hping3-80-data120"),
    ]
