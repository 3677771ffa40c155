"""Descriptions state only true numbers, vary a lot, are reproducible, and carry the class's KG concepts."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest

from packetclip.classes import FINE_CLASSES
from packetclip.featurizer import featurize_pcap
from packetclip.missions import fine_class_concepts, load_missions
from packetclip_training.describe import class_prompts, describe_connection
from packetclip_training.describe.describe import LLMParaphraser
from packetclip_training.describe.facts import FactsError
from packetclip_training.describe.synthetic import synthetic_facts
from packetclip_training.describe.wordfreq import describe_rows
from packetclip_training.knowledge.llm import LLMError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "lab-quick"
# a number standing alone ("POP3" names a protocol, not a quantity)
NUMBER = re.compile(r"(port\s+)?(?<![\w.])(\d+(?:\.\d+)?)\s*(\w*)")


def numbers_are_true(text: str, facts: dict) -> list[str]:
    """Every number in `text` with the unit after it, checked against the facts independently of the code."""
    counts = {facts["orig_pkts"], facts["resp_pkts"], facts["orig_pkts"] + facts["resp_pkts"]}
    sizes = {facts["orig_bytes"], facts["resp_bytes"]}
    wrong = []
    for port, number, unit in NUMBER.findall(text):
        value = float(number)
        decimals = len(number.split(".")[1]) if "." in number else 0
        if port:
            ok = value == facts.get("resp_p")
        elif unit.startswith("packet"):
            ok = value in counts
        elif unit.startswith("byte"):
            ok = value in sizes
        elif unit == "seconds":
            ok = abs(value - facts["duration"]) <= 0.5 * 10**-decimals + 1e-9
        elif unit == "milliseconds":
            ok = abs(value - facts["duration"] * 1000) <= 0.5 + 1e-9
        elif unit == "from":  # "55 packets in total, 30 from the originator"
            ok = value in counts
        else:
            ok = False
        if not ok:
            wrong.append(f"{number} {unit}")
    return wrong


def lab_sample_rows() -> list[tuple[dict, str]]:
    """Real connections of the committed lab capture with their fine class (labelling rule of CONTRACTS.md)."""
    with (SAMPLE / "labels.tsv").open() as handle:
        episodes = list(csv.DictReader(handle, delimiter="\t"))
    attackers = {e["attacker_ip"] for e in episodes}
    rows = []
    for conn in featurize_pcap(SAMPLE / "capture.pcap"):
        fine = "benign"
        if conn.orig_h in attackers:
            hits = [
                e
                for e in episodes
                if e["attacker_ip"] == conn.orig_h and float(e["start_ts"]) <= conn.ts <= float(e["end_ts"])
            ]
            if not hits:
                continue
            fine = hits[0]["fine"]
        rows.append((conn.record(), fine))
    return rows


def test_numbers_in_descriptions_of_real_connections_are_true():
    rows = lab_sample_rows()
    assert len(rows) > 100 and len({fine for _, fine in rows}) >= 5
    rng = random.Random(7)
    checked = 0
    for facts, fine in rows:
        for _ in range(5):
            text = describe_connection(facts, fine, rng)
            assert numbers_are_true(text, facts) == [], text
            checked += len(NUMBER.findall(text))
    assert checked > 1000  # the check really saw numbers


@pytest.mark.parametrize("fine", FINE_CLASSES)
def test_numbers_true_and_forms_many_per_class(fine):
    rng = random.Random(fine)
    missions = load_missions()
    concepts = set(fine_class_concepts(missions)[fine])
    if fine == "benign":  # benign text follows the service seen (own test below)
        concepts = {c for m in missions if m.name == "benign" for c in m.concepts()}
    for _ in range(200):
        facts = synthetic_facts(fine, rng)
        text = describe_connection(facts, fine, rng)
        assert numbers_are_true(text, facts) == [], text
    # one fixed connection, many seeds: the grammar must give varied text for contrastive training
    facts = synthetic_facts(fine, random.Random(1))
    texts = [describe_connection(facts, fine, random.Random(seed)) for seed in range(400)]
    assert len(set(texts)) >= 350
    # every text carries concepts of its class
    assert all(any(c in t for c in concepts) for t in texts)
    assert len({t.split(".")[0] for t in texts}) >= 20  # not just a shuffled tail: openings vary too


def test_same_seed_same_text():
    facts = synthetic_facts("syn_flood", random.Random(3))
    a = [describe_connection(facts, "syn_flood", random.Random(11)) for _ in range(3)]
    assert len(set(a)) == 1
    assert a[0] != describe_connection(facts, "syn_flood", random.Random(12))


def test_class_prompts_are_several_and_unambiguous():
    seen: dict[str, str] = {}
    for fine in FINE_CLASSES:
        prompts = class_prompts(fine)
        assert len(prompts) >= 5 and len(set(prompts)) == len(prompts)
        assert not re.search(r"\d", " ".join(prompts))
        for prompt in prompts:
            assert seen.setdefault(prompt, fine) == fine, f"{prompt!r} names two classes"
    with pytest.raises(KeyError, match="no wording"):
        class_prompts("nonsense")


def test_malformed_facts_are_refused_and_counted():
    good = synthetic_facts("benign", random.Random(0))
    for bad in (
        {**good, "orig_pkts": "many"},
        {**good, "duration": -1},
        {**good, "orig_pkts": 0, "resp_pkts": 0},
    ):
        with pytest.raises(FactsError):
            describe_connection(bad, "benign", random.Random(0))
    corpus = describe_rows(
        [(good, "benign"), ({**good, "duration": float("nan")}, "benign"), (good, "no_class")]
    )
    assert corpus.skipped == 2
    assert len(corpus.texts["benign"]) == 1


class ScriptedClient:
    """Stands in for ChatClient (the HTTP client is tested against a fake server in tests/knowledge)."""

    def __init__(self, answers):
        self.answers = list(answers)

    def ask(self, prompt: str, keep_history: bool = False) -> str:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_llm_paraphrase_is_kept_only_when_its_numbers_are_true():
    facts = {
        "duration": 2.0,
        "orig_pkts": 12,
        "resp_pkts": 10,
        "orig_bytes": 900,
        "resp_bytes": 4000,
        "conn_state": "SF",
        "history": "ShADadFf",
        "service": "ssh",
        "proto": "tcp",
        "resp_p": 22,
    }
    template = describe_connection(facts, "dictionary_attack", random.Random(0))
    good = "An SSH login session on port 22 with 12 packets out and 10 back, typical of password guessing."
    client = ScriptedClient([good, "A session with 13 packets.", LLMError("down"), "  "])
    paraphraser = LLMParaphraser(client)  # type: ignore[arg-type]
    outputs = [
        describe_connection(facts, "dictionary_attack", random.Random(0), paraphraser) for _ in range(4)
    ]
    assert outputs == [good, template, template, template]
    assert paraphraser.accepted == 1
    assert paraphraser.refused == {"changed numbers": 1, "llm error": 1, "empty answer": 1}


def test_benign_concepts_follow_the_service_seen():
    dns = {
        "duration": 0.01,
        "orig_pkts": 1,
        "resp_pkts": 1,
        "orig_bytes": 30,
        "resp_bytes": 90,
        "conn_state": "SF",
        "history": "Dd",
        "service": "dns",
        "proto": "udp",
        "resp_p": 53,
    }
    texts = [describe_connection(dns, "benign", random.Random(s)) for s in range(200)]
    assert not any("web browsing" in t or "tls session" in t for t in texts)
    assert all(
        any(c in t for c in ("dns lookup", "single query", "single answer", "name resolution")) for t in texts
    )
    unknown = {**dns, "service": "", "proto": "tcp", "resp_p": 7777}
    concepts = fine_class_concepts(load_missions())["benign"]
    assert all(
        any(c in t for c in concepts)
        for t in (describe_connection(unknown, "benign", random.Random(s)) for s in range(50))
    )
