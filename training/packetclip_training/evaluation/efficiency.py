"""Side-by-side speed of ONNX models on one CPU thread, and the efficiency table that reports it.

Owns the efficiency table's measurement set-up (the timing itself is `packetclip.timing`): each `Candidate` runs
one or more onnxruntime sessions (packetclip is a pipeline: encoder.onnx, then reasoner.onnx; ET-BERT is one
session). All sessions run with one intra-op and one inter-op thread and sequential execution, so every candidate
gets the same single core. After a warm-up, candidates run in interleaved rounds (A, B, A, B, ...) of a fixed wall
time each: a burst of machine noise hits neighbouring rounds of both alike instead of all of one candidate, and the
per-round medians expose it. It also owns the table rows (parameters, FLOPs per packet and per connection,
connections/s, ratio to the reference), their markdown and a JSON-serialisable result.

It does not own the models: ET-BERT's architecture is `models.etbert`, the encoder's cost `models.flops`; the
packetclip side is described by the caller (ONNX paths and prepared feeds), so the reasoner plugs in as a stage.

ET-BERT classifies one connection per sample (its input is the first packets' bigram tokens, 128 of them), so its
connections/s is its samples/s — the reading most favourable to it.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packetclip.timing import Batch, Candidate, measure, single_thread_session
from packetclip_training.models.etbert import (
    OUTPUT_NAMES as ETBERT_OUTPUTS,
)
from packetclip_training.models.etbert import (
    EtBertConfig,
    build_etbert,
    export_etbert,
    flops_per_sample,
    parameter_count,
    random_tokens,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One session of a pipeline. Its inputs are taken by name from the batch and the earlier stages' outputs;
    `rename` maps an input name to the name it is read under (e.g. the reasoner's `connection` ←
    `connection_embedding`)."""

    session: Any  # onnxruntime.InferenceSession
    rename: Mapping[str, str] = field(default_factory=dict)  # input name → batch/output name it is read from


def pipeline(stages: Sequence[Stage]) -> Callable[[Batch], dict[str, np.ndarray]]:
    """A run function that feeds each stage from the batch and every earlier output, in order."""
    plans = [
        (stage.session, [(i.name, stage.rename.get(i.name, i.name)) for i in stage.session.get_inputs()])
        for stage in stages
    ]

    def run(batch: Batch) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = dict(batch)
        for session, inputs in plans:
            feed = {name: values[source] for name, source in inputs}
            outputs = session.run(None, feed)
            values.update(zip((o.name for o in session.get_outputs()), outputs, strict=True))
        return values

    return run


def split_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> tuple[list[Batch], list[int]]:
    """Arrays with a common first axis → contiguous batches of `batch_size` rows and the row count of each."""
    total = len(next(iter(arrays.values())))
    batches: list[Batch] = [
        {name: np.ascontiguousarray(value[start : start + batch_size]) for name, value in arrays.items()}
        for start in range(0, total, batch_size)
    ]
    return batches, [min(batch_size, total - start) for start in range(0, total, batch_size)]


def pipeline_candidate(
    name: str,
    stages: Sequence[tuple[str | Path, Mapping[str, str]]],
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
) -> Candidate:
    """A candidate from ONNX files run in order (each with its input renames) over `arrays` cut into batches."""
    sessions = [single_thread_session(path) for path, _ in stages]
    run = pipeline([Stage(s, rename) for s, (_, rename) in zip(sessions, stages, strict=True)])
    batches, connections = split_batches(arrays, batch_size)
    return Candidate(name, run, batches, connections, sessions)


def etbert_candidate(
    tmpdir: str | Path,
    config: EtBertConfig | None = None,
    batch_size: int = 32,
    batches: int = 2,
    seed: int = 0,
) -> Candidate:
    """ET-BERT's architecture with random weights, exported to `tmpdir`, over random full-length token batches."""
    config = config or EtBertConfig()
    path = export_etbert(build_etbert(config, seed), tmpdir)
    session = single_thread_session(path)
    prepared: list[Batch] = [random_tokens(config, batch_size, seed + i) for i in range(batches)]

    def run(batch: Batch) -> Any:
        return session.run(ETBERT_OUTPUTS, dict(batch))

    return Candidate("ET-BERT", run, prepared, [batch_size] * batches, [session])


@dataclass(frozen=True)
class EfficiencyRow:
    """One line of the efficiency table."""

    name: str
    parameters: int
    flops_per_packet: float
    flops_per_connection: float
    connections_per_second: float
    ratio: float  # connections/s relative to the reference row (the reference is 1.0)


