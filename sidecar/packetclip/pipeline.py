"""The sensor pipeline: frames in → connections → first-packet order → engine → verdicts.

Owns the steps every sensor path shares once it holds a connection's frames (`SensorPipeline`): cutting them into
the connection the model reads (`featurize`: a frame the featurizer cannot use is counted, an exception it raises
is counted and logged, never passed on), reloading the engine when the model store's activation changes
(`reload`: `packetclip.reload`'s policy), one engine call for connections in first-packet order (`classify`,
which raises what the engine raises, or `classify_or_fail` for a live sidecar, which counts and logs a failed
call and goes on), and the counters of all of it (`PipelineCounts`). `packetclip classify` and `packetclip bench`
(through `classify_captures` below), `packetclip serve` (`packetclip.zeek.service`) and `packetclip suricata
run` (`packetclip.suricata.sidecar`) each hold one and differ only where their sensors differ: how frames arrive
(a capture file, Zeek's requests, Suricata's eve records), how they learn a connection's place in first-packet
order (`packetclip.ordering` where the connection table is theirs; `packetclip.zeek.reorder` for Zeek, whose
table is not) and where verdicts go.

Owns the offline capture stream (`classify_captures`, which `packetclip classify` and `packetclip bench` run, and
the factory's evaluations replay): frames are read and tracked one file at a time with bounded memory, finished
connections are put back in first-packet order (the order training replays a capture in; `packetclip.ordering`)
and gathered into micro-batches for the engine, and each verdict is handed to a sink as soon as its batch is done.
Several files are several sensors: each gets its own connection table and its file name as the originator-context
key, so two captures never share a history. A capture that cannot be read (missing, empty, not a capture, a
folder) is counted in the summary and skipped; the other captures are still processed in full.

Bounded memory: the featurizer's tracker keeps a connection until it times out or closes, and keeps only the first
`max_packets` packets' bytes. In its `release_full` mode it hands a connection to the engine the moment its first
`max_packets` packets are in or packet time passes the bundle's window (what Zeek's scripts do with `max_packets`
and `max_wait`), drops its packet bytes, and keeps only its counters until it ends the connection without a second
record, so each connection gets exactly one record. A flood's single long connection is therefore classified
within `max_packets` packets instead of at its inactivity timeout, and the facts in its record are those of its
first `max_packets` packets.

It also owns opening an engine from runtime settings, which the commands and the live sidecars share: choosing the
bundle (`resolve_model`: `--model`, else the store's active bundle, else the embedded one), the user missions, the
allowlist and the input store the settings name (`user_mission_factory`, `open_allowlist`, `open_input_store`).
A setting or a file it names that cannot be used raises `SetupError`, one line the commands print as their error.

It does not parse frames (`packetclip.featurizer`), run models (`packetclip.engine`), format records
(`packetclip.output`), declare options or print anything (`packetclip.commands`), or speak to a live sensor
(`packetclip.zeek`, `packetclip.suricata`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from packetclip.allowlist import AllowlistError, AllowlistFile
from packetclip.bundle import BundleError, default_bundle_path, load_bundle
from packetclip.config import ConfigError, RuntimeConfig, load_config
from packetclip.engine import Engine, MissionScorerFactory
from packetclip.featurizer import (
    Connection,
    ConnectionTracker,
    FeaturizerConfig,
    ParseStats,
    PcapError,
    featurize_frames,
    read_frames,
)
from packetclip.feedback import FeedbackStoreError, InputStore
from packetclip.ordering import DEFAULT_MAX_HELD, FirstPacketOrder, endpoint_tie
from packetclip.reload import Reload, reload_if_activated
from packetclip.store import ActiveModelWatcher, ModelStore
from packetclip.user_missions import load_user_mission_scorer
from packetclip.verdict import Verdict

log = logging.getLogger(__name__)


class SetupError(ValueError):
    """A setting, a bundle or a file the settings name cannot be used; the message is the one line a command
    stops with (a sensor must not run on a list or store its operator did not mean)."""


@dataclass
class PipelineCounts:
    """What one sensor path's pipeline did; each path reports these under its own names (classify's summary,
    serve's Prometheus metrics, suricata run's statistics)."""

    classified: int = 0  # connections given a verdict
    labels: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    unusable: int = 0  # connections none of whose frames the featurizer could use
    featurize_errors: int = 0  # connections the featurizer failed on (an exception: a defect, logged)
    engine_errors: int = 0  # engine calls that failed (their connections got no verdict)
    reloads: int = 0  # model activations applied
    reload_errors: int = 0  # model activations that failed; the model before them kept serving
    seconds: float = 0.0  # spent featurizing and in engine calls that succeeded


@dataclass(frozen=True)
class Unusable:
    """Why a connection's frames gave no connection: none was usable, or the featurizer failed."""

    reason: str


