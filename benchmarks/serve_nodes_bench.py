"""Benchmark of `packetclip serve`'s inference thread against one Zeek node and against many (issue 19, item 5).

The requests of the benchmark captures (those of `serve_bench.py`), as the Zeek scripts publish them, parsed as
the sidecar parses them and put in first-packet order as the reorder window releases them (repeated, later in
time, up to `--requests`), are dealt to `--nodes` node names in turn and handed to `Sidecar.classify_batch` in
batches of `--batch-size`: what the inference thread does with a batch (featurize, classify, build the verdict
messages). No socket and no reorder window: this measures what node names change, the engine calls. One
untimed batch warms onnxruntime up first, then the contexts are reset.

JSON on stdout: per node count the median over `--repeats` of requests/s (wall), requests per CPU-second, engine
calls and model runs (micro-batches: encoder, contexts, reasoner), and the ratio of each node count's requests/s
to the first's.

`--baseline DIR` also measures another version of the runtime: DIR holds its `packetclip` package (for the
version before a change, e.g. a copy of `sidecar/` with the changed files taken from `git show HEAD:...`). Each
repeat then measures both versions, one after the other, each in a fresh process, and the report adds
this version's requests/s over the baseline's: on a busy machine compare ratios of one run, not absolute numbers.

Run from the repository root, as a module: it imports the Zeek peer test double from `tests.zeek_peer`.

    python -m benchmarks.serve_nodes_bench [--model DIR] [--nodes 1 1000] [--requests 4096] [--repeats 3]
        [--batch-size 256] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CAPTURES = (
    REPO / "samples" / "lab-quick" / "capture.pcap",
    REPO.parent / "shared" / "data" / "real" / "nDPI/tests/cfgs/default/pcap/synscan.pcap",
)


def bench_requests(count: int) -> list[Any]:
    """`count` requests in first-packet order: the captures' requests, then again shifted past the last one."""
    from packetclip.zeek.service import parse_request
    from packetclip.zeek.settings import ServeSettings
    from tests.zeek_peer.peer import ScriptOptions, requests_from_capture

    settings = ServeSettings()
    base = [
        parse_request(script.event, settings, 0.0)
        for capture in CAPTURES
        if capture.is_file()
        for script in requests_from_capture(capture, ScriptOptions(node="bench"))
    ]
    base.sort(key=lambda request: (request.ts[0], request.tie))
    span = max(max(request.ts) for request in base) - base[0].ts[0] + 1.0
    out = []
    for index in range(count):
        request = base[index % len(base)]
        shift = span * (index // len(base))
        out.append(dataclasses.replace(request, uid=f"C{index:017d}", ts=[t + shift for t in request.ts]))
    return out


def measure(model: str, nodes: int, requests: list[Any], batch_size: int) -> dict[str, Any]:
    """One node count through a fresh engine and sidecar."""
    from packetclip.engine import Engine
    from packetclip.zeek.service import Sidecar
    from packetclip.zeek.settings import ServeSettings

    dealt = [dataclasses.replace(r, node=f"zeek-{i % nodes:05d}") for i, r in enumerate(requests)]
    batches = [dealt[start : start + batch_size] for start in range(0, len(dealt), batch_size)]
    engine = Engine(model, batch_size=batch_size)
    sidecar = Sidecar(ServeSettings(batch_size=batch_size), engine)
    sidecar.classify_batch(batches[0])  # warm-up: onnxruntime's arenas grow on the first calls
    engine.reset()
    counts = {"classify": 0, "classify_batch": 0}
    for name in counts:  # count the engine's calls and model runs (`classify` runs `classify_batch`)
        original = getattr(engine, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(engine, name, counted)
    errors = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        outgoing, _ = sidecar.classify_batch(batch)
        errors += sum(1 for item in outgoing if item.label == "error")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "nodes": nodes,
        "requests": len(dealt),
        "errors": errors,
        "seconds": round(wall, 3),
        "requests_per_second": round(len(dealt) / wall, 1),
        "requests_per_cpu_second": round(len(dealt) / max(cpu, 1e-9), 1),
        "engine_calls": counts["classify"],
        "model_runs": counts["classify_batch"],
    }


def worker(args: argparse.Namespace) -> int:
    """Measure every node count in this process (the `packetclip` on its path) and print one JSON line."""
    import packetclip

    requests = bench_requests(args.requests)
    results = [measure(args.model, nodes, requests, args.batch_size) for nodes in args.nodes]
    print(json.dumps({"packetclip": str(Path(packetclip.__file__).parent), "results": results}))
    return 0


def run_version(args: argparse.Namespace, model: str, path: str | None) -> dict[str, Any]:
    """One repeat of every node count in a fresh process, with `path` (a baseline's package) first on its path."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.serve_nodes_bench",
        "--worker",
        "--model",
        model,
        "--requests",
        str(args.requests),
        "--batch-size",
        str(args.batch_size),
        "--nodes",
        *map(str, args.nodes),
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"benchmark worker failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def summary(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats, per node count; the ratio of each node count's requests/s to the first's."""
    by_nodes: dict[int, list[dict[str, Any]]] = {}
    for repeat in repeats:
        for result in repeat["results"]:
            by_nodes.setdefault(result["nodes"], []).append(result)
    out: dict[str, Any] = {"packetclip": repeats[0]["packetclip"]}
    first = None
    for nodes, results in by_nodes.items():
        rate = statistics.median(r["requests_per_second"] for r in results)
        first = first or rate
        out[f"nodes_{nodes}"] = {
            "requests_per_second": rate,
            "requests_per_second_runs": [r["requests_per_second"] for r in results],
            "requests_per_cpu_second": statistics.median(r["requests_per_cpu_second"] for r in results),
            "engine_calls": results[0]["engine_calls"],
            "model_runs": results[0]["model_runs"],
            "errors": max(r["errors"] for r in results),
            "vs_first_node_count": round(rate / first, 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="bundle (default: the store's active one, else embedded)"
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 1000], help="node counts to measure")
    parser.add_argument("--requests", type=int, default=4096, help="requests per node count")
    parser.add_argument("--batch-size", type=int, default=256, help="requests per batch (serve's batch_size)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements per node count (median reported)"
    )
    parser.add_argument("--baseline", default=None, help="a directory holding another version's packetclip")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    from packetclip.pipeline import resolve_model

    model = str(resolve_model(args.model))
    versions: dict[str, str | None] = {"current": None}
    if args.baseline is not None:
        versions["baseline"] = str(Path(args.baseline).resolve())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
    for _ in range(args.repeats):  # versions alternate, so a change in the machine's load hits both
        for name, path in versions.items():
            runs[name].append(run_version(args, model, path))
    report: dict[str, Any] = {
        "model": model,
        "batch_size": args.batch_size,
        "requests": args.requests,
        "repeats": args.repeats,
        **{name: summary(repeats) for name, repeats in runs.items()},
    }
    if "baseline" in report:
        report["current_over_baseline"] = {
            key: round(value["requests_per_second"] / report["baseline"][key]["requests_per_second"], 2)
            for key, value in report["current"].items()
            if key.startswith("nodes_")
        }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
