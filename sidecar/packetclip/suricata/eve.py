"""Suricata eve JSON records → the packets and flow ends the sidecar needs.

Owns reading one eve line: which records carry a packet (`alert` records with `packet`, and the `packet` records
that `tagged-packets: yes` produces), which signal the end of a flow (`flow` records), and counting every line
that is neither — malformed lines by reason, other event types as ignored. It does not follow files or sockets
(`packetclip.suricata.follow`) or group packets into flows (`packetclip.suricata.flows`).

Timestamps: eve writes ``2026-11-27T02:09:05.055434+0000``; it is turned into epoch seconds as
``whole_seconds + microseconds * 1e-6``, the same float arithmetic the pcap reader uses, so a packet read from eve
and the same packet read from the capture carry bit-identical times.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

PACKET_EVENTS = ("alert", "packet")
FLOW_END_EVENTS = ("flow",)
_REQUIRED = ("flow_id", "timestamp", "src_ip", "dest_ip", "proto")


@dataclass(frozen=True)
class EvePacket:
    """One captured frame Suricata logged, with the flow Suricata put it in."""

    flow_id: int
    ts: float  # epoch seconds
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    proto: str  # as eve spells it: "TCP", "UDP", "ICMP", "IPv6-ICMP", ...
    link_type: int  # pcap data-link type of `frame` (eve `packet_info.linktype`)
    frame: bytes
    community_id: str  # "" when the eve output has community-id off


@dataclass(frozen=True)
class EveFlowEnd:
    """Suricata finished a flow (timeout, shutdown or end of a pcap): nothing more will come for it."""

    flow_id: int
    ts: float


@dataclass
class EveCounts:
    """What the parser saw; the sidecar's statistics report it."""

    lines: int = 0
    packets: int = 0
    flow_ends: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # event types the sidecar does not use
    malformed: Counter[str] = field(default_factory=Counter)  # reason -> lines skipped

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "packets": self.packets,
            "flow_ends": self.flow_ends,
            "ignored": dict(sorted(self.ignored.items())),
            "malformed": dict(sorted(self.malformed.items())),
        }


# 9999-12-31T00:00:00Z: a later time, or one before the epoch, is no packet's (and 9999-12-31 23:59 -2359 would be
# year 10000, which datetime cannot write back)
LAST_EPOCH = 253_402_214_400


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an eve timestamp (``YYYY-MM-DDTHH:MM:SS[.ffffff]+HHMM``); ValueError when it is not one."""
    if len(text) < 24 or text[10] != "T":
        raise ValueError(f"not an eve timestamp: {text!r}")
    zone_at = max(text.rfind("+"), text.rfind("-"))
    if zone_at < 19:
        raise ValueError(f"eve timestamp without zone: {text!r}")
    whole = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    zone = text[zone_at + 1 :].replace(":", "")
    if len(zone) != 4 or not zone.isdigit():
        raise ValueError(f"bad zone in eve timestamp: {text!r}")
    offset = (int(zone[:2]) * 3600 + int(zone[2:]) * 60) * (1 if text[zone_at] == "+" else -1)
    fraction = text[20:zone_at] if text[19] == "." else ""
    if fraction and not fraction.isdigit():
        raise ValueError(f"bad fraction in eve timestamp: {text!r}")
    micros = int(fraction.ljust(6, "0")[:6]) if fraction else 0
    epoch = (int(whole.timestamp()) - offset) + micros * 1e-6
    if not 0 <= epoch < LAST_EPOCH:  # a record must be writable again (`format_timestamp`), in UTC
        raise ValueError(f"eve timestamp out of range: {text!r}")
    return epoch


def format_timestamp(epoch: float) -> str:
    """An eve-style timestamp (UTC, microseconds) of epoch seconds."""
    whole = int(epoch // 1)
    micros = round((epoch - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    stamp = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{micros:06d}+0000"


class EveParser:
    """Turns eve lines into `EvePacket` / `EveFlowEnd`; everything else is counted and skipped (never raised)."""

    def __init__(self) -> None:
        self.counts = EveCounts()

    def parse(self, line: bytes | str) -> EvePacket | EveFlowEnd | None:
        self.counts.lines += 1
        if not line.strip():
            self._malformed("empty_line")
            return None
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self._malformed("not_json")
            return None
        except RecursionError:  # nested deeper than the decoder recurses: no eve record is
            self._malformed("too_deep")
            return None
        if not isinstance(record, dict):
            self._malformed("not_an_object")
            return None
        event_type = record.get("event_type")
        if not isinstance(event_type, str):
            self._malformed("no_event_type")
            return None
        if event_type in FLOW_END_EVENTS:
            return self._flow_end(record)
        if event_type not in PACKET_EVENTS or "packet" not in record:
            # alerts without `packet` come from eve outputs without `packet: yes`: not ours to use
            self.counts.ignored[
                event_type if event_type not in PACKET_EVENTS else f"{event_type}_without_packet"
            ] += 1
            return None
        return self._packet(record)

    def _malformed(self, reason: str) -> None:
        self.counts.malformed[reason] += 1
        # the counts as fields of a JSON log line: which reason, how many lines so far for it and in all
        log.debug(
            "eve line skipped: %s",
            reason,
            extra={
                "reason": reason,
                "count": self.counts.malformed[reason],
                "malformed_lines": self.counts.malformed.total(),
                "lines": self.counts.lines,
            },
        )

    def _flow_end(self, record: dict[str, object]) -> EveFlowEnd | None:
        flow_id = record.get("flow_id")
        if not isinstance(flow_id, int):
            self._malformed("flow_without_flow_id")
            return None
        try:
            ts = parse_timestamp(str(record.get("timestamp", "")))
        except ValueError:
            self._malformed("bad_timestamp")
            return None
        self.counts.flow_ends += 1
        return EveFlowEnd(flow_id, ts)

    def _packet(self, record: dict[str, object]) -> EvePacket | None:
        missing = [name for name in _REQUIRED if name not in record]
        if missing:
            self._malformed(f"missing_{missing[0]}")
            return None
        flow_id = record["flow_id"]
        if not isinstance(flow_id, int):
            self._malformed("bad_flow_id")
            return None
        try:
            ts = parse_timestamp(str(record["timestamp"]))
        except ValueError:
            self._malformed("bad_timestamp")
            return None
        try:
            frame = binascii.a2b_base64(str(record["packet"]), strict_mode=True)
        except (binascii.Error, ValueError):
            self._malformed("bad_base64_packet")
            return None
        info = record.get("packet_info")
        link_type = info.get("linktype") if isinstance(info, dict) else None
        if not isinstance(link_type, int):
            self._malformed("no_linktype")
            return None
        src_port, dest_port = record.get("src_port", 0), record.get("dest_port", 0)
        if not isinstance(src_port, int) or not isinstance(dest_port, int):
            self._malformed("bad_port")
            return None
        community = record.get("community_id", "")
        self.counts.packets += 1
        return EvePacket(
            flow_id=flow_id,
            ts=ts,
            src_ip=str(record["src_ip"]),
            src_port=src_port,
            dest_ip=str(record["dest_ip"]),
            dest_port=dest_port,
            proto=str(record["proto"]),
            link_type=link_type,
            frame=frame,
            community_id=community if isinstance(community, str) else "",
        )
