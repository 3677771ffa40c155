"""Graph validation of mission knowledge graphs with networkx.

Owns turning a `Mission` into a `networkx.DiGraph` and checking that it is a DAG rooted at the mission: acyclic,
every concept reachable from the root. Also checks that a set of missions maps every fine class of
`packetclip.classes` to the mission of its coarse class. Parsing and per-file structure are `packetclip.missions`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import networkx as nx

from packetclip.classes import FINE_CLASSES, FINE_TO_COARSE
from packetclip.missions import Mission

log = logging.getLogger(__name__)


def mission_graph(mission: Mission) -> nx.DiGraph:
    """The mission's graph: root node (the mission name, kind "root") -> key -> associated, plus extra edges."""
    graph = nx.DiGraph(name=mission.name)
    graph.add_node(mission.name, kind="root")
    for concept in mission.key_concepts:
        graph.add_node(concept, kind="key")
    for concept in mission.concepts()[len(mission.key_concepts) :]:
        graph.add_node(concept, kind="associated")
    graph.add_edges_from(mission.graph_edges())
    return graph


def graph_problems(mission: Mission) -> list[str]:
    """What keeps the mission's graph from being a DAG in which every concept hangs off the root."""
    graph = mission_graph(mission)
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        problems.append("cycle: " + " -> ".join([u for u, _ in cycle] + [cycle[0][0]]))
    unreachable = set(graph) - nx.descendants(graph, mission.name) - {mission.name}
    if unreachable:
        problems.append(f"not reachable from the root {mission.name!r}: {sorted(unreachable)}")
    return problems


def class_coverage_problems(missions: Iterable[Mission]) -> list[str]:
    """Every fine class mapped exactly once, by the mission named after its coarse class."""
    problems: list[str] = []
    mapped: dict[str, str] = {}
    for mission in missions:
        for fine in mission.classes:
            if fine not in FINE_TO_COARSE:
                problems.append(f"{mission.name}: unknown fine class {fine!r}")
            elif FINE_TO_COARSE[fine] != mission.name:
                problems.append(
                    f"{mission.name}: maps {fine!r}, whose coarse class is {FINE_TO_COARSE[fine]!r}"
                )
            if fine in mapped:
                problems.append(f"{fine!r} mapped by both {mapped[fine]!r} and {mission.name!r}")
            mapped[fine] = mission.name
    missing = [fine for fine in FINE_CLASSES if fine not in mapped]
    if missing:
        problems.append(f"fine classes without a mission: {missing}")
    return problems


def validate_missions(missions: list[Mission], require_all_classes: bool = True) -> list[str]:
    """All problems of a set of missions (empty when they are fit for training)."""
    problems = [f"{m.source or m.name}: {p}" for m in missions for p in graph_problems(m)]
    if require_all_classes:
        problems += class_coverage_problems(missions)
    return problems
