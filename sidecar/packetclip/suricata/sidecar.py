"""The Suricata sidecar's loop: eve lines in, flows assembled, verdicts out, flagged originators back in.

Owns the order of work in one step — read what the eve stream has, parse it, hand packets and flow ends to the
assembler, expire flows that waited too long, hold ready flows until every flow that started earlier is ready
too (`packetclip.ordering`: the engine then sees them in first-packet order, as training and `packetclip classify`
do, so their originator histories match), then through the sensor pipeline every path shares
(`packetclip.pipeline.SensorPipeline`): featurize the ready flows (directions from the addresses and ports
relative to each flow's first packet, with the featurizer's rule for a flow first seen from its responder side,
so a flow is cut exactly as `packetclip classify` cuts the same packets) and classify them in one engine call;
then write the eve-style records and pass the verdicts to the dataset feedback — and the counters of everything
that was skipped. Nothing a sensor sends can stop the loop: malformed lines,
frames the featurizer cannot use and failures of the engine, the record sink or Suricata's command socket are
counted and logged (each log call passes its counts as `extra` fields, which a JSON log line carries:
`packetclip.logs`). A model activation that fails to load is counted too (`reload_errors`; `packetclip.reload`
logs it, and the model before it keeps serving). The engine marks the verdicts its allowlist allows (`packetclip.allowlist`); their records
say so and the dataset feedback leaves their originators alone.

It does not parse eve (`eve`), follow the stream (`follow`), group packets (`flows`), format records
(`verdicts`) or speak the command socket (`control`, `datasets`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from packetclip.engine import Engine
from packetclip.featurizer import Connection, ParseStats
from packetclip.ordering import DEFAULT_MAX_HELD, FirstPacketOrder, endpoint_tie
from packetclip.pipeline import PipelineCounts, SensorPipeline
from packetclip.reload import Reload
from packetclip.store import ActiveModelWatcher
from packetclip.suricata.datasets import DatasetFeedback
from packetclip.suricata.eve import EveFlowEnd, EveParser
from packetclip.suricata.flows import FlowAssembler, FlowFrames
from packetclip.suricata.follow import EveSource
from packetclip.suricata.verdicts import RecordSink, eve_record
from packetclip.verdict import Verdict

log = logging.getLogger(__name__)


def _first_ts(flow: FlowFrames) -> float:
    return flow.ts[0]


def _tie(flow: FlowFrames) -> tuple[Any, ...]:
    """`endpoint_tie` on the flow's first packet (its source as the originator, as Suricata takes it; eve's
    protocol names in Zeek's spelling). No uid: Suricata's flow_id differs from run to run, and two flows with one
    5-tuple never start at the same time."""
    first = flow.first
    proto = first.proto.lower()
    proto = "icmp" if "icmp" in proto else proto
    return endpoint_tie(first.src_ip, first.src_port, first.dest_ip, first.dest_port, proto, "")


DEFAULT_MAX_WAIT = 2.0  # for a bundle without a featurizer window


def flow_max_wait(configured: float | None, window: float | None) -> float:
    """How long a flow is collected: as configured, else the bundle's window, else DEFAULT_MAX_WAIT. A wait
    shorter than the window hands the model fewer packets than it was trained on: said in the log."""
    wait = configured if configured is not None else window if window is not None else DEFAULT_MAX_WAIT
    if window is not None and wait < window:
        log.warning(
            "flows are classified %.2f s after their first packet, but the model was trained on the packets of "
            "the first %.2f s (its featurizer window): later packets of a connection are not seen",
            wait,
            window,
        )
    return wait


@dataclass
class SidecarSettings:
    sensor: str = "suricata"  # originator-context key prefix: one sensor's hosts share a history
    # seconds after a flow's first packet before it is classified with what it has; None: the bundle's featurizer
    # window (the packets the model was trained on), else DEFAULT_MAX_WAIT
    max_wait: float | None = None
    poll_timeout: float = 0.2  # seconds one read of an idle stream waits
    expire_every: float = 0.25  # seconds between passes over open flows and flagged addresses
    max_open_flows: int = 100_000  # bounds the assembler under a flood of one-packet flows
    max_held: int = DEFAULT_MAX_HELD  # ready flows waiting for an earlier open one (packetclip.ordering)
    # seconds (packet time, and wall time once idle) a ready flow waits for flows that start late
    reorder_slack: float = 1.0


@dataclass
class SidecarCounts:
    """This sidecar's own counters; the pipeline's (`PipelineCounts`) are reported beside them by `as_dict`."""

    flows_classified: int = 0  # flows whose record and feedback are out
    sink_errors: int = 0

    def as_dict(self, pipeline: PipelineCounts) -> dict[str, object]:
        return {
            "flows_classified": self.flows_classified,
            # flows none of whose frames the featurizer could use, or that it failed on
            "unusable_flows": pipeline.unusable + pipeline.featurize_errors,
            "labels": dict(sorted(pipeline.labels.items())),
            "classify_errors": pipeline.engine_errors,  # batches the engine failed on (no verdicts)
            "sink_errors": self.sink_errors,
            "reloads": pipeline.reloads,  # model activations applied (`packetclip.reload`)
            "reload_errors": pipeline.reload_errors,  # activations that failed; the model before kept serving
            "classify_seconds": pipeline.seconds,  # featurize + engine time, for flows/s
            "flows_per_second": (
                round(self.flows_classified / pipeline.seconds, 1) if pipeline.seconds else None
            ),
        }


class SuricataSidecar:
    def __init__(
        self,
        engine: Engine,
        source: EveSource,
        sink: RecordSink,
        feedback: DatasetFeedback | None = None,
        settings: SidecarSettings | None = None,
        watcher: ActiveModelWatcher | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.sink = sink
        self.feedback = feedback
        self.settings = settings or SidecarSettings()
        # featurize, classify and reload when the model store's activation changes (`watcher`)
        self.pipeline = SensorPipeline(engine, watcher)
        self.parser = EveParser()
        config = engine.featurizer_config
        self.assembler = FlowAssembler(
            config.max_packets,
            flow_max_wait(self.settings.max_wait, config.window),
            self.settings.max_open_flows,
        )
        self.frame_stats = ParseStats()
        self.counts = SidecarCounts()
        # ready flows wait for every flow that started earlier, so the engine sees them in first-packet order
        self.order: FirstPacketOrder[FlowFrames] = FirstPacketOrder(_first_ts, self.settings.max_held, _tie)
        self.verdicts: list[tuple[FlowFrames, Verdict]] = []  # kept only when `keep_verdicts` (tests, bench)
        self.keep_verdicts = False
        self._last_expire = 0.0
        self._last_line = float("-inf")  # monotonic time the stream last had lines

    # --- the loop -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, stop_after_idle: float | None = None) -> None:
        """Step until `stop` is set (or the stream has been idle `stop_after_idle` seconds), then classify
        every open flow and close the source and sink."""
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                if self.step():
                    idle_since = time.monotonic()
                elif stop_after_idle is not None and time.monotonic() - idle_since >= stop_after_idle:
                    break
        finally:
            self.finish()

    def step(self) -> int:
        """One read of the stream and everything it made ready; returns the number of lines read."""
        lines = self.source.poll(self.settings.poll_timeout)
        now = time.monotonic()
        ready: list[FlowFrames] = []
        for line in lines:
            item = self.parser.parse(line)
            if item is None:
                continue
            if isinstance(item, EveFlowEnd):
                ended = self.assembler.end(item.flow_id)
                if ended is not None:
                    ready.append(ended)
            else:
                ready += self.assembler.add(item, now)
        if not lines or now - self._last_expire >= self.settings.expire_every:
            ready += self.assembler.expire(now, idle=not lines)
            if self.feedback is not None:
                self.feedback.expire()
            self._last_expire = now
        if lines:
            self._last_line = now
        if ready:
            self.order.push(ready)
        if len(self.order):
            self.classify(self.order.pop_ready(self._release_bound(now)))
        return len(lines)

    def _release_bound(self, now: float) -> float:
        """Ready flows that started up to this time may go to the engine: none may start before the oldest open
        flow, and while records arrive none within `reorder_slack` of the newest packet — Suricata writes eve from
        several threads, so a flow's first packet can reach the file a little after later flows' ends."""
        bound = self.assembler.oldest_open_ts()
        if now - self._last_line < self.settings.reorder_slack:
            bound = min(bound, self.assembler.packet_clock - self.settings.reorder_slack)
        return bound

    def finish(self) -> None:
        """Classify every open flow; close the source and the sink."""
        try:
            self.order.push(self.assembler.flush())
            self.classify(self.order.drain())
        finally:
            self.source.close()
            self.sink.close()

    # --- classification -------------------------------------------------------------------------------------

    def classify(self, flows: list[FlowFrames]) -> list[Verdict]:
        if not flows:
            return []
        self._maybe_reload()
        pipeline = self.pipeline
        max_packets = self.engine.featurizer_config.max_packets
        usable: list[tuple[FlowFrames, Connection]] = []
        for flow in flows:
            frames = flow.frames[:max_packets]
            conn = pipeline.featurize(
                flow.link_type,
                flow.ts[: len(frames)],
                frames,
                None,
                self.frame_stats,
                kind="flow",
                key=flow.flow_id,
            )
            if isinstance(conn, Connection):
                usable.append((flow, conn))
        verdicts = pipeline.classify_or_fail(
            [conn for _, conn in usable], self.settings.sensor, self.settings.sensor
        )
        if isinstance(verdicts, Exception):  # counted and logged; the flows get no verdict
            return []
        records: list[dict[str, Any]] = []
        for (flow, conn), verdict in zip(usable, verdicts, strict=True):
            records.append(eve_record(verdict, flow, len(conn.pkt_ts)))
            if self.keep_verdicts:
                self.verdicts.append((flow, verdict))
        try:
            self.sink.write(records)
        except OSError as exc:
            self.counts.sink_errors += 1
            log.warning(
                "verdict records not written: %s",
                exc,
                extra={"records": len(records), "count": self.counts.sink_errors},
            )
        if self.feedback is not None:
            self.feedback.observe(verdicts)
        # last: a flow counts as classified once its record and its feedback are out
        self.counts.flows_classified += len(verdicts)
        return verdicts

    def _maybe_reload(self) -> None:
        """The pipeline's reload (`packetclip.reload`'s policy); flows are then cut as the new model was
        trained."""
        if self.pipeline.reload() is not Reload.RELOADED:
            return
        config = self.engine.featurizer_config
        self.assembler.max_packets = config.max_packets
        self.assembler.max_wait = flow_max_wait(self.settings.max_wait, config.window)

    def stats(self) -> dict[str, object]:
        return {
            "stream": self.source.counts.as_dict(),
            "eve": self.parser.counts.as_dict(),
            "flows": self.assembler.counts.as_dict(),
            "order": {
                "waiting": len(self.order),
                "held_peak": self.order.held_peak,
                "forced": self.order.forced,
            },
            "frames": self.frame_stats.as_dict(),
            "sidecar": self.counts.as_dict(self.pipeline.counts),
            "verdicts_written": self.sink.written,
            "verdicts_dropped": self.sink.dropped,
            "feedback": None if self.feedback is None else self.feedback.counts.as_dict(),
            "allowlist": None if self.engine.allowlist is None else self.engine.allowlist.counts.as_dict(),
            "kept_inputs": None if self.engine.inputs is None else self.engine.inputs.counts.as_dict(),
            "model": self.engine.model_version,
        }
