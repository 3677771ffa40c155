"""Zeek's requests released to the engine in first-packet order, whatever order and moment they arrive in.

The reasoner's input for a connection includes its originator's earlier connections and the receiving host's
recent inbound connections (`packetclip.context`), built in the order the engine is handed connections; training
replays a capture in first-packet order. The Zeek scripts (`zeek_scripts/collection.zeek`) publish a connection at its
`max_packets`-th frame, at `connection_state_remove`, `max_wait` after its first packet (a network-time timer) or
at the end of a capture, so a flood's connection (30 frames in 10 ms) arrives before a slower one that started
earlier. Classifying in arrival order, or sorting each micro-batch alone, made a verdict depend on which
neighbours shared its batch: three identical live runs differed on 13 of 402 labels (issue 20).

`ReorderWindow` holds each node's requests and releases them sorted by first-packet time, decided without any
clock of the sidecar's:

- **Watermark.** Zeek's network time is never behind a frame it has handed over, so once a node has sent a frame
  of time W, every connection of that node whose first packet is at or before W - `max_wait` - `slack` has been
  published already (its `max_wait` timer fired, or it was sent earlier), and pub/sub keeps one publisher's
  messages in order. `slack` covers timers Zeek fires late (at most `max_timer_expires`, 300, per packet) and a
  first packet processed while network time was already ahead of its own timestamp.
- **Hold limit.** No request waits longer than `hold` seconds (wall clock) after it arrived: when the oldest
  waiting one reaches it, it leaves with every request that sorts before it. On a live sensor network time
  follows the wall clock, so with `hold` >= `max_wait` + `slack` an earlier connection has arrived by then too;
  it is also the idle timeout (a node that sends nothing more: a quiet network, the end of a capture).
- **End of input.** `drain` releases everything (the connection to Zeek ended, or the sidecar stops) and forgets
  the watermarks: a new Zeek run (another capture) starts its own.
- **Bounded memory.** Beyond `max_held` waiting requests the earliest of the node holding most leave anyway, still
  in order among themselves, and are counted as `forced`.

A request whose place has passed (it sorts before one already released: a clock jump, timers later than `slack`,
`max_wait` raised in Zeek above the sidecar's, requests Zeek publishes again after a sidecar restart) leaves at
once and is counted as `late`; the counts say when the order could not be kept. Equal first-packet times are
ordered by the rest of the key the caller gives (the sidecar uses the endpoints and the uid), never by arrival.

Added latency: in a steady stream of requests a connection leaves about `max_wait` + `slack` after its first
packet (network time); never more than `hold` after it arrived. `hold` = 0 releases every request as it arrives
(arrival order, no added latency).

It does not decode requests or run models (`packetclip.zeek.service`); `packetclip.ordering` is the same idea for
`classify` and the Suricata sidecar, which track connections themselves and know which are still open.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Key = tuple[float, Any, int]  # (first-packet time, tie-break, arrival number): unique, totally ordered

DEFAULT_MAX_HELD = 20_000  # requests; a request of 30 frames of 192 bytes is ~8 KB in memory: ~160 MB at most


@dataclass
class _Node(Generic[T]):
    """One Zeek node's waiting requests."""

    heap: list[tuple[Key, T]] = field(default_factory=list)
    arrivals: deque[tuple[float, Key]] = field(default_factory=deque)  # (arrived, key), in arrival order
    watermark: float = float("-inf")  # the newest frame time the node has sent
    released: Key | None = None  # the key of the last request released (keys leave in increasing order)