class SensorPipeline:
    """The steps every sensor path runs between its frames and its verdicts (see the module docstring), with their
    counters. Not thread-safe: one thread runs a pipeline (a live sidecar's inference thread)."""

    def __init__(self, engine: Engine, watcher: ActiveModelWatcher | None = None) -> None:
        self.engine = engine
        self.watcher = watcher  # None: a fixed model, never reloaded
        self.counts = PipelineCounts()

    def reload(self) -> Reload:
        """Reload the engine when the store's activation changed (`packetclip.reload`; call it between engine
        calls); a failed reload is counted and the model before it keeps serving."""
        outcome = reload_if_activated(self.engine, self.watcher)
        if outcome is Reload.RELOADED:
            self.counts.reloads += 1
        elif outcome is Reload.FAILED:
            self.counts.reload_errors += 1
        return outcome

    def featurize(
        self,
        link_type: int,
        ts: Sequence[float],
        frames: Sequence[bytes],
        is_orig: Sequence[bool] | None,
        stats: ParseStats,
        ports: tuple[int, int] | None = None,
        kind: str = "connection",
        key: object = "",
    ) -> Connection | Unusable:
        """The connection a sensor's frames make, cut as the engine's model was trained (`featurize_frames`),
        or why there is none; `stats` counts the frames. `kind` and `key` name the connection in a log line
        (formatted only when one is written)."""
        started = time.perf_counter()
        try:
            connection = featurize_frames(
                link_type, ts, frames, is_orig, self.engine.featurizer_config, stats, ports=ports
            )
        except Exception as exc:  # the featurizer is fuzzed, but a sensor must outlive one unexpected frame
            log.exception("featurizer failed on %s %s", kind, key)
            self.counts.featurize_errors += 1
            return Unusable(f"featurizer failed: {exc}")
        finally:
            self.counts.seconds += time.perf_counter() - started
        if connection is None:
            self.counts.unusable += 1
            return Unusable(f"no usable frame (link type {link_type}): {frame_reasons(stats)}")
        return connection

    def classify(self, connections: Sequence[Connection], sensor: str | Sequence[str]) -> list[Verdict]:
        """The engine's verdicts for connections in first-packet order (`Engine.classify`), counted; raises what
        the engine raises, after counting it."""
        started = time.perf_counter()
        try:
            verdicts = self.engine.classify(connections, sensor)
        except Exception:
            self.counts.engine_errors += 1
            raise
        self.counts.seconds += time.perf_counter() - started
        self.counts.classified += len(verdicts)
        for verdict in verdicts:
            self.counts.labels[verdict.label] += 1
            self.counts.attacks[verdict.attack] += 1
        return verdicts

    def classify_or_fail(
        self, connections: Sequence[Connection], sensor: str | Sequence[str], source: str
    ) -> list[Verdict] | Exception:
        """`classify` for a live sidecar: a failed call is counted, logged with its traceback (`source` says
        whose connections) and returned instead of raised, so that one bad batch never stops the sensor's
        sidecar."""
        try:
            return self.classify(connections, sensor)
        except Exception as exc:
            log.exception(
                "engine failed on a batch of %d from %s",
                len(connections),
                source,
                extra={"connections": len(connections), "count": self.counts.engine_errors},
            )
            return exc


def frame_reasons(stats: ParseStats) -> str:
    """What the featurizer said of a connection's frames, for a record that says why it has no verdict."""
    counts: Iterable[tuple[str, int]] = [*stats.malformed.items(), *stats.skipped.items()]
    text = ", ".join(f"{reason} x{count}" for reason, count in sorted(counts))
    return text or f"{stats.frames} frames, none of them IP"


_PCAP_RECORD_HEADER = 16  # bytes of a pcap record header: progress counts them with each frame
_PROGRESS_EVERY = (
    2048  # frames between progress-bar updates: redrawing per frame would cost more than parsing
)


