"""`packetclip serve` batches across Zeek node names (issue 19, item 5): a batch of many nodes' requests goes
through the engine in as few calls as it can, each node's verdicts unchanged.

Reference, what the sidecar did before: one engine call per node and per run of that node's requests in which the
first-packet time never decreases, nodes in their order of first appearance in the batch. Asserted: the verdict
messages (topic, label, attack, explanation; score within 1e-6) equal the reference's for an interleaved batch of
many nodes, two of them with requests out of first-packet order; a batch of N requests from N nodes is one model
run; a call the engine fails still answers every request, and one node's failing input costs the other nodes
nothing.

The requests are the lab capture's, as the Zeek scripts publish them, parsed as the sidecar parses them and put in
first-packet order, as the reorder window releases them; the engine runs the shipped default bundle (or the tiny
test bundle where there is none).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from packetclip.engine import Engine
from packetclip.zeek.codec import decode_message
from packetclip.zeek.service import ERROR_LABEL, VERDICT_EVENT, Outgoing, Request, Sidecar, parse_request
from packetclip.zeek.settings import ServeSettings
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle
from tests.zeek_peer.peer import ScriptOptions, requests_from_capture

HERE = Path(__file__).resolve().parent

Answer = tuple[str, str, str, float, str]  # topic, label, attack, score, explanation


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def lab_requests() -> list[Request]:
    """The lab capture's requests in first-packet order (equal times by endpoints and uid), as they leave the
    reorder window."""
    settings = ServeSettings()
    published = requests_from_capture(LAB_CAPTURE, ScriptOptions(node="lab"))
    parsed = [parse_request(script.event, settings, 0.0) for script in published]
    return sorted(parsed, key=lambda request: (request.ts[0], request.tie))


def spread(requests: list[Request], nodes: int) -> list[Request]:
    """The requests dealt to `nodes` node names in turn: each node's in first-packet order, the nodes interleaved."""
    return [dataclasses.replace(request, node=f"zeek-{i % nodes:04d}") for i, request in enumerate(requests)]


def answers(outgoing: list[Outgoing]) -> dict[str, Answer]:
    """uid -> its verdict message's topic and arguments (one verdict per uid asserted)."""
    found: dict[str, Answer] = {}
    for item in outgoing:
        message = decode_message(json.loads(item.text))
        event = message.event
        if event is None or event.name != VERDICT_EVENT:
            continue
        uid, label, attack, score, explanation, _ = event.args
        assert uid not in found, f"{uid} answered twice"
        found[uid] = (message.topic, label, attack, score, explanation)
    return found


def reference(bundle_path: Path, batch: list[Request]) -> dict[str, Answer]:
    """The verdicts of one engine call per node and per run of it, nodes in order of first appearance."""
    sidecar = Sidecar(ServeSettings(), Engine(bundle_path))
    by_node: dict[str, list[tuple[Request, Any]]] = {}
    for request in batch:
        connection = sidecar._featurize(request)
        assert not isinstance(connection, str), connection
        by_node.setdefault(request.node, []).append((request, connection))
    outgoing = []
    for node, rows in by_node.items():
        runs: list[list[tuple[Request, Any]]] = []
        for row in rows:
            if not runs or row[1].ts < runs[-1][-1][1].ts:
                runs.append([])
            runs[-1].append(row)
        for run in runs:
            verdicts = sidecar.engine.classify([connection for _, connection in run], sensor=node)
            for (request, _), verdict in zip(run, verdicts, strict=True):
                outgoing += sidecar._answer(node, request, verdict)
    return answers(outgoing)


def differences(found: dict[str, Answer], expected: dict[str, Answer]) -> list[str]:
    assert found.keys() == expected.keys()
    return [
        uid
        for uid, (topic, label, attack, score, explanation) in found.items()
        if (topic, label, attack, explanation) != expected[uid][:3] + expected[uid][4:]
        or abs(score - expected[uid][3]) > 1e-6
    ]


def counted_engine(bundle_path: Path) -> tuple[Engine, list[int]]:
    """An engine that notes the size of each model run (`classify_batch`: encoder, contexts, reasoner)."""
    engine = Engine(bundle_path)
    runs: list[int] = []
    run_batch = engine.classify_batch

    def counted(connections: Any, sensor: Any = "") -> Any:
        runs.append(len(connections))
        return run_batch(connections, sensor)

    engine.classify_batch = counted  # type: ignore[method-assign]
    return engine, runs


