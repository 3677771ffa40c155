"""`packetclip bench`: how fast the whole runtime is, as JSON on stdout.

Owns the measurement of the end-to-end pipeline that `classify` runs — read the capture, track and featurize
connections, embed (with the cache), build contexts, run the reasoner, explain, and format Zeek records (written
to nowhere) — repeated over the captures until `--seconds` have passed, each pass starting from an empty engine
state so that a pass never hits the cache with connections of the pass before. It reports:

- packets/s and connections/s over all passes (packets = frames read);
- per-connection latency, defined as the wall time from the moment the connection table releases a connection
  (its first `max_packets` packets are in, it closed, or it timed out) to the moment its verdict exists; this
  includes waiting for the micro-batch to fill, which is what a sensor's operator sees;
- peak RSS of the process (`resource.getrusage`, so it covers everything the run did, model loading included);
- the embedding cache's hit rate with its exact key, the hit rate a key with iat rounded to 1 ms would have had
  (measured in one extra untimed pass: hashing a second key is the measurement's cost, not the pipeline's), and
  the end-to-end rate of one pass without the cache (the cache's measured effect);
- ET-BERT's architecture measured in the same run (`packetclip.timing.measure`), interleaved round by round with
  the end-to-end pipeline, and the ratio of connections/s. Its ONNX comes from `--etbert-model`, or from running
  the factory's `packetclip-train etbert` in a separate process (the `train` extras; the runtime never imports
  the factory or torch); without either the JSON says why it was skipped. ET-BERT gets the reading most
  favourable to it: model time only, one sample per connection, whereas packetclip's number includes reading
  and featurizing the capture.

It does not own the pipeline (`packetclip.pipeline.classify_captures`) or the ET-BERT model (the factory).
"""

from __future__ import annotations

import io
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from packetclip.commands.models import FACTORY_COMMAND, factory_command
from packetclip.commands.options import batch_size_option, model_option, setup_errors, threads_option
from packetclip.engine import Engine
from packetclip.output import ZeekWriter
from packetclip.pipeline import StreamSummary, classify_captures, open_engine
from packetclip.timing import Candidate, measure, single_thread_session

log = logging.getLogger(__name__)

DEFAULT_CAPTURE = Path(__file__).resolve().parents[3] / "samples" / "lab-quick" / "capture.pcap"
ROUNDED_IAT_MS = 1.0  # the rounding whose hit rate is reported next to the exact key's
ETBERT_DESCRIPTION = "etbert.json"  # written beside etbert.onnx by `packetclip-train etbert`
ETBERT_BATCH = 4  # samples per ET-BERT call: one call of BERT-base on one core already takes about a second


def run_pass(engine: Engine, captures: Sequence[str | Path], measure_latency: bool = True) -> StreamSummary:
    """One end-to-end pass over the captures from an empty engine state, records formatted and discarded."""
    engine.reset()
    sink = io.StringIO()
    writer = ZeekWriter(sink)

    def write(verdict: Any) -> None:
        writer.write(verdict)
        if sink.tell() > 1 << 20:  # formatting is part of the work; keeping the text is not
            sink.seek(0)
            sink.truncate()

    summary = classify_captures(engine, captures, write, measure_latency=measure_latency)
    writer.close()
    return summary


def end_to_end(engine: Engine, captures: Sequence[str | Path], seconds: float) -> dict[str, Any]:
    """Passes until `seconds` have passed (at least one); rates, latency and cache figures."""
    passes: list[StreamSummary] = []
    hits = misses = skipped = 0
    started = time.perf_counter()
    while not passes or time.perf_counter() - started < seconds:
        passes.append(run_pass(engine, captures))
        hits += engine.cache.hits
        misses += engine.cache.misses
        skipped += engine.cache.skipped
    packets = sum(p.stats.frames for p in passes)
    connections = sum(p.connections for p in passes)
    busy = sum(p.seconds for p in passes)
    latencies = np.array([latency for p in passes for latency in p.latencies]) * 1000.0
    lookups = hits + misses
    first = passes[0]
    return {
        "passes": len(passes),
        "packets": packets,
        "connections": connections,
        "seconds": busy,
        "packets_per_second": packets / busy if busy else 0.0,
        "connections_per_second": connections / busy if busy else 0.0,
        "pass_connections_per_second": [p.connections / p.seconds for p in passes if p.seconds],
        "latency_ms": {
            "definition": "wall time from the connection table releasing a connection to its verdict, "
            "micro-batch wait included",
            "p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
            "max": float(latencies.max()) if len(latencies) else None,
            "connections": len(latencies),
        },
        "cache": {
            "hit_rate": hits / lookups if lookups else 0.0,
            f"hit_rate_if_iat_rounded_to_{ROUNDED_IAT_MS:g}ms": rounded_hit_rate(engine, captures),
            "hits": hits,
            "lookups": lookups,
            "skipped_while_dormant": skipped,
            "capacity": engine.cache.capacity,
        },
        "labels": dict(first.labels),
        "released_at_max_packets": first.released_early,
        "reordered_forced": first.reordered_forced,
        "parse": first.stats.as_dict(),
        "file_errors": first.file_errors,
    }


