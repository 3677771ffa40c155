"""Python stand-ins for the parts of the packetclip Zeek scripts the sidecar's ordering and replay rely on, driven
through the Zeek-faithful peer (`peer.py`).

`publication_schedule` is collection.zeek's rule for *when* a connection is published: at its `max_packets`-th frame,
at `connection_state_remove`, or by the `max_wait` timer `max_wait` after its first packet, whichever comes first;
frames after `max_wait` are never collected. Which frames a request carries comes from the peer's emulation
(`requests_from_capture`: the featurizer's tracker with `ScriptOptions.max_wait` as its window, so the frames are
already those collected before the timer); the stand-in gives each request a publication time (network time) the
rule allows (its `max_packets`-th frame when it has them, else any moment between its last frame and its timer:
the connection may end, or not, before the timer) and returns the requests in publication order. Different seeds
give different publication orders of the same requests, each one a real Zeek could produce.

`OfflineZeek` is offline.zeek with transport.zeek's pending bookkeeping, for `zeek -r` with a sidecar attached:

- the capture is held until the first `PacketCLIP::hello`; no hello within `hello_timeout` is an error;
- every published request is pending (kept whole, as `held_requests`) until its verdict arrives;
- a sidecar that says hello again gets every pending request published again (`requests_resent`; in an order of
  its own, as iterating a Zeek table gives), and its uid is remembered (`resent_uids`);
- a verdict for a pending request becomes a log row and the request leaves pending; a verdict for no pending
  request is a duplicate when its uid was published again, else unmatched; neither is logged;
- `PacketCLIP::mission_scores` for a pending request keeps its user-written missions' scores, as log.zeek writes
  them into the row's `missions` column (`name=score`, six decimals); without it the column is unset (None);
- `PacketCLIP::allowed` for a pending request marks it allowed; at its verdict (not an `error`) the `allow_*`
  options (`allow_orig_nets`, `allow_resp_nets`, `allow_nets`, `allow_resp_ports`, checked in that order) allow
  it too and name themselves at the end of the explanation; an allowed row has `allowed` set and raises no
  notice, neither its own nor its missions';
- `notices` holds the scripts' NOTICE calls as (note, source address, uid): the verdict's class notice when its
  score reaches `notice_thresholds`, a `UserMission` per mission score reaching `mission_thresholds`
  (the Notice framework's suppression, which acts after the call, is not played);
- after the capture, the drain waits until nothing is pending; when no verdict (or re-send) has come for
  `drain_timeout` (wall clock), every request left becomes an `error` row saying it was lost (`requests_lost`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.zeek_peer.peer import ScriptOptions, ScriptRequest, ZeekPeer, requests_from_capture

HELLO = "PacketCLIP::hello"
VERDICT = "PacketCLIP::verdict"
MISSION_SCORES = "PacketCLIP::mission_scores"
ALLOWED = "PacketCLIP::allowed"
NOTICE_TYPES = {
    "dos": "PacketCLIP::DoS",
    "recon": "PacketCLIP::Recon",
    "bruteforce": "PacketCLIP::BruteForce",
}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Published:
    """A request with the network time the scripts publish it at."""

    at: float
    request: ScriptRequest


def publication_schedule(path: Path, seed: int, options: ScriptOptions | None = None) -> list[Published]:
    """The capture's requests in an order collection.zeek could publish them in (see the module docstring)."""
    options = options or ScriptOptions()
    rng = random.Random(seed)
    scheduled = []
    for arrival, request in enumerate(requests_from_capture(path, options)):
        ts = request.event.args[7]
        # flushed by its max_packets-th frame; else at connection_state_remove or by the max_wait timer
        last = max(ts)
        at = last if len(ts) >= options.max_packets else rng.uniform(last, ts[0] + options.max_wait)
        scheduled.append((at, rng.random(), arrival, request))
    return [Published(at, request) for at, _, _, request in sorted(scheduled, key=lambda s: s[:3])]