def efficiency_rows(
    costs: Mapping[str, Mapping[str, float]],
    speeds: Mapping[str, float],
    reference: str,
) -> list[EfficiencyRow]:
    """Rows from per-model costs (`parameters`, `flops_per_packet`, `flops_per_connection`) and connections/s."""
    if reference not in speeds or speeds[reference] <= 0:
        raise ValueError(f"reference {reference!r} has no positive speed")
    missing = sorted(set(costs) ^ set(speeds))
    if missing:
        raise ValueError(f"costs and speeds name different models: {missing}")
    return [
        EfficiencyRow(
            name=name,
            parameters=int(cost["parameters"]),
            flops_per_packet=float(cost["flops_per_packet"]),
            flops_per_connection=float(cost["flops_per_connection"]),
            connections_per_second=float(speeds[name]),
            ratio=float(speeds[name]) / float(speeds[reference]),
        )
        for name, cost in costs.items()
    ]


def _si(value: float) -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def markdown_table(rows: Sequence[EfficiencyRow], reference: str) -> str:
    """The efficiency table as markdown, one line per model."""
    lines = [
        f"| model | parameters | FLOPs / packet | FLOPs / connection | connections/s (1 thread) | × {reference} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {_si(row.parameters)} | {_si(row.flops_per_packet)} | "
            f"{_si(row.flops_per_connection)} | {row.connections_per_second:,.1f} | {row.ratio:,.1f} |"
        )
    return "\n".join(lines) + "\n"


def machine_description() -> dict[str, str]:
    """Which engine and core produced the numbers, for the report."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"onnxruntime": ort.__version__, "cpu": cpu, "python": platform.python_version()}


def efficiency_result(
    measured: Mapping[str, Mapping[str, Any]],
    costs: Mapping[str, Mapping[str, float]],
    reference: str,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON-serialisable report: rows (median connections/s), the measurement itself and how it was made."""
    speeds = {name: float(m["connections_per_second_median"]) for name, m in measured.items()}
    rows = efficiency_rows(costs, speeds, reference)
    overall = {name: float(m["connections_per_second_overall"]) for name, m in measured.items()}
    result = {
        "reference": reference,
        "rows": [asdict(row) for row in rows],
        "ratio_overall": {name: rate / overall[reference] for name, rate in overall.items()},
        "ratio_paired_rounds": _paired_ratios(measured, reference),
        "measured": {name: dict(m) for name, m in measured.items()},
        "settings": {**settings, "intra_op_threads": 1, "inter_op_threads": 1, **machine_description()},
        "markdown": markdown_table(rows, reference),
    }
    json.dumps(result)  # fail here, not in the writer, if anything is not serialisable
    return result


def _paired_ratios(measured: Mapping[str, Mapping[str, Any]], reference: str) -> dict[str, dict[str, Any]]:
    """Round i of a candidate over round i of the reference: neighbours in time share the machine's state, so
    these ratios drift less than the rates themselves. Empty where a measurement has no per-round rates."""
    reference_rates = measured[reference].get("connections_per_second_rounds", [])
    paired: dict[str, dict[str, Any]] = {}
    for name, m in measured.items():
        rates = m.get("connections_per_second_rounds", [])
        if rates and len(rates) == len(reference_rates):
            ratios = [rate / ref for rate, ref in zip(rates, reference_rates, strict=True)]
            paired[name] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return paired


def etbert_cost(config: EtBertConfig) -> dict[str, float]:
    """ET-BERT's cost per the table's columns: one 128-token sample is one packet when it encodes packets (how
    PacketCLIP used it) and one connection when it classifies flows (the reading its speed is measured under)."""
    sample = float(flops_per_sample(config))
    return {"parameters": parameter_count(config), "flops_per_packet": sample, "flops_per_connection": sample}


def compare_with_etbert(
    packetclip: Candidate,
    packetclip_cost: Mapping[str, float],
    workdir: str | Path,
    etbert_config: EtBertConfig | None = None,
    etbert_batch_size: int = 32,
    round_seconds: float = 5.0,
    rounds: int = 5,
) -> dict[str, Any]:
    """Measure `packetclip` against ET-BERT's architecture in one run; returns `efficiency_result`'s dict.

    ET-BERT's ONNX (about 530 MB at the full config) is written under `workdir`, which the caller cleans up."""
    config = etbert_config or EtBertConfig()
    etbert = etbert_candidate(workdir, config, etbert_batch_size)
    measured = measure([packetclip, etbert], round_seconds=round_seconds, rounds=rounds)
    settings = {
        "round_seconds": round_seconds,
        "rounds": rounds,
        "batch_size": {packetclip.name: max(packetclip.connections), etbert.name: etbert_batch_size},
        "etbert_config": config.to_dict(),
    }
    costs = {packetclip.name: dict(packetclip_cost), etbert.name: etbert_cost(config)}
    return efficiency_result(measured, costs, etbert.name, settings)
