"""A connection's verdict: the value the engine produces and every output path reads.

Owns `Verdict`, named after the verdict-record contract (docs/design.md), and `optional_fields`, the contract's
rule for the fields a JSON record carries only when they apply, which `packetclip.output` (packetclip.log's JSON
lines) and `packetclip.suricata.verdicts` (eve-style records) both follow. It imports nothing of the runtime, so
that writers and sidecars can name the type without importing the engine.

It does not compute verdicts (`packetclip.engine`), mark them allowed (`packetclip.allowlist`) or lay out records
(`packetclip.output`, `packetclip.suricata.verdicts`, the Zeek wire in `packetclip.zeek.service`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """One connection's verdict, as the verdict-record contract (docs/design.md) names its fields."""

    ts: float  # first packet, epoch seconds
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    community_id: str
    label: str  # coarse class
    attack: str  # fine class, always one of `label`'s fine classes
    score: float  # probability of `label`
    scores: dict[str, float]  # coarse class -> probability (sums to 1)
    fine_scores: dict[str, float]  # fine class -> probability
    explanation: str
    model: str  # bundle version
    concepts: list[tuple[str, str, float]] = field(default_factory=list)  # (mission, concept, activation)
    # user-written missions scored zero-shot (`packetclip.user_missions`): name -> probability; empty without any
    missions: dict[str, float] = field(default_factory=dict)
    # an allowlist entry matched (`packetclip.allowlist`): the verdict stands, but its traffic is expected
    allowed: bool = False
    allow_reason: str = ""  # the matching entry's reason; "" when not allowed


def optional_fields(verdict: Verdict) -> dict[str, Any]:
    """The JSON record fields a verdict has only when they apply, in record order: `allow_reason` when an
    allowlist entry matched (the reason also ends the explanation), then `missions` when user-written missions
    were scored (`--missions`). The values are copies: the record is the caller's to change."""
    fields: dict[str, Any] = {}
    if verdict.allowed:
        fields["allow_reason"] = verdict.allow_reason
    if verdict.missions:
        fields["missions"] = dict(verdict.missions)
    return fields
