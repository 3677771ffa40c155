"""How the Suricata sidecar's verdicts on a capture compare with `packetclip classify` on the same capture.

Owns the comparison: a flow is the same flow when protocol, originator address and port, responder address and
port, and first-packet time (to the microsecond, the resolution both eve and pcap carry) are equal. For the flows
both sides classified it counts equal labels and equal attacks and the largest difference in `score`; flows only
one side has are listed by protocol. Where the two can differ, and why:

- flow boundaries: Suricata decides what a flow is (its timeouts, its handling of ICMP errors, which it attaches
  to the flow they answer), the featurizer decides for `classify` (Zeek-like);
- frames Suricata's decoder rejects (a frame cut by the capture's snaplen shorter than its IP length is
  ``ipv4.trunc_pkt``) never reach eve, so their flows are missing or shorter on the sidecar's side;
- originator context: the engine gives each connection the recent packets of its originator's *earlier*
  connections; both sides hand connections over in first-packet order (`packetclip.ordering`), so the histories
  match unless more connections waited for an earlier, still open one than the reorder bound allows.

`whole_frames_capture` writes the capture both sides can read alike: without the frames Suricata would reject.

It does not run either side.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packetclip.featurizer import read_frames

FlowKey = tuple[str, str, int, str, int, float]


def flow_key(proto: str, orig_h: str, orig_p: int, resp_h: str, resp_p: int, ts: float) -> FlowKey:
    proto = proto.lower()
    return ("icmp" if proto == "ipv6-icmp" else proto, orig_h, int(orig_p), resp_h, int(resp_p), round(ts, 6))


@dataclass
class Agreement:
    matched: int = 0
    same_label: int = 0
    same_attack: int = 0
    max_score_difference: float = 0.0
    only_classify: Counter[str] = field(default_factory=Counter)  # protocol -> flows
    only_sidecar: Counter[str] = field(default_factory=Counter)
    label_changes: Counter[str] = field(default_factory=Counter)  # "classify->sidecar" -> flows

    @property
    def label_agreement(self) -> float:
        return self.same_label / self.matched if self.matched else 0.0

    @property
    def attack_agreement(self) -> float:
        return self.same_attack / self.matched if self.matched else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "label_agreement": round(self.label_agreement, 4),
            "attack_agreement": round(self.attack_agreement, 4),
            "max_score_difference": round(self.max_score_difference, 6),
            "only_classify": dict(self.only_classify),
            "only_sidecar": dict(self.only_sidecar),
            "label_changes": dict(self.label_changes),
        }


def compare(
    classify_records: Iterable[dict[str, Any]], sidecar_records: Iterable[dict[str, Any]]
) -> Agreement:
    """`classify_records`: verdict records as `packetclip classify --format json` writes them;
    `sidecar_records`: the sidecar's eve-style records (`epoch` of their first packet under `ts`)."""
    reference = {
        flow_key(r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"], r["ts"]): r
        for r in classify_records
    }
    ours = {
        flow_key(r["proto"], r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["ts"]): r
        for r in sidecar_records
    }
    result = Agreement()
    for key in reference.keys() - ours.keys():
        result.only_classify[key[0]] += 1
    for key in ours.keys() - reference.keys():
        result.only_sidecar[key[0]] += 1
    for key in reference.keys() & ours.keys():
        theirs, mine = reference[key], ours[key]["packetclip"]
        result.matched += 1
        result.same_label += theirs["label"] == mine["label"]
        result.same_attack += theirs["attack"] == mine["attack"]
        if theirs["label"] != mine["label"]:
            result.label_changes[f"{theirs['label']}->{mine['label']}"] += 1
        result.max_score_difference = max(result.max_score_difference, abs(theirs["score"] - mine["score"]))
    return result


def whole_frames_capture(source: Path, target: Path) -> int:
    """Write Ethernet capture `source` to `target` (classic pcap) without the frames its snaplen cut short of their
    IP length: Suricata's decoder drops those (ipv4.trunc_pkt), the featurizer keeps them. Returns the frames
    left out."""
    dropped = 0
    with Path(target).open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, link_type, frame in read_frames(Path(source)):
            if link_type != 1:
                raise ValueError(f"{source}: link type {link_type}; only Ethernet captures are supported")
            if _ip_length(frame) > len(frame):
                dropped += 1
                continue
            seconds = int(ts)
            micros = round((ts - seconds) * 1e6)
            if micros == 1_000_000:
                seconds, micros = seconds + 1, 0
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return dropped


def _ip_length(frame: bytes) -> int:
    """Bytes the Ethernet frame's IP header says it carries, plus the Ethernet header (0 for non-IP)."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        return 14 + int.from_bytes(frame[16:18], "big")
    if ethertype == 0x86DD:
        return 14 + 40 + int.from_bytes(frame[18:20], "big")
    return 0
