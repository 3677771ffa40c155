"""Mission knowledge graphs as operators write them: `rules/missions/<name>.yaml` parsed and checked.

Owns the `Mission` record, YAML parsing and the structural checks that need no graph library: required fields,
concept names normalised and unique within a mission, every associated concept hanging off a declared key
concept, extra edges naming only known concepts, and fine-class mappings naming only the mission's concepts.
Graph-theoretic validation (acyclicity, reachability from the mission root) lives in the factory
(`packetclip_training.knowledge.graph`), which needs networkx; the runtime only reads.

A mission file:

    name: dos
    description: Denial of service ...
    key_concepts: [flood, high packet rate, ...]
    associated:                      # key concept -> associated concepts (optional)
      flood: [packet storm, ...]
    edges: [[flood, resource exhaustion]]   # optional extra concept -> concept edges
    classes:                         # optional: fine class -> the concepts that describe it
      syn_flood: [flood, syn, half-open connection]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# Shipped missions live beside the package in a checkout; an installed package finds none there.
SHIPPED_MISSIONS_DIR = Path(__file__).resolve().parents[2] / "rules" / "missions"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_KNOWN_KEYS = {"name", "description", "key_concepts", "associated", "edges", "classes"}


class MissionError(ValueError):
    """A mission file that cannot be used; the message names the file and what is wrong."""


def normalise_concept(text: str) -> str:
    """One spelling per concept: lower case, single spaces, no surrounding punctuation."""
    collapsed = " ".join(str(text).split()).lower()
    return collapsed.strip(" .,;:*-\"'`")


@dataclass(frozen=True)
class Mission:
    """One mission's knowledge graph: root -> key concepts -> associated concepts (+ extra edges)."""

    name: str
    description: str
    key_concepts: tuple[str, ...]
    associated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    edges: tuple[tuple[str, str], ...] = ()
    # fine class -> the concepts of this mission that describe it (reasoner targets and explanations)
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""  # the file it came from, for messages

    def concepts(self) -> tuple[str, ...]:
        """Every concept once: key concepts first, then associated ones in file order."""
        seen = dict.fromkeys(self.key_concepts)
        for words in self.associated.values():
            seen.update(dict.fromkeys(words))
        return tuple(seen)

    def graph_edges(self) -> list[tuple[str, str]]:
        """All directed edges, with the mission name as the root node."""
        out = [(self.name, concept) for concept in self.key_concepts]
        out += [(key, word) for key, words in self.associated.items() for word in words]
        out += list(self.edges)
        return out

    def to_dict(self) -> dict[str, object]:
        """The YAML-ready form (what `dump_mission` writes)."""
        data: dict[str, object] = {
            "name": self.name,
            "description": self.description,
            "key_concepts": list(self.key_concepts),
            "associated": {key: list(words) for key, words in self.associated.items()},
        }
        if self.edges:
            data["edges"] = [list(edge) for edge in self.edges]
        if self.classes:
            data["classes"] = {fine: list(words) for fine, words in self.classes.items()}
        return data


