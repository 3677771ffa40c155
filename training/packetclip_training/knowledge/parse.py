"""Turning free-form LLM answers into concept lists and key -> associated maps.

Owns robust parsing of the two KG prompts' answers: JSON (lists or objects, also inside ``` fences), numbered
lists, bullets, "key: a, b, c" lines, and "key" headings followed by bullet lines. Items are normalised with
`packetclip.missions.normalise_concept`; explanations after a dash or in parentheses are dropped. What cannot be
parsed is counted in `ParseReport`, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from packetclip.missions import normalise_concept

log = logging.getLogger(__name__)

_FENCE_RE = re.compile(r"```(?:json|yaml)?\s*(.*?)```", re.S)
_MARKER_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|[a-zA-Z][.)](?=\s))\s*")
_KEY_LINE_RE = re.compile(r"^(?P<key>[^:]{1,60}):\s*(?P<rest>.*)$")
_MAX_CONCEPT_WORDS = 5  # a "vocabulary" longer than this is a sentence, not a concept


@dataclass
class ParseReport:
    """What happened to the lines of one answer."""

    kept: int = 0
    rejected: list[str] = field(default_factory=list)  # lines or items that were not concepts


def clean_item(text: str) -> str:
    """A concept from one list item: markers, markdown, glosses and trailing punctuation removed."""
    text = _MARKER_RE.sub("", text).replace("**", "").replace("__", "").replace("`", "")
    text = re.split(r"\s+[-–—]\s+|\s*\(", text, maxsplit=1)[0]  # "SYN flood - many SYNs" -> "SYN flood"
    return normalise_concept(text)


def _is_concept(text: str) -> bool:
    return bool(text) and len(text.split()) <= _MAX_CONCEPT_WORDS and any(c.isalpha() for c in text)


def _json_payload(answer: str) -> object | None:
    fenced = _FENCE_RE.search(answer)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(answer)
    for text in candidates:
        start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
        if start < 0:
            continue
        try:
            payload, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            continue
        return payload
    return None


def _keep(items: list[str], report: ParseReport) -> list[str]:
    out: list[str] = []
    for raw in items:
        concept = clean_item(raw)
        if not _is_concept(concept):
            if raw.strip():
                report.rejected.append(raw.strip())
            continue
        if concept not in out:
            out.append(concept)
    report.kept += len(out)
    return out


def parse_concept_list(answer: str, report: ParseReport | None = None) -> list[str]:
    """Concepts from an answer to "List V typical vocabularies ..."."""
    report = report if report is not None else ParseReport()
    payload = _json_payload(answer)
    if isinstance(payload, dict):
        payload = next((v for v in payload.values() if isinstance(v, list)), list(payload))
    if isinstance(payload, list):
        return _keep([str(x) for x in payload if isinstance(x, (str, int, float))], report)
    lines = [line for line in answer.splitlines() if line.strip()]
    listed = [line for line in lines if _MARKER_RE.match(line)]
    if listed:
        # lines such as "Here are 10 vocabularies:" are expected noise: reported, not kept
        report.rejected += [line.strip() for line in lines if line not in listed]
        return _keep(listed, report)
    if len(lines) == 1:  # "flood, syn, high packet rate"; one line without separators is prose, not a list
        items = re.split(r"[,;]", lines[0])
        if len(items) < 2:
            report.rejected.append(lines[0].strip())
            return []
        return _keep(items, report)
    return _keep(lines, report)


def parse_associations(
    answer: str, keys: list[str], report: ParseReport | None = None
) -> dict[str, list[str]]:
    """Key concept -> associated concepts from an answer to "What are associated words with ... K?".

    Keys in the answer are matched to `keys` after normalisation (also "1. Flood:" and "**Flood**"); entries
    for keys not asked about are reported and dropped.
    """
    report = report if report is not None else ParseReport()
    wanted = {k: k for k in keys}
    out: dict[str, list[str]] = {}
    payload = _json_payload(answer)
    if isinstance(payload, dict):
        for raw_key, value in payload.items():
            items = value if isinstance(value, list) else re.split(r"[,;]", str(value))
            _assign(clean_item(str(raw_key)), [str(x) for x in items], wanted, out, report)
        return out
    current: str | None = None
    for line in answer.splitlines():
        if not line.strip():
            continue
        stripped = _MARKER_RE.sub("", line).replace("**", "").strip()
        match = _KEY_LINE_RE.match(stripped)
        if match and clean_item(match.group("key")) in wanted:
            current = clean_item(match.group("key"))
            rest = match.group("rest").strip()
            if rest:
                _assign(current, re.split(r"[,;]", rest), wanted, out, report)
            continue
        heading = clean_item(stripped.rstrip(":"))
        # a key on a line of its own opens a section; indented bullets below it are its associations
        if heading in wanted and (line.rstrip().endswith(":") or not line[:1].isspace()):
            current = heading
            continue
        if current is not None and _MARKER_RE.match(line):
            _assign(current, [stripped], wanted, out, report)
        else:
            report.rejected.append(line.strip())
    return out


def _assign(
    key: str, items: list[str], wanted: dict[str, str], out: dict[str, list[str]], report: ParseReport
) -> None:
    if key not in wanted:
        report.rejected.append(f"{key}: {', '.join(items)}")
        return
    bucket = out.setdefault(wanted[key], [])
    for concept in _keep(items, report):
        if concept not in bucket and concept != key:
            bucket.append(concept)
