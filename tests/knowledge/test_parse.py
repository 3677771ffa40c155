"""LLM answers in the shapes models really produce are turned into the right concepts; noise is reported."""

from __future__ import annotations

from packetclip_training.knowledge.parse import ParseReport, parse_associations, parse_concept_list

KEYS = ["flood", "syn", "half-open connection"]


def test_numbered_list_with_preamble_and_glosses():
    answer = (
        "Here are 4 typical vocabularies to represent DoS:\n\n"
        "1. **Flood** - a large volume of packets\n"
        "2) SYN (TCP connection request)\n"
        "3. Half-open connection.\n"
        "4. Flood\n"
    )
    report = ParseReport()
    assert parse_concept_list(answer, report) == ["flood", "syn", "half-open connection"]
    assert report.rejected == ["Here are 4 typical vocabularies to represent DoS:"]


def test_bullets_json_and_comma_lists():
    assert parse_concept_list("- flood\n* syn\n• amplification") == ["flood", "syn", "amplification"]
    fenced = 'Sure:\n```json\n["Flood", "SYN", "ICMP echo"]\n```'
    assert parse_concept_list(fenced) == ["flood", "syn", "icmp echo"]
    assert parse_concept_list('{"vocabularies": ["flood", "syn"]}') == ["flood", "syn"]
    assert parse_concept_list("flood, syn; amplification") == ["flood", "syn", "amplification"]


def test_sentences_and_numbers_are_not_concepts():
    report = ParseReport()
    answer = "1. flood\n2. 12345\n3. this is a whole sentence that explains far too much to be a concept"
    assert parse_concept_list(answer, report) == ["flood"]
    assert len(report.rejected) == 2


def test_associations_as_key_lines():
    answer = (
        "1. **Flood**: packet storm, bandwidth saturation, flood\n"
        "2. SYN: connection request; handshake\n"
        "- Half-open connection: backlog exhaustion\n"
    )
    assert parse_associations(answer, KEYS) == {
        "flood": ["packet storm", "bandwidth saturation"],  # the key itself is not its own association
        "syn": ["connection request", "handshake"],
        "half-open connection": ["backlog exhaustion"],
    }


def test_associations_as_headings_with_bullets_and_unknown_keys_reported():
    answer = (
        "Flood:\n  - packet storm\n  - bandwidth saturation\n**SYN**\n  - handshake\nBanana: yellow, fruit\n"
    )
    report = ParseReport()
    assert parse_associations(answer, KEYS, report) == {
        "flood": ["packet storm", "bandwidth saturation"],
        "syn": ["handshake"],
    }
    assert any("banana" in line.lower() for line in report.rejected)


def test_associations_as_json():
    answer = (
        '```json\n{"Flood": ["packet storm"], "syn": "handshake, connection request", "other": ["x"]}\n```'
    )
    report = ParseReport()
    assert parse_associations(answer, KEYS, report) == {
        "flood": ["packet storm"],
        "syn": ["handshake", "connection request"],
    }
    assert report.rejected == ["other: x"]