@dataclass
class StreamSummary:
    """What a run over captures did; the stderr summary and the benchmark read it."""

    stats: ParseStats = field(default_factory=ParseStats)
    connections: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    released_early: int = 0
    evicted: int = 0  # connections ended early to stay within the tracker's max_open
    reordered_forced: int = 0  # connections that could not wait for an earlier, still open one (max_held)
    captures: int = 0  # captures attempted, the unreadable ones included
    file_errors: list[str] = field(default_factory=list)  # one message per capture that could not be read
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds from release by the tracker to verdict


def classify_captures(
    engine: Engine,
    paths: Sequence[str | Path],
    sink: Callable[[Verdict], None],
    progress: Callable[[int], None] | None = None,
    measure_latency: bool = False,
    max_held: int = DEFAULT_MAX_HELD,
    on_file_error: Callable[[str], None] | None = None,
    max_open: int | None = None,
) -> StreamSummary:
    """Stream every capture through tracker and engine; `sink` gets each verdict. Unreadable files are reported
    in the summary (and to `on_file_error` the moment they fail) and skipped; the others are still processed.
    Finished connections reach the engine in first-packet order, equal times by endpoints (`packetclip.ordering`;
    at most `max_held` wait for an earlier one still open), the order training replays a capture in and the Zeek
    sidecar classifies each node's requests in. `max_open` caps the open connections each capture's tracker follows
    (default: the featurizer's)."""
    pipeline = SensorPipeline(engine)
    summary = StreamSummary()
    config = engine.featurizer_config
    if max_open is not None:
        config = dataclasses.replace(config, max_open=max_open)
    started = time.perf_counter()
    for path in paths:
        summary.captures += 1
        file_stats = ParseStats()
        try:
            reorder = FirstPacketOrder(_first_ts, max_held, _tie)
            _classify_capture(
                pipeline, config, Path(path), sink, file_stats, summary, progress, measure_latency, reorder
            )
        except PcapError as exc:
            summary.file_errors.append(str(exc))
            if on_file_error is not None:
                on_file_error(str(exc))
            else:
                log.info("%s", exc)  # the caller reads it from the summary
        summary.stats.merge(file_stats)
    summary.seconds = time.perf_counter() - started
    summary.connections = pipeline.counts.classified
    summary.labels = pipeline.counts.labels
    summary.attacks = pipeline.counts.attacks
    return summary


def _first_ts(item: tuple[Connection, float]) -> float:
    return item[0].ts


def _tie(item: tuple[Connection, float]) -> tuple[Any, ...]:
    conn = item[0]
    return endpoint_tie(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p, conn.proto, conn.uid)


def _classify_capture(
    pipeline: SensorPipeline,
    config: FeaturizerConfig,
    path: Path,
    sink: Callable[[Verdict], None],
    stats: ParseStats,
    summary: StreamSummary,
    progress: Callable[[int], None] | None,
    measure_latency: bool,
    reorder: FirstPacketOrder[tuple[Connection, float]],
) -> None:
    """`reorder` holds (connection, when the tracker released it) for first-packet order."""
    sensor = path.name
    tracker = ConnectionTracker(config, stats, release_full=True)
    batch_size = pipeline.engine.batch_size
    pending: list[tuple[Connection, float]] = []
    clock = time.perf_counter

    def run_batch() -> None:
        verdicts = pipeline.classify([conn for conn, _ in pending], sensor)
        if measure_latency:
            done = clock()
            summary.latencies.extend(done - at for _, at in pending)
        for verdict in verdicts:
            sink(verdict)
        pending.clear()

    def take(ready: list[tuple[Connection, float]]) -> None:
        for item in ready:
            pending.append(item)
            if len(pending) >= batch_size:
                run_batch()

    consumed = 0
    frames = 0
    add = tracker.add
    try:
        for ts, link_type, frame in read_frames(path, stats):
            finished = add(ts, link_type, frame)
            if finished:
                # the oldest open connection only changes when a record comes out, so only then look
                at = clock() if measure_latency else 0.0
                reorder.push([(conn, at) for conn in finished])
                take(reorder.pop_ready(tracker.oldest_open_ts()))
            if progress is not None:
                consumed += len(frame) + _PCAP_RECORD_HEADER
                frames += 1
                if frames % _PROGRESS_EVERY == 0:
                    progress(consumed)
                    consumed = 0
    finally:
        # a damaged file still yields verdicts for everything read before the damage
        at = clock() if measure_latency else 0.0
        reorder.push([(conn, at) for conn in tracker.flush()])
        released = reorder.drain()
        summary.reordered_forced += reorder.forced
        pending.extend(released)  # one last call: the engine takes it in first-packet order, batch by batch
        if pending:
            run_batch()
        summary.released_early += tracker.released_early
        summary.evicted += tracker.evicted
        if progress is not None and consumed:
            progress(consumed)


