"""Generating a mission knowledge graph with the seed's two prompts against an OpenAI-compatible LLM.

Owns the prompts, turning the two answers into a `Mission` (associated concepts that repeat a key concept are
dropped and counted) and refusing a graph that fails validation. Parsing lives in `parse.py`, the HTTP client in
`llm.py`, structural checks in `packetclip.missions`, DAG checks in `graph.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from packetclip.missions import Mission, MissionError, parse_mission
from packetclip_training.knowledge.graph import graph_problems
from packetclip_training.knowledge.llm import ChatClient
from packetclip_training.knowledge.parse import ParseReport, parse_associations, parse_concept_list

log = logging.getLogger(__name__)

VOCABULARY_PROMPT = (
    "List {count} typical vocabularies to represent {event} in network traffic. "
    "Answer with a numbered list, one vocabulary (one to four words) per line, without explanations."
)
ASSOCIATION_PROMPT = (
    "What are associated words with vocabularies in set K? K = {{{keys}}}. "
    "For each vocabulary in K give up to {count} associated words or short phrases, one line per vocabulary, "
    "in the form 'vocabulary: word, word, word'."
)


@dataclass
class GenerationResult:
    """A generated mission and what parsing threw away (reported to the operator)."""

    mission: Mission
    vocabulary_report: ParseReport
    association_report: ParseReport
    dropped_duplicates: int


def generate_mission(
    client: ChatClient, name: str, event: str, n_vocabularies: int = 10, n_associated: int = 4
) -> GenerationResult:
    """Ask the two prompts, build the mission and validate it; `MissionError` when the answers are unusable."""
    vocabulary_report = ParseReport()
    answer = client.ask(VOCABULARY_PROMPT.format(count=n_vocabularies, event=event), keep_history=True)
    keys = parse_concept_list(answer, vocabulary_report)[:n_vocabularies]
    if not keys:
        raise MissionError(f"{name}: the LLM's vocabulary answer had no usable concept: {answer[:200]!r}")
    association_report = ParseReport()
    answer = client.ask(
        ASSOCIATION_PROMPT.format(keys=", ".join(keys), count=n_associated), keep_history=True
    )
    associated = parse_associations(answer, keys, association_report)
    associated, dropped = _without_key_repeats(keys, associated, n_associated)
    if dropped:
        log.info("%s: dropped %d associated words that repeat a key concept", name, dropped)
    data = {"name": name, "description": event, "key_concepts": keys, "associated": associated}
    mission = parse_mission(data, f"<generated {name}>")
    problems = graph_problems(mission)
    if problems:
        raise MissionError(f"{name}: generated graph is invalid: {'; '.join(problems)}")
    return GenerationResult(mission, vocabulary_report, association_report, dropped)


def _without_key_repeats(
    keys: list[str], associated: dict[str, list[str]], limit: int
) -> tuple[dict[str, list[str]], int]:
    key_set = set(keys)
    out: dict[str, list[str]] = {}
    dropped = 0
    for key in keys:
        words = associated.get(key, [])
        kept = [w for w in words if w not in key_set][:limit]
        dropped += sum(1 for w in words if w in key_set)
        if kept:
            out[key] = kept
    return out, dropped
