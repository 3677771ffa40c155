"""Descriptions of connections and prompts of classes: facts -> template sentences -> KG concepts -> paraphrase.

Owns assembling a description: true fact clauses (`facts.py`) in a random subset and order, concepts sampled from
the fine class's mission KG (its class concepts and their associated concepts), linking sentences naming the
activity (`phrases.py`), and an optional paraphrase by an LLM whose answer is kept only if it states no number
the template did not. The deterministic grammar alone gives thousands of distinct texts per class and facts.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packetclip.missions import Mission, load_missions
from packetclip_training.describe import phrases
from packetclip_training.describe.facts import FACT_CLAUSES, Facts, opening, parse_facts
from packetclip_training.knowledge.llm import ChatClient, LLMError

log = logging.getLogger(__name__)

_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ClassVocabulary:
    """The KG concepts a fine class's descriptions draw from."""

    core: tuple[str, ...]  # the class's own concepts (missions' `classes:`)
    associated: tuple[str, ...]  # concepts associated with the core ones in the KG
    # the whole mission's key -> associated map: benign text names the service actually seen (a DNS lookup is
    # not "web browsing")
    graph: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def for_service(self, service: str) -> ClassVocabulary:
        """Narrowed to the key concept of a service, when the mission has one for it; else unchanged."""
        key = SERVICE_CONCEPTS.get(service)
        if key is None or key not in self.graph:
            return self
        return ClassVocabulary((key, *self.graph[key]), self.associated, self.graph)


# Zeek service -> the benign mission's key concept for it
SERVICE_CONCEPTS = {
    "dns": "dns lookup",
    "ssl": "tls session",
    "quic": "tls session",
    "http": "web browsing",
    "ftp": "file transfer",
    "ftp-data": "file transfer",
    "ssh": "remote shell",
    "smtp": "email",
    "imap": "email",
    "pop3": "email",
    "mqtt": "telemetry",
    "ntp": "time synchronisation",
}


@functools.lru_cache(maxsize=8)
def _vocabularies(directory: str | None) -> dict[str, ClassVocabulary]:
    return class_vocabularies(load_missions(directory))


def class_vocabularies(missions: list[Mission]) -> dict[str, ClassVocabulary]:
    """Fine class -> its concepts and the concepts the KG associates with them."""
    out: dict[str, ClassVocabulary] = {}
    for mission in missions:
        for fine, core in mission.classes.items():
            linked = [w for key in core for w in mission.associated.get(key, ())]
            linked += [dst for src, dst in mission.edges if src in core]
            associated = tuple(dict.fromkeys(w for w in linked if w not in core))
            out[fine] = ClassVocabulary(core, associated, mission.associated)
    return out


def _vocabulary(fine: str, missions_dir: str | Path | None) -> ClassVocabulary:
    vocabularies = _vocabularies(str(missions_dir) if missions_dir is not None else None)
    if fine not in vocabularies:
        raise KeyError(f"fine class {fine!r} is not mapped by any mission; mapped: {', '.join(vocabularies)}")
    return vocabularies[fine]


def sample_concepts(vocabulary: ClassVocabulary, rng: random.Random, k: int = 3) -> list[str]:
    """k distinct concepts, mostly the class's own, sometimes one associated with them."""
    chosen = rng.sample(vocabulary.core, min(k, len(vocabulary.core)))
    if vocabulary.associated and rng.random() < 0.5:
        chosen[-1] = rng.choice(vocabulary.associated)
    return chosen


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def fact_sentences(facts: Facts, rng: random.Random) -> list[str]:
    """The opening and 2-4 fact clauses, joined in one of several shapes."""
    clauses = [clause(facts, rng) for clause in rng.sample(FACT_CLAUSES, rng.randint(2, len(FACT_CLAUSES)))]
    subject = opening(facts, rng)
    shape = rng.randrange(4)
    if shape == 0:
        return [_sentence(f"{subject}: {', '.join(clauses[:-1])} and {clauses[-1]}")]
    if shape == 1:
        return [_sentence(subject + " where " + clauses[0]), *(_sentence(c) for c in clauses[1:])]
    if shape == 2:
        return [_sentence(f"{subject}; {'; '.join(clauses)}")]
    return [_sentence(subject), _sentence(", ".join(clauses[:-1]) + " and " + clauses[-1])]