def resolve_model(model: str | None, store: str | None = None) -> Path:
    """`--model` when given, else the store's active bundle (which falls back to the embedded default)."""
    if model:
        return Path(model)
    try:
        return ModelStore.from_settings(load_config(store=store)).active_bundle_path()
    except ConfigError as exc:
        log.warning("%s; using the embedded default bundle", exc)
        return default_bundle_path()


def open_engine(
    model: str | None,
    threads: int | None,
    batch_size: int | None,
    missions: str | None = None,
    text_encoder: str | None = None,
    allowlist: str | None = None,
    keep_inputs: str | None = None,
    **engine_options: Any,
) -> Engine:
    """An engine on the resolved bundle with settings from flags, environment or config file (config.py); with a
    `missions` folder (flag, PACKETCLIP_MISSIONS or the config file) its user-written missions are scored too, with
    an `allowlist` file (flag, PACKETCLIP_ALLOWLIST or the config file) the verdicts it matches are marked
    allowed; with a `keep_inputs` store (flag, PACKETCLIP_KEEP_INPUTS or the config file) every verdict's model
    input is kept there for feedback."""
    try:
        settings = load_config(
            threads=threads,
            batch_size=batch_size,
            missions=missions,
            text_encoder=text_encoder,
            allowlist=allowlist,
            keep_inputs=keep_inputs,
        )
    except ConfigError as exc:
        raise SetupError(str(exc)) from exc
    engine_options.update(sensor_options(settings))
    try:
        path = resolve_model(model)
        engine = Engine(
            load_bundle(path), threads=settings.threads, batch_size=settings.batch_size, **engine_options
        )
    except BundleError as exc:
        raise SetupError(str(exc)) from exc
    return engine


def sensor_options(settings: RuntimeConfig) -> dict[str, Any]:
    """The `Engine` options every sensor path takes from the runtime settings: user missions, the allowlist and
    the input store for feedback (each None when its setting is not given)."""
    return {
        "user_missions": user_mission_factory(settings),
        "allowlist": open_allowlist(settings),
        "inputs": open_input_store(settings),
    }


def user_mission_factory(settings: RuntimeConfig) -> MissionScorerFactory | None:
    """What builds a bundle's user-mission scorer from the `missions` setting (None: no missions folder set)."""
    if settings.missions is None:
        return None
    if not settings.missions.is_dir():
        raise SetupError(
            f"missions folder {settings.missions} (from {settings.sources['missions']}) is not a folder"
        )
    return partial(
        load_user_mission_scorer,
        missions_dir=settings.missions,
        text_encoder_dir=settings.text_encoder,
        threads=settings.threads,
    )


def open_allowlist(settings: RuntimeConfig) -> AllowlistFile | None:
    """The allowlist the `allowlist` setting names, read and checked (None: no allowlist set). A file that cannot
    be used stops the command with its one-line error: a sensor must not run on a list its operator did not
    mean."""
    if settings.allowlist is None:
        return None
    try:
        allowlist = AllowlistFile(settings.allowlist)
    except AllowlistError as exc:
        source = settings.sources.get("allowlist", "flag")
        named_by = {"flag": "", "environment": " (named by PACKETCLIP_ALLOWLIST)"}.get(
            source, f" (named by {source})"
        )
        raise SetupError(f"{exc}{named_by}") from None
    return allowlist


def open_input_store(settings: RuntimeConfig) -> InputStore | None:
    """The input store the `keep_inputs` setting names, opened (None: not set, nothing kept). A file that cannot
    be used stops the command with a one-line error."""
    if settings.keep_inputs is None:
        return None
    try:
        return InputStore(settings.keep_inputs, settings.keep_inputs_rows, settings.keep_inputs_days)
    except FeedbackStoreError as exc:
        source = settings.sources.get("keep_inputs", "flag")
        named_by = {"flag": "", "environment": " (named by PACKETCLIP_KEEP_INPUTS)"}.get(
            source, f" (named by {source})"
        )
        raise SetupError(f"{exc}{named_by}") from None
