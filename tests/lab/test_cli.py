"""The lab's command line without root: the catalogue listing is complete and machine-readable."""

import json

from packetclip.classes import FINE_CLASSES
from packetclip_training.cli import main


def test_variants_lists_every_catalogue_entry_as_json(capsys):
    from packetclip_training.lab.attacks import CATALOGUE

    assert main(["lab", "variants", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == [v.name for v in CATALOGUE]
    assert {r["fine"] for r in rows} == set(FINE_CLASSES) - {"benign"}
    assert any(r["heldout"] for r in rows) and not all(r["heldout"] for r in rows)


def test_only_selects_fine_classes_or_single_variants():
    from packetclip_training.lab.attacks import CATALOGUE
    from packetclip_training.lab.profiles import PROFILES
    from packetclip_training.lab.runner import choose_variants

    full = PROFILES["full"]
    by_class = choose_variants(CATALOGUE, full, {"syn_flood"})
    assert len(by_class) >= 3 and {v.fine for v in by_class} == {"syn_flood"}
    one = by_class[-1].name
    assert [v.name for v in choose_variants(CATALOGUE, full, {one})] == [one]
    mixed = choose_variants(CATALOGUE, full, {one, "ping_sweep"})
    assert one in {v.name for v in mixed} and {v.fine for v in mixed} == {"syn_flood", "ping_sweep"}


def test_run_refuses_unknown_only_names_before_touching_anything(tmp_path):
    from click.testing import CliRunner

    from packetclip_training.lab.cli import lab

    out = tmp_path / "run"
    result = CliRunner().invoke(lab, ["run", "--out", str(out), "--only", "syn_flood/no-such-tool"])
    assert result.exit_code == 2
    assert "syn_flood/no-such-tool" in result.output
    assert not out.exists()


def test_scheduler_never_runs_two_episodes_of_one_class_at_once():
    from packetclip_training.lab.attacks import CATALOGUE
    from packetclip_training.lab.runner import next_startable

    syn = [v for v in CATALOGUE if v.fine == "syn_flood"][:2]
    udp = next(v for v in CATALOGUE if v.fine == "udp_flood")
    pending = [syn[0], syn[1], udp]
    assert next_startable(pending, set()) == 0
    assert next_startable(pending, {"syn_flood"}) == 2
    assert next_startable(pending[:2], {"syn_flood"}) is None
    assert next_startable([], set()) is None


def test_scheduler_rests_a_class_after_its_episode_so_the_split_keeps_back_to_back_episodes(
    tmp_path, monkeypatch
):
    """A short tool's episodes ran 0.4 s apart and reused their 5-tuples: every training episode of the
    multi-host OS scan and of mausezahn's line-rate floods merged into the next one and the split dropped them."""
    from types import SimpleNamespace

    from packetclip_training.lab import runner
    from packetclip_training.lab.profiles import PROFILES
    from packetclip_training.lab.runner import Episode, EpisodeScheduler

    now = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    attackers = [
        SimpleNamespace(name="att1", ip="198.18.3.66"),
        SimpleNamespace(name="att2", ip="198.18.3.67"),
    ]
    lab = SimpleNamespace(topology=SimpleNamespace(hosts_with_role=lambda role: attackers), root=tmp_path)
    profile = PROFILES["full"]
    scheduler = EpisodeScheduler(lab, profile, "run", 1, capture=None)
    episode = Episode(
        "run-e0001", "os_scan/nmap-O-T4-4hosts", "os_scan", "nmap", False, "att1", "198.18.3.66", 60
    )
    scheduler._running["att1"] = (episode, None, 0.0)
    assert scheduler._busy_fines() == {"os_scan"}
    scheduler._finish("att1", episode)
    assert scheduler._busy_fines() == {"os_scan"}  # resting, though nothing of the class runs
    now[0] += profile.class_gap_s - 0.01
    assert scheduler._busy_fines() == {"os_scan"}
    now[0] += 0.02
    assert scheduler._busy_fines() == set()
    from packetclip.featurizer.config import FeaturizerConfig
    from packetclip_training.dataset.splits import SplitConfig

    assert profile.class_gap_s > FeaturizerConfig().tcp_close_delay + SplitConfig().guard_s
