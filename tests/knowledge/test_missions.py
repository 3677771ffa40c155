"""Mission files: the shipped KGs are valid DAGs covering every fine class; broken files are refused clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from packetclip.classes import FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import (
    Mission,
    MissionError,
    dump_mission,
    fine_class_concepts,
    load_mission,
    load_missions,
    mission_of_fine,
    parse_mission,
)
from packetclip_training.knowledge.graph import (
    class_coverage_problems,
    graph_problems,
    mission_graph,
    validate_missions,
)

VALID = {
    "name": "toy",
    "description": "A toy mission.",
    "key_concepts": ["Flood", "probe"],
    "associated": {"flood": ["packet storm"], "probe": ["single packet"]},
}


def test_shipped_missions_are_valid_dags_covering_every_fine_class():
    missions = load_missions()
    assert sorted(m.name for m in missions) == sorted(set(FINE_TO_COARSE.values()))
    assert validate_missions(missions) == []
    assert mission_of_fine(missions) == FINE_TO_COARSE
    concepts = fine_class_concepts(missions)
    assert set(concepts) == set(FINE_CLASSES)
    for mission in missions:
        graph = mission_graph(mission)
        assert graph.number_of_nodes() - 1 == len(mission.concepts()) >= 20, mission.name
        for fine, words in mission.classes.items():
            assert len(words) >= 4, fine  # enough concepts to sample varied descriptions from


def test_every_fine_class_has_distinct_concepts():
    # the reasoner and explanations need concepts that tell classes of one mission apart
    concepts = fine_class_concepts(load_missions())
    for a in FINE_CLASSES:
        for b in FINE_CLASSES:
            if a < b:
                assert set(concepts[a]) != set(concepts[b]), (a, b)


def test_round_trip_through_yaml(tmp_path):
    for mission in load_missions():
        path = tmp_path / f"{mission.name}.yaml"
        path.write_text(dump_mission(mission))
        again = load_mission(path)
        assert again.to_dict() == mission.to_dict()


def test_concepts_are_normalised_and_case_duplicates_refused():
    mission = parse_mission(VALID)
    assert mission.key_concepts == ("flood", "probe")
    with pytest.raises(MissionError, match="duplicate concept 'flood'"):
        parse_mission({**VALID, "key_concepts": ["flood", "FLOOD ", "probe"]})
    with pytest.raises(MissionError, match="already a key concept"):
        parse_mission({**VALID, "associated": {"flood": ["Probe"]}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"associated": {"nothing": ["x"]}}, "not a key concept"),
        ({"edges": [["flood", "ghost"]]}, "unknown concepts"),
        ({"edges": [["flood"]]}, "not a \\[from, to\\] pair"),
        ({"classes": {"syn_flood": ["ghost"]}}, "unknown concepts"),
        ({"name": "Bad Name"}, "name"),
        ({"description": ""}, "description is missing"),
        ({"key_concepts": []}, "at least one concept"),
        ({"key_concepts": ["toy", "flood", "probe"]}, "mission's own name"),
        ({"colour": "red"}, "unknown keys"),
    ],
)
def test_structural_problems_are_named(change, message):
    with pytest.raises(MissionError, match=message):
        parse_mission({**VALID, **change}, "toy.yaml")


def test_cycles_and_unreachable_concepts_are_found_by_the_graph_check():
    cyclic = parse_mission({**VALID, "edges": [["packet storm", "flood"]]})
    assert any(p.startswith("cycle") for p in graph_problems(cyclic))
    assert graph_problems(parse_mission({**VALID, "edges": [["flood", "single packet"]]})) == []
    # a hand-built mission whose associated list hangs off a concept the root does not reach
    orphan = Mission("toy", "d", ("flood",), {"ghost": ("boo",)})
    assert any("not reachable" in p for p in graph_problems(orphan))


def test_class_coverage_finds_missing_and_misplaced_classes():
    missions = load_missions()
    without_dos = [m for m in missions if m.name != "dos"]
    problems = class_coverage_problems(without_dos)
    assert any("syn_flood" in p for p in problems)
    wrong = [*missions, parse_mission({**VALID, "classes": {"port_scan": ["probe"]}})]
    problems = class_coverage_problems(wrong)
    assert any("coarse class is 'recon'" in p for p in problems)
    assert any("mapped by both" in p for p in problems)


def test_loading_a_directory_strict_and_lenient(tmp_path, caplog):
    (tmp_path / "good.yaml").write_text(dump_mission(parse_mission(VALID)))
    (tmp_path / "bad.yaml").write_text("name: bad\nkey_concepts: [a, a]\ndescription: x\n")
    (tmp_path / "broken.yml").write_text("name: [unclosed\n")
    with pytest.raises(MissionError, match=r"bad\.yaml"):
        load_missions(tmp_path)
    missions = load_missions(tmp_path, strict=False)
    assert [m.name for m in missions] == ["toy"]
    assert "2 mission file(s) skipped" in caplog.text


def test_runtime_loader_needs_neither_networkx_nor_torch():
    code = textwrap.dedent(
        """
        import sys
        from packetclip.missions import load_missions
        assert len(load_missions()) == 4
        bad = [m for m in ("networkx", "torch", "packetclip_training") if m in sys.modules]
        assert not bad, bad
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