def test_a_batch_of_many_nodes_gets_the_verdicts_of_a_call_per_node(
    bundle_path: Path, lab_requests: list[Request]
) -> None:
    batch = spread(lab_requests[:240], 40)
    # two nodes' requests out of first-packet order (requests that arrived after their place): their 2nd and 5th
    # swapped, they fall into three runs each (1st 5th | 3rd 4th | 2nd 6th)
    for node in ("zeek-0003", "zeek-0017"):
        rows = [index for index, request in enumerate(batch) if request.node == node]
        assert batch[rows[1]].ts[0] < batch[rows[4]].ts[0]
        batch[rows[1]], batch[rows[4]] = batch[rows[4]], batch[rows[1]]
    engine, runs = counted_engine(bundle_path)
    sidecar = Sidecar(ServeSettings(), engine)
    outgoing, _ = sidecar.classify_batch(batch)
    found, expected = answers(outgoing), reference(bundle_path, batch)
    different = differences(found, expected)
    assert not different, f"{len(different)} of {len(batch)} verdicts differ: {different[:5]}"
    assert [uid for uid in found] == [request.uid for request in batch]  # answered in the batch's order
    assert all(
        topic == f"packetclip/verdict/{request.node}/"
        for request, (topic, *_) in zip(batch, found.values(), strict=True)
    )
    assert ERROR_LABEL not in {label for _, label, *_ in found.values()}
    # the first run of every node in one call, the two nodes' second runs in another, their third in a third:
    # three model runs where a call per node and run made 44
    assert runs == [232, 4, 4]
    # the comparison can fail: the same batch as one node gets other verdicts
    pooled = [dataclasses.replace(request, node="zeek-0000") for request in batch]
    pooled_found = answers(Sidecar(ServeSettings(), Engine(bundle_path)).classify_batch(pooled)[0])
    assert any(found[uid][1:] != pooled_found[uid][1:] for uid in found)


def test_n_requests_from_n_nodes_are_one_model_run(bundle_path: Path, lab_requests: list[Request]) -> None:
    batch = spread(lab_requests[:200], 200)
    engine, runs = counted_engine(bundle_path)
    outgoing, _ = Sidecar(ServeSettings(), engine).classify_batch(batch)
    assert runs == [200]
    found = answers(outgoing)
    assert not differences(found, reference(bundle_path, batch))


class FailingEngine:
    """The real engine, except that a call holding one of the `poison` uids raises before it reaches it (none:
    every call raises)."""

    def __init__(self, engine: Engine, poison: set[str] | None):
        self.engine = engine
        self.poison = poison
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def classify(self, connections: Any, sensor: Any = "") -> Any:
        self.calls.append([connection.uid for connection in connections])
        if self.poison is None or self.poison & {connection.uid for connection in connections}:
            raise RuntimeError("cannot take this batch")
        return self.engine.classify(connections, sensor)


def test_a_failing_call_answers_every_request_and_costs_other_nodes_nothing(
    bundle_path: Path, lab_requests: list[Request]
) -> None:
    batch = spread(lab_requests[:60], 10)
    poisoned = next(request for request in batch if request.node == "zeek-0003")
    engine = FailingEngine(Engine(bundle_path), {poisoned.uid})
    sidecar = Sidecar(ServeSettings(), engine)
    found = answers(sidecar.classify_batch(batch)[0])
    assert list(found) == [request.uid for request in batch]  # every request answered, once
    # the merged call failed, then each node alone: only the poisoned node's call failed again
    assert len(engine.calls) == 1 + 10 and sidecar.metrics.errors["engine_failed"] == 2
    failed = {request.uid for request in batch if request.node == "zeek-0003"}
    for uid, (_, label, attack, score, explanation) in found.items():
        if uid in failed:
            assert (label, attack, score) == (ERROR_LABEL, ERROR_LABEL, 0.0)
            assert explanation == "engine failed: cannot take this batch"
    others = [request for request in batch if request.uid not in failed]
    expected = reference(bundle_path, others)
    assert not differences({uid: found[uid] for uid in expected}, expected)


def test_an_engine_that_fails_every_call_still_answers_every_request(
    bundle_path: Path, lab_requests: list[Request]
) -> None:
    batch = spread(lab_requests[:30], 6)
    sidecar = Sidecar(ServeSettings(), FailingEngine(Engine(bundle_path), None))
    found = answers(sidecar.classify_batch(batch)[0])
    assert list(found) == [request.uid for request in batch]
    assert {(label, score) for _, label, _, score, _ in found.values()} == {(ERROR_LABEL, 0.0)}
    assert sidecar.metrics.errors["engine_failed"] == 1 + 6  # the merged call, then each node's alone