def concept_sentences(fine: str, vocabulary: ClassVocabulary, rng: random.Random) -> list[str]:
    """One sentence of KG concepts and one naming the activity, in either order."""
    a, b, c = (sample_concepts(vocabulary, rng) * 3)[:3]
    concepts = _sentence(rng.choice(phrases.CONCEPT_SENTENCES).format(a=a, b=b, c=c))
    link = rng.choice(phrases.LINKS).format(headline=rng.choice(phrases.headlines(fine)))
    return [concepts, link] if rng.random() < 0.5 else [link, concepts]


def describe_connection(
    facts: Mapping[str, object],
    fine: str,
    rng: random.Random,
    paraphraser: LLMParaphraser | None = None,
    missions_dir: str | Path | None = None,
) -> str:
    """One description of a connection of class `fine`; deterministic for a seeded `rng`.

    `facts` is `Connection.facts()` or `Connection.record()` (ports and proto make richer text); malformed
    facts raise `FactsError`. Every number in the text is one of the facts (or orig_pkts + resp_pkts).
    """
    parsed = parse_facts(facts)
    vocabulary = _vocabulary(fine, missions_dir)
    if fine == "benign":
        vocabulary = vocabulary.for_service(parsed.service)
    parts = [fact_sentences(parsed, rng), concept_sentences(fine, vocabulary, rng)]
    if rng.random() < 0.3:
        parts.reverse()
    text = " ".join(s for part in parts for s in part)
    return paraphraser.paraphrase(text) if paraphraser is not None else text


PROMPTS_PER_CLASS = 25


def class_prompts(fine: str, count: int = PROMPTS_PER_CLASS) -> list[str]:
    """Canonical zero-shot prompts of a fine class: `count` distinct texts of what a description says of its class
    without one connection's facts — a sentence of the class's mission concepts and one naming the activity
    (`concept_sentences`), drawn from the seeds 0, 1, 2, … so they are the same every time.

    Built from the knowledge graph rather than from the class's names alone ("a SYN flood", "network traffic from
    a SYN flood", …), they read like the descriptions the alignment trained on: a class left out of training and
    named only by its prompts is found far better (OS scan AUC 0.54 → 0.87, docs/models.md).
    """
    phrases.headlines(fine)  # unknown classes: the wording's KeyError
    vocabulary = _vocabulary(fine, None)
    prompts: dict[str, None] = {}
    for seed in range(count * 20):  # a few draws repeat a text; far more tries than ever needed
        if len(prompts) == count:
            break
        prompts.setdefault(" ".join(concept_sentences(fine, vocabulary, random.Random(seed))))
    return list(prompts)


@dataclass
class LLMParaphraser:
    """Paraphrase through an OpenAI-compatible LLM; answers that change numbers are refused."""

    client: ChatClient
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count, reported by the CLI

    PROMPT = (
        "Paraphrase this description of a network connection in one to three sentences for a security "
        "analyst. Keep every number exactly as written and add no new numbers or facts. Answer with the "
        "paraphrase only.\n\n{text}"
    )

    def paraphrase(self, text: str) -> str:
        """The LLM's paraphrase, or `text` itself when the LLM fails or alters the numbers."""
        try:
            answer = " ".join(self.client.ask(self.PROMPT.format(text=text)).split()).strip("\"' ")
        except LLMError as exc:
            return self._refuse("llm error", text, exc)
        if not answer:
            return self._refuse("empty answer", text)
        if not set(_NUMBER_RE.findall(answer)) <= set(_NUMBER_RE.findall(text)):
            return self._refuse("changed numbers", text, answer)
        self.accepted += 1
        return answer

    def _refuse(self, reason: str, text: str, detail: object = "") -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.debug("paraphrase refused (%s): %s", reason, detail)
        return text
