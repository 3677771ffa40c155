"""Side-by-side speed measurement: candidates run in interleaved timed rounds on one thread each.

Owns `Candidate` (a callable over one prepared batch, with the connections each batch holds), `measure` (warm-up,
then rounds A, B, A, B, ... of a fixed wall time each, so a burst of machine noise hits neighbouring rounds of every
candidate alike and the per-round medians expose it) and `single_thread_session` (an onnxruntime session pinned to
one intra-op and one inter-op thread, sequential execution: one core per candidate). `packetclip bench` and the
factory's efficiency table both measure with it. It does not own any model.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Batch = Mapping[str, np.ndarray]
Clock = Callable[[], float]


def single_thread_session(onnx_path: str | Path) -> Any:
    """An onnxruntime CPU session pinned to one thread, sequential execution: one core per candidate."""
    import onnxruntime as ort  # the factory measures with the runtime's engine

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


@dataclass
class Candidate:
    """A model as measured: `run(batch)` does all its work on one prepared batch of `connections[i]` connections."""

    name: str
    run: Callable[[Batch], Any]
    batches: list[Batch]
    connections: list[int]  # connections in each batch, same order: a last partial batch counts what it holds
    sessions: list[Any] = field(default_factory=list)  # kept alive with the candidate; not used by the timer

    def __post_init__(self) -> None:
        if not self.batches or len(self.batches) != len(self.connections):
            raise ValueError(f"{self.name}: {len(self.batches)} batches but {len(self.connections)} counts")
        if min(self.connections) <= 0:
            raise ValueError(f"{self.name}: every batch must hold at least one connection")


@dataclass
class Rounds:
    """What one candidate did in each of its timed rounds."""

    name: str
    connections: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in zip(self.connections, self.seconds, strict=True)]

    def summary(self) -> dict[str, Any]:
        total_seconds = sum(self.seconds)
        return {
            "connections_per_second_median": statistics.median(self.rates),
            "connections_per_second_overall": sum(self.connections) / total_seconds,
            "connections_per_second_rounds": self.rates,
            "connections": sum(self.connections),
            "seconds": total_seconds,
            "rounds": len(self.seconds),
        }


def _timed_round(candidate: Candidate, seconds: float, clock: Clock) -> tuple[int, float]:
    """Run batches in turn until `seconds` have passed (at least one batch); returns (connections, elapsed)."""
    done, index, started = 0, 0, clock()
    while True:
        candidate.run(candidate.batches[index])
        done += candidate.connections[index]
        index = (index + 1) % len(candidate.batches)
        elapsed = clock() - started
        if elapsed >= seconds:
            return done, elapsed


def measure(
    candidates: Sequence[Candidate],
    round_seconds: float = 5.0,
    rounds: int = 5,
    warmup_batches: int = 2,
    clock: Clock = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """Connections/s of each candidate, measured in interleaved rounds; keyed by candidate name."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique: {names}")
    for candidate in candidates:  # allocations, kernel choice and caches, outside the timed rounds
        for index in range(warmup_batches):
            candidate.run(candidate.batches[index % len(candidate.batches)])
    records = {c.name: Rounds(c.name) for c in candidates}
    for round_index in range(rounds):
        for candidate in candidates:
            done, elapsed = _timed_round(candidate, round_seconds, clock)
            records[candidate.name].connections.append(done)
            records[candidate.name].seconds.append(elapsed)
            log.info("round %d %s: %.1f connections/s", round_index, candidate.name, done / elapsed)
    return {name: record.summary() for name, record in records.items()}
