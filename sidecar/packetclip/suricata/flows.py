"""Suricata's packets grouped into flows by `flow_id`, handed out when a flow has enough of them.

Owns when a flow is ready for the engine: at `max_packets` packets, when Suricata ends the flow (an eve `flow`
record), `max_wait` seconds after its first packet, or when too many flows are open (the oldest goes first). The
wait is measured in packet time while records keep arriving (a capture replayed by `suricata -r` runs far faster
than its clock) and in wall time once the stream is idle (a live sensor whose last packet for a scan's half-open
connection was the SYN). A flow is handed out once: packets that arrive for it later (beyond `max_packets`, or
after `max_wait`) are counted as `late_packets` and dropped, which is what `packetclip classify` does with the
packets of a connection it has released at `max_packets`.

The same packet can reach eve twice (an `alert` record per matching signature, plus the tagged-packet record);
duplicates — same flow, same timestamp, same bytes — are counted and dropped.
Suricata writes eve from several threads, so a flow's packets can also arrive slightly out of time order; a flow
is handed out with its packets sorted by time (counted as `reordered_flows`). `oldest_open_ts` tells the sidecar
which ready flows may go to the engine without overtaking an earlier flow (`packetclip.ordering`).

It does not parse eve (`packetclip.suricata.eve`) or featurize frames (`packetclip.featurizer`).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from packetclip.ordering import OpenStarts
from packetclip.suricata.eve import EvePacket

log = logging.getLogger(__name__)

FLUSH_REASONS = ("max_packets", "flow_end", "max_wait", "evicted", "shutdown")


@dataclass
class FlowFrames:
    """One flow's frames in arrival order, and what Suricata said about the flow."""

    flow_id: int
    link_type: int
    first: EvePacket  # its addresses and ports fix the originator side until the featurizer decides
    ts: list[float] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    first_seen_wall: float = 0.0  # monotonic clock when the sidecar read its first packet
    reason: str = ""  # why it was handed out, one of FLUSH_REASONS
    sources: list[tuple[str, int]] = field(
        default_factory=list, repr=False
    )  # each frame's (src_ip, src_port)
    _seen: set[tuple[float, bytes]] = field(default_factory=set, repr=False)  # (ts, frame) already taken

    @property
    def community_id(self) -> str:
        return self.first.community_id

    def is_orig(self) -> list[bool]:
        """Each frame's direction relative to the first packet's source address and port."""
        first_source = (self.first.src_ip, self.first.src_port)
        return [source == first_source for source in self.sources]


@dataclass
class FlowCounts:
    flows: int = 0
    flushed: Counter[str] = field(default_factory=Counter)  # reason -> flows
    duplicate_packets: int = 0
    late_packets: int = 0  # packets of flows already handed out
    other_link_type: int = 0  # a frame whose link type differs from its flow's first frame (skipped)
    flow_ends_unknown: int = 0  # flow records of flows with no packet here (e.g. sampling started later)
    reordered_flows: int = 0  # flows whose packets arrived out of time order (put back in order)

    def as_dict(self) -> dict[str, object]:
        return {
            "flows": self.flows,
            "flushed": dict(sorted(self.flushed.items())),
            "duplicate_packets": self.duplicate_packets,
            "late_packets": self.late_packets,
            "other_link_type": self.other_link_type,
            "flow_ends_unknown": self.flow_ends_unknown,
            "reordered_flows": self.reordered_flows,
        }


def _handed_out(flow: FlowFrames) -> bool:
    return bool(flow.reason)


