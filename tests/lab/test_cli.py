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
