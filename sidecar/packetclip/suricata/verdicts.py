"""Verdicts as eve-style JSON lines, for the pipelines that already ingest Suricata's eve.json.

Owns the record layout and where records go. One record per classified flow:

    {"timestamp": "2026-11-27T02:09:05.055434+0000",   first packet, UTC, as eve writes it
     "flow_id": 519565974414582,                        Suricata's, to join with its alert/flow/... records
     "event_type": "packetclip",
     "src_ip": ..., "src_port": ..., "dest_ip": ..., "dest_port": ...,   originator -> responder
     "proto": "TCP",                                     upper-case, as eve spells TCP/UDP/ICMP
     "community_id": "1:...",                            Suricata's when its eve has community-id on, else ours
     "packetclip": {"label", "attack", "score", "scores", "explanation", "model",   the verdict-record contract
                    "allowed",                           an allowlist entry matched (packetclip.allowlist)
                    "uid", "packets", "flush",           our uid, packets classified, why the flow was handed out
                    "allow_reason",                      the entry's reason, only when allowed
                    "missions"}}                         user-written missions' scores, only with `--missions`

Event-specific fields sit under an object named after the event type, as eve does for `alert`, `flow`, `dns`.
Destinations: a file (appended, one line per record, flushed per batch; reopened when `reopen()` is called, e.g.
after logrotate moved it) or a unix stream socket someone listens on (reconnected on failure; records that could
not be delivered are counted as dropped, never queued without bound). It does not compute verdicts
(`packetclip.engine`) or define them and their optional fields (`packetclip.verdict`).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, Protocol, TextIO

from packetclip.suricata.eve import format_timestamp
from packetclip.suricata.flows import FlowFrames
from packetclip.verdict import Verdict, optional_fields

log = logging.getLogger(__name__)

EVENT_TYPE = "packetclip"
_EVE_PROTO = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP"}


def eve_record(verdict: Verdict, flow: FlowFrames, packets: int) -> dict[str, Any]:
    """The eve-style record of one flow's verdict (layout in the module docstring)."""
    proto = _EVE_PROTO.get(verdict.proto, verdict.proto.upper())
    if proto == "ICMP" and ":" in verdict.orig_h:
        proto = "IPv6-ICMP"  # eve's name for ICMPv6
    record: dict[str, Any] = {
        "timestamp": format_timestamp(verdict.ts),
        "flow_id": flow.flow_id,
        "event_type": EVENT_TYPE,
        "src_ip": verdict.orig_h,
        "src_port": verdict.orig_p,
        "dest_ip": verdict.resp_h,
        "dest_port": verdict.resp_p,
        "proto": proto,
        "community_id": flow.community_id or verdict.community_id,
        EVENT_TYPE: {
            "label": verdict.label,
            "attack": verdict.attack,
            "score": verdict.score,
            "scores": dict(verdict.scores),
            "explanation": verdict.explanation,
            "model": verdict.model,
            "allowed": verdict.allowed,
            "uid": verdict.uid,
            "packets": packets,
            "flush": flow.reason,
        },
    }
    record[EVENT_TYPE].update(optional_fields(verdict))  # allow_reason, missions: only when they apply
    return record


class RecordSink(Protocol):
    written: int
    dropped: int

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)


class FileSink:
    """Appends records to a file (or writes them to an open stream such as stdout)."""

    def __init__(self, target: str | Path | TextIO) -> None:
        self.path = None if hasattr(target, "write") else Path(target)  # type: ignore[arg-type]
        self._stream: TextIO = target if self.path is None else self._open()  # type: ignore[assignment]
        self.written = 0
        self.dropped = 0

    def _open(self) -> TextIO:
        assert self.path is not None
        return open(self.path, "a", encoding="utf-8")

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self._stream.write(_lines(records))
        self._stream.flush()
        self.written += len(records)

    def reopen(self) -> None:
        if self.path is not None:
            self._stream.close()
            self._stream = self._open()

    def close(self) -> None:
        if self.path is not None:
            self._stream.close()


class SocketSink:
    """Sends records to a unix stream socket that another program listens on (as Suricata's unix_stream eve
    output does); a failed send closes the connection, counts the batch as dropped and retries next batch."""

    def __init__(self, path: str | Path, timeout: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout = timeout  # seconds a send may block before the batch is dropped
        self.written = 0
        self.dropped = 0
        self.connects = 0
        self._socket: socket.socket | None = None

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        payload = _lines(records).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._socket.settimeout(self.timeout)
                self._socket.connect(str(self.path))
                self.connects += 1
            self._socket.sendall(payload)
        except OSError as exc:
            self.close()
            self.dropped += len(records)
            log.warning("verdicts: %s: %s; %d records dropped", self.path, exc, len(records))
            return
        self.written += len(records)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
