"""Benchmark of the live Zeek path: the Zeek-faithful peer (its own process) publishes `PacketCLIP::request`
events built from real captures as the Zeek scripts build them, and `packetclip serve`'s loop (this process)
answers them. JSON on stdout.

Three runs:
- capacity: every request published at once into a queue large enough to hold them: connections/s (wall) and
  per sidecar CPU-second (this process' CPU time, inference thread included);
- paced: a steady rate below capacity (`--rate`, default 50 % of the measured capacity): p50/p99/max
  request-to-verdict latency measured by the peer (publish -> verdict handled), and lost = published - answered
  (must be 0);
- overload: a rate well above capacity against a small queue: drops are counted (answered "error" at once) and
  the sidecar's peak RSS stays bounded.

Run from the repository root, as a module: it imports the Zeek peer test double from `tests.zeek_peer`.

    python -m benchmarks.serve_bench --model DIR [--seconds 3] [--rate N] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

from packetclip.engine import Engine
from packetclip.pipeline import resolve_model
from packetclip.zeek.client import event_text
from packetclip.zeek.service import VERDICT_EVENT, Sidecar
from packetclip.zeek.settings import ServeSettings
from tests.zeek_peer.peer import ZeekPeer, requests_from_capture

REPO = Path(__file__).resolve().parents[1]

CAPTURES = (
    REPO / "samples" / "lab-quick" / "capture.pcap",
    REPO.parent / "shared" / "data" / "real" / "nDPI/tests/cfgs/default/pcap/synscan.pcap",
)
UID_MARK = "Cuid0000000000000"  # 18 characters, like a Zeek uid; replaced per published request


def templates() -> list[tuple[str, bytes]]:
    """(topic, message bytes with a uid placeholder) per connection of the benchmark captures."""
    out = []
    for capture in CAPTURES:
        if not capture.is_file():
            continue
        for request in requests_from_capture(capture):
            args = list(request.event.args)
            args[0], args[1] = "bench", UID_MARK
            event = type(request.event)(request.event.name, args)
            out.append((request.topic, event_text(request.topic, event).encode()))
    return out


def peer_process(port: int, scenario: dict[str, Any], results: Any) -> None:
    asyncio.run(_peer_main(port, scenario, results))


async def _peer_main(port: int, scenario: dict[str, Any], results: Any) -> None:
    base = templates()
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    labels: dict[str, str] = {}
    async with ZeekPeer(port=port) as peer:
        peer.script_subscriptions = ["packetclip/verdict/", "packetclip/control/"]
        original = peer.publish

        async def publish(topic: str, event: Any, origin: Any = None) -> int:
            if origin is not None and event.name == VERDICT_EVENT:
                answered[event.args[0]] = time.monotonic()
                labels[event.args[0]] = event.args[1]
            return await original(topic, event, origin)

        peer.publish = publish  # type: ignore[method-assign]  # timestamp verdicts as they are handled
        await peer.wait_for(lambda received: len(received) > 0, 60)
        total, rate = scenario["requests"], scenario.get("rate")
        started = time.monotonic()
        for index in range(total):
            if rate:
                due = started + index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            topic, payload = base[index % len(base)]
            uid = f"C{index:017d}"
            sent[uid] = time.monotonic()
            await peer.send_raw(topic, payload.replace(UID_MARK.encode(), uid.encode()))
        deadline = time.monotonic() + scenario.get("drain", 60)
        while len(answered) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    latencies = sorted(answered[uid] - sent[uid] for uid in answered if labels[uid] != "error")
    finished = max(answered.values()) if answered else started
    results.put(
        {
            "published": total,
            "answered": len(answered),
            "errors": sum(1 for label in labels.values() if label == "error"),
            "lost": total - len(answered),
            "seconds": finished - started,
            "latency_ms": _percentiles(latencies),
        }
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}

    def at(q: float) -> float:
        return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(1000 * values[-1], 2)}


def run_scenario(model: Path, scenario: dict[str, Any], batch_size: int, max_queue: int) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=peer_process, args=(port, scenario, results), daemon=True)
    process.start()
    engine = Engine(model, batch_size=batch_size)
    settings = ServeSettings(
        zeek=f"ws://127.0.0.1:{port}/v1/messages/json",
        batch_size=batch_size,
        max_queue=max_queue,
        reconnect_initial=0.05,
        reconnect_max=0.2,
    )
    sidecar = Sidecar(settings, engine)
    outcome: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sidecar.run(stop))
        await sidecar.subscribed.wait()
        cpu = time.process_time()
        outcome.update(await asyncio.to_thread(results.get, True, 300))
        outcome["sidecar_cpu_seconds"] = round(time.process_time() - cpu, 3)
        stop.set()
        await task

    asyncio.run(main())
    process.join(10)
    metrics = sidecar.metrics
    answered_ok = outcome["answered"] - outcome["errors"]
    outcome.update(
        connections_per_second=round(answered_ok / max(outcome["seconds"], 1e-9)),
        connections_per_cpu_second=round(answered_ok / max(outcome["sidecar_cpu_seconds"], 1e-9)),
        dropped=dict(metrics.dropped),
        sidecar_errors=dict(metrics.errors),
        batches=metrics.batches,
        mean_batch=round((metrics.requests - metrics.dropped.total()) / max(metrics.batches, 1), 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        seconds=round(outcome["seconds"], 3),
    )
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="bundle (default: the store's active one, else embedded)"
    )
    parser.add_argument("--requests", type=int, default=6000, help="requests of the capacity run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the paced and overload runs")
    parser.add_argument("--rate", type=float, default=None, help="paced rate (default: half the capacity)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    model = resolve_model(args.model)
    report: dict[str, Any] = {"model": str(model), "batch_size": args.batch_size}
    capacity = run_scenario(model, {"requests": args.requests}, args.batch_size, args.requests + 1)
    report["capacity"] = capacity
    rate = args.rate or max(100.0, 0.5 * capacity["connections_per_second"])
    paced = {"requests": int(rate * args.seconds), "rate": rate}
    report["paced"] = {"rate": rate, **run_scenario(model, paced, args.batch_size, 10_000)}
    flood = 4 * capacity["connections_per_second"]
    overload = {"requests": int(flood * args.seconds), "rate": flood}
    report["overload"] = {
        "rate": flood,
        "max_queue": 500,
        **run_scenario(model, overload, args.batch_size, 500),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