def interleave(schedules: list[list[Published]], seed: int) -> list[ScriptRequest]:
    """Several nodes' schedules merged at random, each node's own order kept (nodes have separate clocks)."""
    rng = random.Random(seed)
    positions = [0] * len(schedules)
    merged: list[ScriptRequest] = []
    while any(p < len(s) for p, s in zip(positions, schedules, strict=True)):
        node = rng.choice([i for i, s in enumerate(schedules) if positions[i] < len(s)])
        merged.append(schedules[node][positions[node]].request)
        positions[node] += 1
    return merged


@dataclass
class Row:
    """One row of packetclip.log."""

    uid: str
    label: str
    attack: str
    score: float
    explanation: str
    model: str
    missions: list[str] | None = None  # `name=score` entries; None: unset
    allowed: bool = False


@dataclass
class OfflineZeek:
    """offline.zeek and transport.zeek's pending bookkeeping on top of a peer (see the module docstring)."""

    peer: ZeekPeer
    hello_timeout: float = 60.0
    drain_timeout: float = 30.0
    seed: int = 0
    pending: dict[str, ScriptRequest] = field(default_factory=dict)
    resent_uids: set[str] = field(default_factory=set)
    missions: dict[str, list[str]] = field(default_factory=dict)  # pending uid -> its `missions` column
    allowed_uids: set[str] = field(default_factory=set)  # pending requests PacketCLIP::allowed arrived for
    # the scripts' options, as their defaults are
    notice_thresholds: dict[str, float] = field(
        default_factory=lambda: {"dos": 0.8, "recon": 0.8, "bruteforce": 0.8}
    )
    mission_thresholds: dict[str, float] = field(default_factory=dict)
    allow_orig_nets: set[Network] = field(default_factory=set)
    allow_resp_nets: set[Network] = field(default_factory=set)
    allow_nets: set[Network] = field(default_factory=set)
    allow_resp_ports: set[tuple[int, str]] = field(default_factory=set)  # (port, "tcp" | "udp" | "icmp")
    rows: list[Row] = field(default_factory=list)
    notices: list[tuple[str, str, str]] = field(default_factory=list)  # (note, source address, uid)
    hellos: int = 0
    requests_published: int = 0
    requests_resent: int = 0
    verdicts_duplicate: int = 0
    verdicts_unmatched: int = 0
    requests_lost: int = 0
    last_progress: float = 0.0
    _seen: int = 0
    _handler: asyncio.Task[None] | None = None
    _rng: random.Random = field(default_factory=random.Random)

    async def __aenter__(self) -> OfflineZeek:
        self._rng.seed(self.seed)
        self._handler = asyncio.create_task(self._handle_events())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._handler is not None
        self._handler.cancel()
        await asyncio.gather(self._handler, return_exceptions=True)

    async def wait_for_hello(self) -> None:
        """zeek_init: the capture waits for the sidecar's first hello (hello_timeout, else an error)."""
        deadline = time.monotonic() + self.hello_timeout
        while self.hellos == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no sidecar said hello within {self.hello_timeout} s")
            await asyncio.sleep(0.01)

    async def publish(self, request: ScriptRequest) -> None:
        """collection.zeek's flush: pending (kept whole while reading a capture), then published."""
        self.pending[request.uid] = request
        await self.peer.publish(request.topic, request.event)
        self.requests_published += 1

    async def settle(self) -> None:
        """Wait until every event the peer has received is handled."""
        while self._seen < len(self.peer.received):
            await asyncio.sleep(0.005)

    async def drain(self) -> None:
        """Pcap::file_done: wait until nothing is pending; give up what is left after drain_timeout without
        progress."""
        self.last_progress = time.monotonic()
        while self.pending:
            if time.monotonic() - self.last_progress >= self.drain_timeout:
                for uid in list(self.pending):
                    self._give_up(uid, f"lost: no verdict within {self.drain_timeout} s of the last answer")
                return
            await asyncio.sleep(0.01)

    # --- events from the sidecar --------------------------------------------------------------------------------

    async def _handle_events(self) -> None:
        while True:
            # polled: cancelling a task parked in the peer's Condition could hang the exit (Python 3.11)
            await asyncio.sleep(0.005)
            while self._seen < len(self.peer.received):
                event = self.peer.received[self._seen].event
                self._seen += 1
                if event.name == HELLO:
                    await self._hello()
                elif event.name == VERDICT:
                    self._verdict(*event.args)
                elif event.name == MISSION_SCORES:
                    self._mission_scores(*event.args)
                elif event.name == ALLOWED:
                    self._allowed(*event.args)

    async def _hello(self) -> None:
        """`hellos` counts the hellos handled (after the re-sends they caused)."""
        if self.hellos == 0:
            self.hellos = 1
            return  # continue_processing(): the capture starts
        waiting = list(self.pending.values())
        self._rng.shuffle(waiting)  # a Zeek table iterates in an order of its own
        for request in waiting:
            await self.peer.publish(request.topic, request.event)
            self.resent_uids.add(request.uid)
        self.requests_resent += len(waiting)
        if waiting:
            self.last_progress = time.monotonic()
        self.hellos += 1

    def _verdict(self, uid: str, label: str, attack: str, score: float, explanation: str, model: str) -> None:
        self.last_progress = time.monotonic()
        if uid not in self.pending:
            if uid in self.resent_uids:
                self.verdicts_duplicate += 1
            else:
                self.verdicts_unmatched += 1
            return
        request = self.pending.pop(uid)
        allowed = uid in self.allowed_uids
        self.allowed_uids.discard(uid)
        by = self.allowing_option(request) if not allowed and label != "error" else ""
        if by:
            allowed, explanation = True, f"{explanation} Allowed: {by}."
        missions = self.missions.pop(uid, None)
        self.rows.append(Row(uid, label, attack, score, explanation, model, missions, allowed))
        threshold = self.notice_thresholds.get(label)
        if not allowed and label in NOTICE_TYPES and threshold is not None and score >= threshold:
            self.notices.append((NOTICE_TYPES[label], str(request.event.args[2]), uid))

    def _mission_scores(self, uid: str, missions: list[str], scores: list[float]) -> None:
        if uid not in self.pending or len(missions) != len(scores):
            return
        self.missions[uid] = [f"{name}={score:.6f}" for name, score in zip(missions, scores, strict=True)]
        if uid in self.allowed_uids or self.allowing_option(self.pending[uid]):
            return
        for name, score in zip(missions, scores, strict=True):
            if name in self.mission_thresholds and score >= self.mission_thresholds[name]:
                self.notices.append(("PacketCLIP::UserMission", str(self.pending[uid].event.args[2]), uid))

    def _allowed(self, uid: str, reason: str) -> None:
        if uid in self.pending:
            self.allowed_uids.add(uid)

    def allowing_option(self, request: ScriptRequest) -> str:
        """notices.zeek's `allowing_option`: the allow_* option that allows the request's connection, or ""."""
        orig_h, resp_h, resp_p = request.event.args[2], request.event.args[4], request.event.args[5]
        if any(orig_h in net for net in self.allow_orig_nets):
            return "PacketCLIP::allow_orig_nets"
        if any(resp_h in net for net in self.allow_resp_nets):
            return "PacketCLIP::allow_resp_nets"
        if any(orig_h in net or resp_h in net for net in self.allow_nets):
            return "PacketCLIP::allow_nets"
        if (resp_p.number, resp_p.protocol) in self.allow_resp_ports:
            return "PacketCLIP::allow_resp_ports"
        return ""

    def _give_up(self, uid: str, reason: str) -> None:
        del self.pending[uid]
        self.allowed_uids.discard(uid)
        self.rows.append(Row(uid, "error", "error", 0.0, reason, "", self.missions.pop(uid, None)))
        self.requests_lost += 1