def rounded_hit_rate(engine: Engine, captures: Sequence[str | Path]) -> float:
    """The hit rate a cache keyed on iat rounded to `ROUNDED_IAT_MS` would have had, over one untimed pass."""
    engine.rounded_iat_ms = ROUNDED_IAT_MS
    try:
        run_pass(engine, captures, measure_latency=False)
        lookups = engine.cache.hits + engine.cache.misses
        return engine.cache.rounded_hits / lookups if lookups else 0.0
    finally:
        engine.rounded_iat_ms = None
        engine.reset()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def etbert_comparison(
    run_once: Callable[[], int],
    connections: int,
    round_seconds: float,
    rounds: int,
    etbert_dir: Path,
) -> dict[str, Any]:
    """ET-BERT's architecture, as exported by `packetclip-train etbert` into `etbert_dir`, against `run_once` (one
    end-to-end pass of `connections` connections), measured in interleaved rounds."""
    description = json.loads((etbert_dir / ETBERT_DESCRIPTION).read_text())
    config = description["config"]
    session = single_thread_session(etbert_dir / description["onnx"])
    rng = np.random.default_rng(0)
    shape = (ETBERT_BATCH, int(config["seq_length"]))
    tokens = {
        "input_ids": rng.integers(0, int(config["vocab_size"]), size=shape, dtype=np.int64),
        "attention_mask": np.ones(shape, dtype=np.int64),  # every position a real token, as in a long flow
    }
    outputs = description["outputs"]
    pipeline = Candidate("packetclip end-to-end", lambda _batch: run_once(), [{}], [max(1, connections)])
    etbert = Candidate("ET-BERT", lambda batch: session.run(outputs, dict(batch)), [tokens], [ETBERT_BATCH])
    measured = measure([pipeline, etbert], round_seconds=round_seconds, rounds=rounds, warmup_batches=1)
    ours = measured[pipeline.name]["connections_per_second_median"]
    theirs = measured[etbert.name]["connections_per_second_median"]
    paired = [
        a / b
        for a, b in zip(
            measured[pipeline.name]["connections_per_second_rounds"],
            measured[etbert.name]["connections_per_second_rounds"],
            strict=True,
        )
    ]
    return {
        "available": True,
        "what": "ET-BERT's architecture (random weights), model time only, one sample per connection, "
        f"batch of {ETBERT_BATCH}, onnxruntime with one thread, interleaved rounds with the end-to-end pipeline",
        "config": config,
        "parameters": description["parameters"],
        "flops_per_sample": description["flops_per_sample"],
        "packetclip_connections_per_second": ours,
        "etbert_connections_per_second": theirs,
        "ratio": ours / theirs if theirs else None,
        "ratio_paired_rounds_median": statistics.median(paired) if paired else None,
        "measured": measured,
    }


def export_etbert(out: Path) -> None:
    """Run the factory's `packetclip-train etbert --out OUT` (the runtime never imports the factory or torch).
    Raises EtBertUnavailable with the reason when it cannot."""
    command = factory_command()
    if command is None:
        raise EtBertUnavailable(
            f"the factory ({FACTORY_COMMAND}) is not installed; install the train extras to compare, or pass "
            "--etbert-model with a folder written by `packetclip-train etbert`"
        )
    argv = [*command, "etbert", "--out", str(out)]
    log.info("running %s", " ".join(argv))
    try:
        finished = subprocess.run(argv, check=False, capture_output=True, text=True)
    except OSError as exc:
        raise EtBertUnavailable(f"cannot run {argv[0]}: {exc}") from exc
    if finished.returncode != 0 or not (out / ETBERT_DESCRIPTION).is_file():
        raise EtBertUnavailable(
            f"{' '.join(argv)} failed ({finished.returncode}): {finished.stderr.strip()[-500:]}"
        )