class FlowAssembler:
    """Packets in, ready flows out; see the module docstring."""

    def __init__(
        self,
        max_packets: int = 30,
        max_wait: float = 2.0,
        max_open_flows: int = 100_000,
        remember_done: int = 200_000,
    ) -> None:
        if max_packets < 1 or max_wait <= 0:
            raise ValueError("max_packets and max_wait must be positive")
        self.max_packets = max_packets  # the bundle's featurizer reads this many packets per connection
        self.max_wait = max_wait  # seconds after a flow's first packet before it is classified incomplete
        self.max_open_flows = max_open_flows  # bounds memory under a flood of one-packet flows
        self.remember_done = remember_done  # handed-out flow ids kept to recognise their late packets
        self.counts = FlowCounts()
        self.packet_clock = 0.0  # newest packet time seen
        self._open: OrderedDict[int, FlowFrames] = OrderedDict()  # by first packet arrival
        self._starts: OpenStarts[FlowFrames] = OpenStarts(_handed_out)
        self._done: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, packet: EvePacket, wall_now: float) -> list[FlowFrames]:
        """Take one packet; returns the flows it completed (its own at `max_packets`, evicted ones)."""
        self.packet_clock = max(self.packet_clock, packet.ts)
        if packet.flow_id in self._done:
            self.counts.late_packets += 1
            return []
        flow = self._open.get(packet.flow_id)
        ready: list[FlowFrames] = []
        if flow is None:
            flow = FlowFrames(packet.flow_id, packet.link_type, packet, first_seen_wall=wall_now)
            self._open[packet.flow_id] = flow
            self.counts.flows += 1
            self._starts.add(packet.ts, flow, len(self._open))
            if len(self._open) > self.max_open_flows:
                ready.append(self._hand_out(next(iter(self._open)), "evicted"))
        if packet.link_type != flow.link_type:
            self.counts.other_link_type += 1
            return ready
        key = (packet.ts, packet.frame)
        if key in flow._seen:
            self.counts.duplicate_packets += 1
            return ready
        flow._seen.add(key)
        flow.ts.append(packet.ts)
        flow.frames.append(packet.frame)
        flow.sources.append((packet.src_ip, packet.src_port))
        if len(flow.frames) >= self.max_packets:
            ready.append(self._hand_out(packet.flow_id, "max_packets"))
        return ready

    def oldest_open_ts(self) -> float:
        """First-packet time of the oldest flow not handed out yet (+inf when none is open)."""
        return self._starts.oldest()

    def end(self, flow_id: int) -> FlowFrames | None:
        """Suricata ended the flow: hand it out now (None when it was never seen or already handed out)."""
        if flow_id in self._open:
            flow = self._hand_out(flow_id, "flow_end")
            self._done.pop(flow_id, None)  # Suricata will not reuse it while it is still flowing
            return flow
        if self._done.pop(flow_id, "absent") == "absent":
            self.counts.flow_ends_unknown += 1
        return None

    def expire(self, wall_now: float, idle: bool) -> list[FlowFrames]:
        """Flows older than `max_wait`: in packet time, or also in wall time when the stream is `idle`."""
        ready = []
        for flow_id, flow in list(self._open.items()):
            waited = self.packet_clock - flow.ts[0] if flow.ts else 0.0
            if idle:
                waited = max(waited, wall_now - flow.first_seen_wall)
            if waited >= self.max_wait:
                ready.append(self._hand_out(flow_id, "max_wait"))
        return ready

    def flush(self) -> list[FlowFrames]:
        """Every open flow (the sidecar is stopping)."""
        return [self._hand_out(flow_id, "shutdown") for flow_id in list(self._open)]

    def _hand_out(self, flow_id: int, reason: str) -> FlowFrames:
        flow = self._open.pop(flow_id)
        flow.reason = reason
        if any(later < earlier for earlier, later in zip(flow.ts, flow.ts[1:], strict=False)):
            # eve is written by several threads: a flow's packets can arrive slightly out of order
            order = sorted(range(len(flow.ts)), key=flow.ts.__getitem__)
            flow.ts = [flow.ts[i] for i in order]
            flow.frames = [flow.frames[i] for i in order]
            flow.sources = [flow.sources[i] for i in order]
            self.counts.reordered_flows += 1
        flow._seen.clear()
        self.counts.flushed[reason] += 1
        self._done[flow_id] = None
        while len(self._done) > self.remember_done:
            self._done.popitem(last=False)
        return flow
