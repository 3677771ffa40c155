"""The three sensor paths share one pipeline (`packetclip.pipeline.SensorPipeline`): `packetclip classify` (and
`bench`, through `classify_captures`), `packetclip serve` (`packetclip.zeek.service`, driven through the Zeek-faithful
peer as the scripts publish) and `packetclip suricata run` (`packetclip.suricata.sidecar`, over the eve file a real
Suricata 7 wrote for the capture).

Each path classifies the lab sample with the pipeline's methods watched. Asserted per path: every verdict it hands
on (a record, a Zeek event, an eve-style record) is one the shared pipeline's `classify` returned, and it hands on
every one of them; the live paths cut every connection with the pipeline's `featurize` and ask its `reload` before
every engine call; the pipeline's counters are what the path reports (classify's summary, serve's metrics, suricata
run's statistics). Then the paths agree: the Zeek path gives every connection classify's label, attack and
explanation (same bundle, the scripts' 5-s window), the Suricata path every flow classify's (same packets, whole
frames). The agreement of each path with classify on more captures is in `tests/zeek_peer/
test_zeek_path_equals_classify.py` and `tests/suricata/test_suricata_live.py`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from packetclip.engine import Engine
from packetclip.featurizer import Connection
from packetclip.output import verdict_record
from packetclip.pipeline import SensorPipeline, StreamSummary, classify_captures
from packetclip.reload import Reload
from packetclip.suricata.agreement import compare, whole_frames_capture
from packetclip.suricata.eve import parse_timestamp
from packetclip.suricata.follow import EveFileFollower
from packetclip.suricata.sidecar import SidecarSettings, SuricataSidecar
from packetclip.suricata.verdicts import FileSink
from packetclip.verdict import Verdict
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.suricata.suricata_lab import SURICATA, SuricataProcess, eve_records
from tests.zeek_peer.peer import ScriptOptions
from tests.zeek_peer.script_stand_in import publication_schedule
from tests.zeek_peer.test_zeek_path_equals_classify import (
    SCRIPT_MAX_WAIT,
    classify_path,
    differences,
    zeek_path,
)
from tests.zeek_peer.windowed_bundle import windowed_copy

pytestmark = pytest.mark.slow

NO_WAIT = 3600.0  # the Suricata sidecar's max_wait: flows end at max_packets or Suricata's flow record only


@dataclass
class Watched:
    """What the pipeline's methods did while one path ran."""

    verdicts: list[Verdict] = field(default_factory=list)  # every verdict `classify` returned, in order
    featurized: int = 0  # `featurize` calls
    reloads: int = 0  # `reload` calls
    pipelines: set[int] = field(default_factory=set)  # the pipelines' ids


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watched]:
    """`SensorPipeline`'s methods wrapped (the real ones still run) for the path about to run."""
    watched = Watched()
    classify, featurize, reload = SensorPipeline.classify, SensorPipeline.featurize, SensorPipeline.reload

    def watched_classify(
        self: SensorPipeline, connections: Sequence[Connection], sensor: str | Sequence[str]
    ) -> list[Verdict]:
        verdicts = classify(self, connections, sensor)
        watched.verdicts.extend(verdicts)
        watched.pipelines.add(id(self))
        return verdicts

    def watched_featurize(self: SensorPipeline, *args: Any, **kwargs: Any) -> Any:
        watched.featurized += 1
        return featurize(self, *args, **kwargs)

    def watched_reload(self: SensorPipeline) -> Reload:
        watched.reloads += 1
        return reload(self)

    monkeypatch.setattr(SensorPipeline, "classify", watched_classify)
    monkeypatch.setattr(SensorPipeline, "featurize", watched_featurize)
    monkeypatch.setattr(SensorPipeline, "reload", watched_reload)
    yield watched


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The runtime bundle, and a copy with the scripts' window (5 s) for the Zeek path's comparison."""
    bundle = runtime_bundle(tmp_path_factory)
    return bundle, windowed_copy(bundle, tmp_path_factory.mktemp("windowed") / "bundle", SCRIPT_MAX_WAIT)


def test_classify_goes_through_the_pipeline(bundles: tuple[Path, Path], watch: Watched) -> None:
    bundle, _ = bundles
    written: list[Verdict] = []
    summary: StreamSummary = classify_captures(Engine(bundle), [LAB_CAPTURE], written.append)
    assert len(written) > 300 and written == watch.verdicts and len(watch.pipelines) == 1
    assert summary.connections == len(written)
    assert summary.labels == Counter(v.label for v in written)
    assert summary.attacks == Counter(v.attack for v in written)
    assert watch.reloads == 0  # an offline run serves the model it was given


def test_serve_goes_through_the_pipeline(bundles: tuple[Path, Path], watch: Watched) -> None:
    _, windowed = bundles
    schedule = publication_schedule(LAB_CAPTURE, 0, ScriptOptions(node=LAB_CAPTURE.name))
    requests = [published.request for published in schedule]
    answers, sidecar = zeek_path(windowed, {LAB_CAPTURE.name: requests})
    answered = answers[LAB_CAPTURE.name]
    from_pipeline = {v.uid: (v.label, v.attack, v.score, v.explanation) for v in watch.verdicts}
    # every verdict event Zeek received is one the pipeline returned, and every one it returned was sent
    assert len(answered) == len(requests) > 300 and answered == from_pipeline
    assert len(watch.pipelines) == 1 and watch.featurized == len(requests)
    assert 0 < watch.reloads <= sidecar.metrics.batches  # asked before every batch's engine calls
    counts = sidecar.pipeline.counts
    assert counts.classified == len(requests) and dict(counts.labels) == dict(sidecar.metrics.verdicts)
    assert sidecar.metrics.errors.total() == 0
    # the Zeek path gives classify's verdicts (a fresh engine; the watched pipeline again)
    assert differences(answered, classify_path(windowed, LAB_CAPTURE)) == []


@pytest.mark.skipif(SURICATA is None, reason="suricata is not installed (scripts/install-suricata)")
def test_suricata_run_goes_through_the_pipeline(
    bundles: tuple[Path, Path], watch: Watched, tmp_path: Path
) -> None:
    bundle, _ = bundles
    capture = tmp_path / "lab-quick-whole.pcap"
    assert whole_frames_capture(LAB_CAPTURE, capture) > 0  # the lab capture has cut frames (snaplen 256)
    suricata = SuricataProcess(tmp_path / "suricata")
    suricata.start()
    try:
        suricata.replay(capture)
    finally:
        suricata.stop()
    flows = len(eve_records(suricata.eve, "flow"))
    verdicts_file = tmp_path / "verdicts.json"
    sidecar = SuricataSidecar(
        Engine(bundle),
        EveFileFollower(suricata.eve),
        FileSink(verdicts_file),
        settings=SidecarSettings(sensor=capture.name, max_wait=NO_WAIT, poll_timeout=0.05),
    )
    sidecar.run(threading.Event(), stop_after_idle=1.0)
    written = [json.loads(line) for line in verdicts_file.read_text().splitlines()]
    # every record written carries a verdict the pipeline returned, in its order, and every one was written
    assert len(written) == flows > 300 and len(watch.verdicts) == flows and len(watch.pipelines) == 1
    for record, verdict in zip(written, watch.verdicts, strict=True):
        assert (record["packetclip"]["label"], record["packetclip"]["attack"]) == (
            verdict.label,
            verdict.attack,
        )
        assert record["packetclip"]["explanation"] == verdict.explanation
    assert watch.featurized == flows and watch.reloads > 0
    stats = sidecar.stats()["sidecar"]
    assert isinstance(stats, dict)
    assert stats["labels"] == dict(sorted(Counter(v.label for v in watch.verdicts).items()))
    assert stats["flows_classified"] == flows and stats["unusable_flows"] == stats["classify_errors"] == 0

    # the Suricata path gives classify's verdicts on the same packets
    reference: list[dict[str, Any]] = []
    classify_captures(Engine(bundle), [capture], lambda v: reference.append(verdict_record(v)))
    for record in written:
        record["ts"] = parse_timestamp(record["timestamp"])
    agreement = compare(reference, written)
    assert agreement.matched == len(written) == len(reference), agreement.as_dict()
    assert agreement.label_agreement == agreement.attack_agreement == 1.0, agreement.as_dict()
