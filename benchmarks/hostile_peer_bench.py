"""Delivery accounting of `packetclip serve` against a hostile Zeek-faithful peer: JSON on stdout.

Each scenario starts a fresh peer (`tests/zeek_peer/peer.py`) and sidecar in this process, publishes `--requests`
requests built from the lab capture (one uid each), waits until the sidecar has read them all, then:

- burst: nothing more; every verdict must arrive and be confirmed;
- stall: the peer stops reading its socket for `--stall` seconds (pings included) while the sidecar answers, then
  resets the connection with everything unread; the sidecar reconnects and sends what was unconfirmed again;
- abort: the connection is reset (RST) while verdicts flow, after about half have been written;
- stall_then_stop: the peer stops reading and the sidecar is stopped: what it could not get confirmed within its
  drain timeout (serve's default, 5 s) is counted lost, and `stop_seconds` is how long the stop took.

Per scenario: `sent` requests published, `read` by the sidecar, `answered` (distinct uids with a verdict at the
peer), `duplicates` (verdicts received beyond one per uid), the sidecar's `verdicts_sent` (first writes),
`confirmed`, `resent`, `lost_counted` (its `verdicts_lost_total`), `lost` (sent - answered: what really never
arrived) and `lost_uncounted` = lost - lost_counted, which must be 0; `lost_overcounted` is the opposite
(counted lost, arrived after all). The closing line sums `lost_uncounted`.

Run from the repository root, as a module: it imports the Zeek peer test double from `tests.zeek_peer`.

    python -m benchmarks.hostile_peer_bench [--model DIR] [--requests 2000] [--stall 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from packetclip.engine import Engine
from packetclip.pipeline import resolve_model
from packetclip.zeek.codec import Event
from packetclip.zeek.service import VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.zeek_peer.peer import ZeekPeer, requests_from_capture

REPO = Path(__file__).resolve().parents[1]

LAB_CAPTURE = REPO / "samples" / "lab-quick" / "capture.pcap"
SCRIPT_TOPICS = ["packetclip/verdict/", "packetclip/control/"]
WAIT = 120.0  # seconds any one condition may take before the scenario reports what it has


def requests(count: int) -> list[tuple[str, str, Event]]:
    """(topic, uid, event): the lab capture's requests, repeated with a fresh uid each."""
    base = list(requests_from_capture(LAB_CAPTURE))
    out = []
    for index in range(count):
        request = base[index % len(base)]
        uid = f"C{index:017d}"
        args = list(request.event.args)
        args[1] = uid
        out.append((request.topic, uid, Event(request.event.name, args)))
    return out


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def scenario(
    engine: Engine, count: int, hostile: Callable[[ZeekPeer, Sidecar], Awaitable[None]], stop_early: bool
) -> dict[str, Any]:
    work = requests(count)
    uids = {uid for _, uid, _ in work}
    started = time.monotonic()
    async with ZeekPeer() as peer:
        peer.script_subscriptions = list(SCRIPT_TOPICS)
        # a scenario that stops the sidecar keeps serve's own drain timeout: its stop is timed against the unit's
        # TimeoutStopSec (rules/systemd/packetclip-serve.service); the others need not wait so long to end
        quick = {} if stop_early else {"drain_timeout": 1.0}
        settings = ServeSettings(
            zeek=peer.url, order_hold=0.0, reconnect_initial=0.05, reconnect_max=0.2, **quick
        )
        sidecar = Sidecar(settings, engine)
        stop = asyncio.Event()
        task = asyncio.create_task(sidecar.run(stop))
        await until(lambda: bool(peer.events("PacketCLIP::hello")))
        for topic, _, event in work:
            await peer.publish(topic, event)
        await until(lambda: sidecar.metrics.requests == count)
        await hostile(peer, sidecar)
        if not stop_early:
            await until(lambda: uids <= {r.event.args[0] for r in peer.events(VERDICT_EVENT)})
            await until(lambda: sidecar.metrics.verdicts_confirmed == sidecar.metrics.verdicts.total())
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(task, 60)
        stop_seconds = time.monotonic() - stopping
        received = Counter(r.event.args[0] for r in peer.events(VERDICT_EVENT))
    metrics = sidecar.metrics
    answered = len(uids & set(received))
    lost = count - answered
    lost_counted = metrics.verdicts_lost.total()
    return {
        "sent": count,
        "read": metrics.requests,
        "answered": answered,
        "duplicates": sum(received.values()) - answered,
        "verdicts_sent": metrics.verdicts.total(),
        "confirmed": metrics.verdicts_confirmed,
        "resent": metrics.verdicts_resent,
        "lost_counted": lost_counted,
        "lost_reasons": dict(metrics.verdicts_lost),
        "reconnects": metrics.reconnects,
        "lost": lost,
        "lost_uncounted": max(0, lost - lost_counted),
        "lost_overcounted": max(0, lost_counted - lost),
        "seconds": round(time.monotonic() - started, 2),
        "stop_seconds": round(stop_seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="bundle (default: the store's active one, else embedded)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--stall", type=float, default=5.0, help="seconds the stalled peer reads nothing")
    args = parser.parse_args(argv)
    engine = Engine(resolve_model(args.model))

    async def nothing(peer: ZeekPeer, sidecar: Sidecar) -> None:
        return None

    async def stall(peer: ZeekPeer, sidecar: Sidecar) -> None:
        peer.pause_reading()
        await asyncio.sleep(args.stall)
        peer.abort_clients()

    async def abort(peer: ZeekPeer, sidecar: Sidecar) -> None:
        await until(lambda: sidecar.metrics.verdicts.total() >= args.requests // 2)
        peer.abort_clients()

    async def stall_then_stop(peer: ZeekPeer, sidecar: Sidecar) -> None:
        peer.pause_reading()
        await until(lambda: sidecar.metrics.verdicts.total() == args.requests, timeout=10)

    plays = {
        "burst": (nothing, False),
        "stall": (stall, False),
        "abort": (abort, False),
        "stall_then_stop": (stall_then_stop, True),
    }
    report: dict[str, Any] = {"requests": args.requests, "stall_seconds": args.stall}
    for name, (hostile, stop_early) in plays.items():
        report[name] = asyncio.run(scenario(engine, args.requests, hostile, stop_early))
    report["lost_uncounted"] = sum(report[name]["lost_uncounted"] for name in plays)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