class ReorderWindow(Generic[T]):
    """Per node, requests in, the same requests out in first-packet order; see the module docstring."""

    def __init__(self, max_wait: float, slack: float, hold: float, max_held: int = DEFAULT_MAX_HELD) -> None:
        if max_held < 1:
            raise ValueError("max_held must be positive")
        if min(max_wait, slack, hold) < 0:
            raise ValueError("max_wait, slack and hold must not be negative")
        self.max_wait = max_wait
        self.slack = slack
        self.hold = hold
        self.max_held = max_held
        self.forced = 0  # left before the watermark or the hold limit let them, to stay within max_held
        self.late = 0  # arrived after a request that sorts after them had left
        self.held_peak = 0
        self._held = 0
        self._nodes: dict[str, _Node[T]] = {}
        self._arrival = itertools.count()

    def __len__(self) -> int:
        return self._held

    def add(self, node: str, first_ts: float, tie: Any, newest_ts: float, item: T, now: float) -> list[T]:
        """Take one request of `node` (its first packet at `first_ts`, its newest frame at `newest_ts`, `tie`
        ordering equal first-packet times) that arrived at `now`; returns the requests of the node that may
        leave, in order."""
        state = self._nodes.setdefault(node, _Node())
        key: Key = (first_ts, tie, next(self._arrival))
        state.watermark = max(state.watermark, newest_ts)
        if state.released is not None and key < state.released:
            self.late += 1
            return [item]
        heapq.heappush(state.heap, (key, item))
        state.arrivals.append((now, key))
        self._held += 1
        self.held_peak = max(self.held_peak, self._held)
        ready = self._release(state, self._bound(state, now))
        if self._held > self.max_held:
            ready += self._force()
        return ready

    def expire(self, now: float) -> list[T]:
        """Requests whose hold limit has passed at `now`, with every request that sorts before them."""
        ready: list[T] = []
        for state in self._nodes.values():
            if state.heap:
                ready += self._release(state, self._bound(state, now))
        return ready

    def drain(self) -> list[T]:
        """Everything waiting, each node's in order; the nodes' watermarks are forgotten (end of input)."""
        ready: list[T] = []
        for state in self._nodes.values():
            ready += [item for _, item in sorted(state.heap, key=lambda entry: entry[0])]
        self._nodes.clear()
        self._held = 0
        return ready

    # --- inside ---------------------------------------------------------------------------------------------

    def _bound(self, state: _Node[T], now: float) -> Key | None:
        """The largest key allowed to leave: the watermark's, or that of the latest-sorting request among those
        whose hold limit has passed, whichever is larger."""
        bound: Key | None = None
        limit = state.watermark - self.max_wait - self.slack
        if state.heap and state.heap[0][0][0] <= limit:
            bound = (limit, _Top(), 0)  # every key with that first-packet time or earlier
        self._drop_released(state)
        arrivals = state.arrivals
        while arrivals and arrivals[0][0] <= now - self.hold:
            _, key = arrivals.popleft()
            if bound is None or key > bound:
                bound = key
        return bound

    def _release(self, state: _Node[T], bound: Key | None) -> list[T]:
        ready: list[T] = []
        heap = state.heap
        while heap and bound is not None and not bound < heap[0][0]:
            key, item = heapq.heappop(heap)
            state.released = key
            ready.append(item)
        self._held -= len(ready)
        self._compact(state)
        return ready

    def _force(self) -> list[T]:
        ready: list[T] = []
        while self._held > self.max_held:
            state = max(self._nodes.values(), key=lambda node: len(node.heap))
            key, item = heapq.heappop(state.heap)
            state.released = key
            self._held -= 1
            self.forced += 1
            ready.append(item)
            self._compact(state)
        return ready

    @staticmethod
    def _drop_released(state: _Node[T]) -> None:
        """Arrival entries of requests that left already (every key up to `released`) are dropped from the front."""
        arrivals, released = state.arrivals, state.released
        while arrivals and released is not None and not released < arrivals[0][1]:
            arrivals.popleft()

    @staticmethod
    def _compact(state: _Node[T]) -> None:
        """Keep the arrival list within twice the waiting requests (left ones are otherwise dropped lazily)."""
        if len(state.arrivals) > 2 * len(state.heap) + 1024 and state.released is not None:
            released = state.released
            state.arrivals = deque(entry for entry in state.arrivals if released < entry[1])


class _Top:
    """Sorts after every tie-break value: (t, _Top(), 0) bounds every key whose first-packet time is t or less."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return not isinstance(other, _Top)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Top)

    def __hash__(self) -> int:
        return 0
