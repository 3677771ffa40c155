"""Which messages written to Zeek are known to have arrived: the bookkeeping behind the sidecar's at-least-once
delivery of verdicts.

Zeek's WebSocket API acknowledges no message. A write that returned only means the bytes reached this host's
kernel (or the `websockets` buffer): a peer that stopped reading, or a connection reset, loses everything still in
the socket buffers on either side. The stream is ordered, though, and WebSocket control frames travel in it: a
pong proves that Zeek's endpoint has read every frame written before the ping it answers. `Unconfirmed` keeps
the messages written since the last such proof, asks for a ping once `every` messages wait for one (and when
the outbox runs dry: the service then pings after a short lull, so that a quiet connection confirms its last
messages soon), and on the pong lets go of the messages that ping followed. When the connection ends, `take_all` hands back the rest, in
order, for the service to send again on the next connection.

One ping is outstanding at a time: a pong then confirms exactly the messages counted when its ping left, and the
bookkeeping is a deque and two integers per connection. A pong from a connection that has ended is ignored (the
generation changed).

What "confirmed" does not cover: Zeek's own handling after its endpoint read a message (its event queue, a
cluster backend dropping events under overload). transport.zeek counts those on its side (pending state that expires).

It does not write to sockets or count metrics (`service`).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Unconfirmed(Generic[T]):
    """Messages written and not yet confirmed by a pong, oldest first (see the module docstring)."""

    def __init__(self, every: int):
        self.every = every  # messages written before a ping is asked for while the outbox still has more
        self._items: deque[T] = deque()
        self._covered = 0  # messages written before the outstanding ping; 0 while none is outstanding
        self._waiting = False
        self.generation = 0  # changes when the connection ends: a late pong must confirm nothing

    def __len__(self) -> int:
        return len(self._items)

    def written(self, item: T) -> None:
        self._items.append(item)

    def wants_ping(self, idle: bool) -> bool:
        """True when a ping should follow now: none is outstanding and messages wait for one (`every` of them,
        or any when the outbox is `idle`)."""
        return not self._waiting and bool(self._items) and (idle or len(self._items) >= self.every)

    def pinged(self) -> int:
        """A ping was written after every message held; returns the generation its pong must match."""
        self._waiting = True
        self._covered = len(self._items)
        return self.generation

    def ponged(self, generation: int) -> list[T]:
        """The messages the pong of a ping from `generation` confirms (none for an ended connection's)."""
        if generation != self.generation or not self._waiting:
            return []
        confirmed = [self._items.popleft() for _ in range(self._covered)]
        self._covered = 0
        self._waiting = False
        return confirmed

    def take_all(self) -> list[T]:
        """The connection ended: every message not confirmed, in the order written; starts a new generation."""
        items = list(self._items)
        self._items.clear()
        self._covered = 0
        self._waiting = False
        self.generation += 1
        return items
