"""The lab's command line without root: the catalogue listing is complete and machine-readable."""

import json

import pytest

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


def _write_whole_run(out_dir):
    """What the dataset build reads of a lab run (an empty capture, no episodes), in the fixtures' writer."""
    from tests.dataset.dataset_testdata import write_lab_run

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "capture.pcap").write_bytes(b"")
    write_lab_run(out_dir, out_dir / "capture.pcap", [], [], link=False)


class FakeLab:
    """Stands in for `run_lab` (which needs root and minutes): records each call and writes a whole run."""

    def __init__(self):
        self.calls = []

    def __call__(self, profile, out_dir, seed=1, only=None, catalogue=None):
        self.calls.append((profile.name, out_dir.name, seed, sorted(only) if only else None))
        _write_whole_run(out_dir)
        return {"episodes": [], "capture": {"packets_captured": 0}, "wall_s": 0.0}


RECIPE = (
    "lab:\n  runs_dir: {runs}\n  runs:\n    - {{profile: quick, seeds: [1, 2]}}\n"
    "    - {{profile: full, seeds: [3], only: [syn_flood/hping3-80-data120, os_scan]}}\n"
)


def _recipe(tmp_path, text=RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text.format(runs=tmp_path / "runs"))
    return path


def test_lab_recipe_makes_the_missing_runs_in_order_and_keeps_those_there(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from packetclip_training.lab import runner
    from packetclip_training.lab.cli import lab

    fake = FakeLab()
    monkeypatch.setattr(runner, "run_lab", fake)
    recipe = _recipe(tmp_path)
    _write_whole_run(tmp_path / "runs" / "quick-seed2")
    dry = CliRunner().invoke(lab, ["recipe", str(recipe), "--dry-run"])
    assert dry.exit_code == 0 and fake.calls == []
    assert [line.split()[0] for line in dry.output.splitlines()] == ["missing", "present", "missing"]

    result = CliRunner().invoke(lab, ["recipe", str(recipe)])
    assert result.exit_code == 0, result.output
    assert fake.calls == [
        ("quick", "quick-seed1", 1, None),
        (
            "full",
            "full-seed3-os_scan-syn_flood-hping3-80-data120",
            3,
            ["os_scan", "syn_flood/hping3-80-data120"],
        ),
    ]
    assert "[2/2] lab run --profile full --seed 3 --only os_scan,syn_flood/hping3-80-data120" in result.output
    assert "2 lab runs made, 1 already there" in result.output
    again = CliRunner().invoke(lab, ["recipe", str(recipe)])
    assert (
        again.exit_code == 0 and len(fake.calls) == 2 and "0 lab runs made, 3 already there" in again.output
    )


@pytest.mark.parametrize(
    ("prepare", "text", "message"),
    [
        ("partial", RECIPE, "quick-seed1 is not a whole lab run (lab run"),
        (
            None,
            RECIPE.replace("os_scan]", "no_such_class]"),
            "unknown fine classes or variants ['no_such_class']",
        ),
        (None, RECIPE.replace("profile: quick", "profile: huge"), "unknown profile 'huge'"),
    ],
)
def test_lab_recipe_runs_nothing_when_a_run_cannot_be_made(tmp_path, monkeypatch, prepare, text, message):
    from click.testing import CliRunner

    from packetclip_training.lab import runner
    from packetclip_training.lab.cli import lab

    fake = FakeLab()
    monkeypatch.setattr(runner, "run_lab", fake)
    if prepare == "partial":  # a run that stopped part-way: never overwritten
        (tmp_path / "runs" / "quick-seed1").mkdir(parents=True)
        (tmp_path / "runs" / "quick-seed1" / "capture.pcap").write_bytes(b"")
    result = CliRunner().invoke(lab, ["recipe", str(_recipe(tmp_path, text))])
    assert result.exit_code == 1 and message in result.output, result.output
    assert fake.calls == []


def test_all_makes_the_lab_runs_before_building_the_dataset(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from packetclip_training import all_cli
    from packetclip_training.lab import runner

    fake = FakeLab()
    monkeypatch.setattr(runner, "run_lab", fake)
    built = []

    def dataset_build(**kwargs):
        built.append((len(fake.calls), kwargs["recipe_path"]))
        raise SystemExit(7)  # the rest of `all` is not what this test is about

    monkeypatch.setattr(all_cli, "dataset_build", dataset_build)
    recipe = _recipe(tmp_path)
    args = ["--recipe", str(recipe), "--work", str(tmp_path / "work"), "--bundle", str(tmp_path / "bundle")]
    without = CliRunner().invoke(all_cli.all_stages, args)
    assert without.exit_code == 7 and fake.calls == [] and built == [(0, recipe)]
    result = CliRunner().invoke(all_cli.all_stages, [*args, "--make-lab-runs"])
    assert result.exit_code == 7 and len(fake.calls) == 3 and built[-1] == (3, recipe)