class EtBertUnavailable(RuntimeError):
    """ET-BERT's architecture could not be exported for the comparison; the message says why."""


@click.command("bench")
@click.argument("pcaps", nargs=-1, type=click.Path(dir_okay=False))
@model_option
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.0),
    default=10.0,
    show_default=True,
    help="Wall time of the end-to-end passes (at least one pass runs).",
)
@batch_size_option
@threads_option
@click.option(
    "--etbert/--no-etbert",
    default=True,
    show_default=True,
    help="Measure ET-BERT's architecture side by side (needs the train extras).",
)
@click.option(
    "--etbert-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder written by `packetclip-train etbert` (default: export one for this run).",
)
@click.option("--etbert-rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--etbert-round-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
def bench(
    pcaps: tuple[str, ...],
    model: str | None,
    seconds: float,
    batch_size: int | None,
    threads: int | None,
    etbert: bool,
    etbert_model: Path | None,
    etbert_rounds: int,
    etbert_round_seconds: float,
) -> None:
    """Throughput, latency, memory and cache figures of read + featurize + infer, as JSON."""
    captures = list(pcaps) or [str(DEFAULT_CAPTURE)]
    missing = [path for path in captures if not Path(path).is_file()]
    if missing:
        raise click.ClickException(f"no capture at {', '.join(missing)}")
    with setup_errors():
        engine = open_engine(model, threads, batch_size)
    result: dict[str, Any] = {
        "captures": [{"path": path, "bytes": Path(path).stat().st_size} for path in captures],
        "model": {
            "name": engine.bundle.name,
            "version": engine.model_version,
            "source": str(engine.bundle.source),
        },
        "settings": {"threads": engine.threads, "batch_size": engine.batch_size, "seconds": seconds},
    }
    result["end_to_end"] = end_to_end(engine, captures, seconds)
    result["cache_effect"] = cache_effect(engine, captures, result["end_to_end"]["connections_per_second"])
    result["peak_rss_mb"] = peak_rss_mb()
    if etbert:
        result["etbert"] = _etbert_or_reason(
            engine, captures, result, etbert_round_seconds, etbert_rounds, etbert_model
        )
    else:
        result["etbert"] = {"available": False, "reason": "skipped (--no-etbert)"}
    result["peak_rss_mb_after_etbert"] = peak_rss_mb()
    engine.close()
    click.echo(json.dumps(result, indent=2))
    if result["end_to_end"]["file_errors"]:
        raise click.exceptions.Exit(1)


def cache_effect(engine: Engine, captures: Sequence[str | Path], with_cache: float) -> dict[str, Any]:
    """One pass with the cache off, against the cached passes' connections/s."""
    capacity = engine.cache_size
    engine.cache_size = 0
    try:
        summary = run_pass(engine, captures, measure_latency=False)
    finally:
        engine.cache_size = capacity
        engine.reset()
    without = summary.connections / summary.seconds if summary.seconds else 0.0
    return {
        "connections_per_second_with_cache": with_cache,
        "connections_per_second_without_cache": without,
        "speedup": with_cache / without if without else None,
    }


def _etbert_or_reason(
    engine: Engine,
    captures: Sequence[str | Path],
    result: dict[str, Any],
    round_seconds: float,
    rounds: int,
    etbert_model: Path | None,
) -> dict[str, Any]:
    connections = result["end_to_end"]["connections"] // result["end_to_end"]["passes"]

    def run_once() -> int:
        return run_pass(engine, captures, measure_latency=False).connections

    try:
        if etbert_model is not None:
            return etbert_comparison(run_once, connections, round_seconds, rounds, etbert_model)
        with tempfile.TemporaryDirectory(prefix="packetclip-bench-") as workdir:
            export_etbert(Path(workdir))
            return etbert_comparison(run_once, connections, round_seconds, rounds, Path(workdir))
    except EtBertUnavailable as exc:
        return {"available": False, "reason": str(exc)}