def parse_mission(data: object, source: str = "<mission>") -> Mission:
    """A `Mission` from parsed YAML; raises `MissionError` naming `source` and every problem found."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise MissionError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _KNOWN_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (known: {sorted(_KNOWN_KEYS)})")
    name = str(data.get("name") or "")
    if not _NAME_RE.match(name):
        problems.append(f"name {name!r} must be lower-case letters, digits and _")
    description = " ".join(str(data.get("description") or "").split())
    if not description:
        problems.append("description is missing")
    key_concepts = _concept_list(data.get("key_concepts"), "key_concepts", problems)
    if not key_concepts:
        problems.append("key_concepts must list at least one concept")
    associated = _associated(data.get("associated"), key_concepts, problems)
    known = set(key_concepts) | {w for words in associated.values() for w in words}
    if name and name in known:
        problems.append(f"concept {name!r} has the mission's own name (the root node)")
    edges = _edges(data.get("edges"), known, problems)
    classes = _classes(data.get("classes"), known, problems)
    if problems:
        raise MissionError(f"{source}: " + "; ".join(problems))
    return Mission(name, description, key_concepts, associated, edges, classes, source)


def _concept_list(raw: object, where: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        problems.append(f"{where} must be a list of concept names")
        return ()
    out: list[str] = []
    for item in raw:
        concept = normalise_concept(str(item)) if isinstance(item, (str, int, float)) else ""
        if not concept:
            problems.append(f"{where}: {item!r} is not a concept name")
        elif concept in out:
            problems.append(f"{where}: duplicate concept {concept!r}")
        else:
            out.append(concept)
    return tuple(out)


def _associated(raw: object, keys: tuple[str, ...], problems: list[str]) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append("associated must map key concepts to lists of concepts")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for raw_key, raw_words in raw.items():
        key = normalise_concept(str(raw_key))
        if key not in keys:
            problems.append(f"associated: {key!r} is not a key concept (dangling)")
            continue
        words = _concept_list(raw_words, f"associated[{key}]", problems)
        for word in words:
            if word in keys:
                problems.append(f"associated[{key}]: {word!r} is already a key concept (duplicate)")
        out[key] = tuple(w for w in words if w not in keys)
    return out


def _edges(raw: object, known: set[str], problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        problems.append("edges must be a list of [from, to] pairs")
        return ()
    out: list[tuple[str, str]] = []
    for item in raw:
        if isinstance(item, str) or not isinstance(item, Iterable) or len(pair := list(item)) != 2:
            problems.append(f"edges: {item!r} is not a [from, to] pair")
            continue
        src, dst = (normalise_concept(str(x)) for x in pair)
        missing = [x for x in (src, dst) if x not in known]
        if missing:
            problems.append(f"edges: {src!r} -> {dst!r} names unknown concepts {missing} (dangling)")
        elif src == dst:
            problems.append(f"edges: self-loop on {src!r}")
        else:
            out.append((src, dst))
    return tuple(out)


def _classes(raw: object, known: set[str], problems: list[str]) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append("classes must map fine classes to lists of concepts")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for fine, raw_words in raw.items():
        words = _concept_list(raw_words, f"classes[{fine}]", problems)
        unknown = [w for w in words if w not in known]
        if unknown:
            problems.append(f"classes[{fine}]: unknown concepts {unknown} (dangling)")
        if not words:
            problems.append(f"classes[{fine}]: needs at least one concept")
        out[str(fine)] = words
    return out


def load_mission(path: str | Path) -> Mission:
    """One mission file; `MissionError` names the file when it is unreadable or invalid."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MissionError(f"{path}: cannot read mission: {exc}") from exc
    return parse_mission(data, str(path))


def mission_files(directory: str | Path | None = None) -> list[Path]:
    """The `*.yaml` / `*.yml` files of a mission directory (default: the shipped rules/missions)."""
    directory = Path(directory) if directory is not None else SHIPPED_MISSIONS_DIR
    if not directory.is_dir():
        raise MissionError(f"{directory}: no such mission directory")
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_missions(directory: str | Path | None = None, strict: bool = True) -> list[Mission]:
    """Every mission of a directory, sorted by file name; names must be unique.

    With `strict`, the first invalid file raises; otherwise invalid files are logged, counted and skipped
    (what a running sensor wants: one bad operator edit must not take the other missions down).
    """
    missions: list[Mission] = []
    skipped = 0
    for path in mission_files(directory):
        try:
            mission = load_mission(path)
        except MissionError as exc:
            if strict:
                raise
            skipped += 1
            log.warning("skipping mission: %s", exc)
            continue
        if any(m.name == mission.name for m in missions):
            message = f"{path}: mission name {mission.name!r} is used by another file"
            if strict:
                raise MissionError(message)
            skipped += 1
            log.warning("skipping mission: %s", message)
            continue
        missions.append(mission)
    if skipped:
        log.warning("%d mission file(s) skipped, %d loaded", skipped, len(missions))
    return missions


def fine_class_concepts(missions: Iterable[Mission]) -> dict[str, tuple[str, ...]]:
    """Fine class -> the concepts that describe it, over all missions (a class mapped twice raises)."""
    out: dict[str, tuple[str, ...]] = {}
    for mission in missions:
        for fine, words in mission.classes.items():
            if fine in out:
                raise MissionError(f"{mission.source}: fine class {fine!r} is mapped by two missions")
            out[fine] = words
    return out


def mission_of_fine(missions: Iterable[Mission]) -> dict[str, str]:
    """Fine class -> the name of the mission that maps it."""
    return {fine: m.name for m in missions for fine in m.classes}


def dump_mission(mission: Mission) -> str:
    """The YAML text of a mission (block style, file order kept)."""
    return yaml.safe_dump(mission.to_dict(), sort_keys=False, allow_unicode=True, width=110)
