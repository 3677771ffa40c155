"""Connections handed to the engine in first-packet order, as training replays a capture.

The reasoner's input for a connection includes its originator's earlier connections (`packetclip.context`), and
training builds that history by replaying each dataset in first-packet order. A sensor finishes connections in
another order: a flood's connections end at their 30th packet while a slow connection that started earlier is
still open, and a sidecar reads Suricata's or Zeek's flows in the order the sensor logs them. Two runs over the
same traffic that finish connections in different orders would give some connections different histories, and
so different verdicts.

`FirstPacketOrder` restores the order: finished connections wait here until no connection that started earlier
is still open (the caller says when that is: the first-packet time of its oldest open connection), then leave
sorted by first-packet time. Memory is bounded: beyond `max_held` waiting connections the earliest leave anyway,
still in order among themselves, and are counted as `forced` (a SYN flood's half-open connections stay open until
their inactivity timeout; nothing would leave for minutes otherwise).

Connections whose first packets have the same time (captures with millisecond timestamps, floods) are ordered by
`endpoint_tie`: originator, responder, protocol, uid. `classify` (here), the Zeek sidecar's reorder window (on
the endpoints Zeek sends) and the Suricata sidecar (on each flow's first packet, without Suricata's per-run
flow_id) use it, so a tie is broken alike whichever order the sensor finished or published the connections in; a
waiting connection leaves only once every open connection started strictly later, since an open one with the same
time may sort before it.

`OpenStarts` is the other half: the first-packet time of the oldest connection a tracker still holds, for the
tracker (`packetclip.featurizer.conntrack`) and the Suricata flow assembler alike.

It does not track connections or run models.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_HELD = 20_000  # connections; at most ~4 KB of packet bytes each, so ~80 MB in the worst case


def endpoint_tie(orig_h: str, orig_p: int, resp_h: str, resp_p: int, proto: str, uid: str) -> tuple[Any, ...]:
    """The order of connections whose first packets have the same time: originator (address family, address,
    port), responder, protocol ("tcp", "udp", "icmp": Zeek's port protocols), then uid."""
    orig, resp = ipaddress.ip_address(orig_h), ipaddress.ip_address(resp_h)
    return (orig.version, orig.packed, orig_p, resp.version, resp.packed, resp_p, proto, uid)


class FirstPacketOrder(Generic[T]):
    """Finished connections in, the same connections out in first-packet order; see the module docstring."""

    def __init__(
        self,
        first_ts: Callable[[T], float],
        max_held: int = DEFAULT_MAX_HELD,
        tie: Callable[[T], tuple[Any, ...]] | None = None,
    ) -> None:
        if max_held < 1:
            raise ValueError("max_held must be positive")
        self.first_ts = first_ts
        self.tie = tie  # orders equal first-packet times (`endpoint_tie`); None: arrival order
        self.max_held = max_held
        self.forced = 0  # left before every earlier connection was finished, to stay within max_held
        self.held_peak = 0
        self._heap: list[tuple[float, tuple[Any, ...], int, T]] = []
        self._tiebreak = itertools.count()  # equal times and ties leave in arrival order

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, items: Iterable[T]) -> None:
        heap = self._heap
        tie = self.tie
        for item in items:
            heapq.heappush(heap, (self.first_ts(item), tie(item) if tie else (), next(self._tiebreak), item))
        self.held_peak = max(self.held_peak, len(heap))

    def pop_ready(self, open_since: float) -> list[T]:
        """The waiting connections that started before `open_since` (the first-packet time of the oldest
        connection still open; +inf when none is), plus the earliest beyond `max_held`, in first-packet order.
        With a tie order, one that started at `open_since` waits too: the open connection may sort before it."""
        heap = self._heap
        ready: list[T] = []
        strict = self.tie is not None and open_since != float("inf")
        while heap and (
            heap[0][0] < open_since or (heap[0][0] == open_since and not strict) or len(heap) > self.max_held
        ):
            if heap[0][0] > open_since or (strict and heap[0][0] == open_since):
                self.forced += 1
            ready.append(heapq.heappop(heap)[3])
        return ready

    def drain(self) -> list[T]:
        """Everything still waiting (end of input), in first-packet order."""
        return self.pop_ready(float("inf"))


class OpenStarts(Generic[T]):
    """First-packet times of open connections; `oldest()` is the earliest of those not `done` yet.

    Ended connections are dropped lazily when they reach the top; `add` compacts the heap when ended ones
    outnumber the open ones (`open_count`), so memory follows the open connections."""

    def __init__(self, done: Callable[[T], bool]) -> None:
        self.done = done
        self._heap: list[tuple[float, int, T]] = []
        self._tiebreak = itertools.count()

    def add(self, ts: float, item: T, open_count: int) -> None:
        heap = self._heap
        heapq.heappush(heap, (ts, next(self._tiebreak), item))
        if len(heap) > 2 * open_count + 1024:
            heap[:] = [entry for entry in heap if not self.done(entry[2])]
            heapq.heapify(heap)

    def oldest(self) -> float:
        """The earliest first-packet time still open, +inf when none is."""
        heap = self._heap
        while heap and self.done(heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else float("inf")

    def clear(self) -> None:
        self._heap.clear()
