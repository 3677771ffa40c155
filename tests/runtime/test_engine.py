"""The engine: contexts exactly as training replays them, verdict fields per the contract, the embedding cache
(hits only for inputs the encoder would see identically) and hot reload.

The bundle is the embedded default when it exists, otherwise tiny models trained on the committed dataset sample
and exported the way `tests/export/test_export_bundle.py` does (built once per test session, shared by tests/runtime).
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import packetclip.engine as engine_module
from packetclip.bundle import BundleError, default_bundle_path, load_bundle
from packetclip.classes import FINE_TO_COARSE
from packetclip.context import RESPONDER_FEATURES
from packetclip.engine import PACKET_BUCKETS, EmbeddingCache, Engine, Verdict, session_options
from packetclip.featurizer import Connection, featurize_pcap
from tests.support import export_tiny_bundles

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "dataset-default"
LAB_CAPTURE = REPO / "samples" / "lab-quick" / "capture.pcap"


def runtime_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default bundle, else a tiny exported one (built once per session)."""
    if (default_bundle_path() / "manifest.json").is_file():
        return default_bundle_path()
    built = tmp_path_factory.getbasetemp() / "runtime-bundle" / "bundle-default"
    if (built / "manifest.json").is_file():
        return built
    return export_tiny_bundles(built.parent)[0]


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def payload_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle like those before 2026.11.28: its reasoner also reads the context packets' embeddings (the
    `context` input) and only the five where-and-when context features, none of the packet facts, and no
    responder features."""
    return export_tiny_bundles(
        tmp_path_factory.mktemp("payload-bundle"),
        context_payload=True,
        context_features=5,
        responder_features=0,
    )[0]


@pytest.fixture(scope="module")
def responder_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle whose reasoner reads the responder features (the `responder_features` input)."""
    return export_tiny_bundles(tmp_path_factory.mktemp("responder-bundle"))[0]


@pytest.fixture(scope="module")
def lab_connections() -> list[Connection]:
    return list(featurize_pcap(LAB_CAPTURE))


def split_connections(split: str) -> tuple[list[Connection], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A dataset split as runtime `Connection`s (packet times rebuilt the way training rebuilds them)."""
    from packetclip_training.dataset import load_split
    from packetclip_training.reasoner.data import CONTEXT_COLUMNS, packet_times

    arrays = load_split(SAMPLE, split, columns=(*CONTEXT_COLUMNS, "uid"))
    columns = {name: arrays.pop(name) for name in (*CONTEXT_COLUMNS, "uid")}
    times = packet_times(columns["ts"], arrays["iat"])
    counts = arrays["valid"].sum(axis=1)
    connections = []
    for row, n in enumerate(counts.tolist()):
        connections.append(
            Connection(
                uid=str(columns["uid"][row]),
                ts=float(columns["ts"][row]),
                last_ts=float(times[row, max(n - 1, 0)]),
                proto=str(columns["proto"][row]),
                orig_h=str(columns["orig_h"][row]),
                orig_p=int(columns["orig_p"][row]),
                resp_h=str(columns["resp_h"][row]),
                resp_p=int(columns["resp_p"][row]),
                ip_version=4,
                vlan=None,
                community_id="",
                pkt_ts=times[row, :n].copy(),
                pkt_dir=arrays["direction"][row, :n].copy(),
                pkt_len=arrays["length"][row, :n].copy(),
                pkt_bytes=arrays["bytes"][row, :n].copy(),
            )
        )
    return connections, columns, arrays


@pytest.mark.parametrize("which", ["runtime", "payload", "responder"])
def test_contexts_match_the_training_replay_of_a_split(which: str, request: pytest.FixtureRequest) -> None:
    """The runtime, fed a split file by file in micro-batches, builds the contexts and responder features
    `build_contexts` builds (with the context packets' embeddings when the reasoner reads them)."""
    from packetclip.context import valid_packet_facts
    from packetclip_training.reasoner.data import build_contexts, packet_times, replay_order

    connections, columns, arrays = split_connections("test")
    fixture = {
        "runtime": "bundle_path",
        "payload": "payload_bundle_path",
        "responder": "responder_bundle_path",
    }
    engine = Engine(request.getfixturevalue(fixture[which]), cache_size=0)
    if which == "responder":
        read = engine._models.responder_columns
        assert read is not None and read.tolist() == list(range(len(RESPONDER_FEATURES)))
    if which == "payload":
        read = engine._models.context_columns
        assert engine._models.reads_context and read is not None and read.tolist() == [0, 1, 2, 3, 4]
    sources = columns["source_file"]
    embed_dim = engine._models.embed_dim
    slots, width = engine.history.slots, engine.history.payload_width
    assert width == (embed_dim if engine._models.reads_context else 0)
    runtime_context = np.zeros((len(connections), slots, width), np.float32)
    runtime_features = np.zeros((len(connections), slots, len(engine.bundle.context_features)), np.float32)
    runtime_valid = np.zeros((len(connections), slots), bool)
    runtime_responder = np.zeros((len(connections), len(RESPONDER_FEATURES)), np.float32)
    packet_rows = np.zeros((len(connections), arrays["valid"].shape[1], embed_dim), np.float32)
    row_of = {conn.uid: row for row, conn in enumerate(connections)}
    assert len(row_of) == len(connections)
    for source in sorted(set(sources.tolist())):
        # in first-packet order, ties by endpoint_tie: as every sensor path hands connections to the engine
        rows = [r for r in replay_order(columns).tolist() if sources[r] == source]
        for start in range(0, len(rows), 16):  # several micro-batches: the history must carry across them
            result = engine.infer_batch(
                [connections[r] for r in rows[start : start + 16]], sensor=str(source)
            )
            for i, conn in enumerate(result.connections):
                row = row_of[conn.uid]
                runtime_context[row] = result.context[i]
                runtime_features[row] = result.context_features[i]
                runtime_valid[row] = result.context_valid[i]
                runtime_responder[row] = result.responder_features[i]
                packet_rows[row] = result.packet_embeddings[i]
    counts = arrays["valid"].sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    table = np.concatenate([np.zeros((1, embed_dim), np.float32), packet_rows[arrays["valid"]]])
    index, features, valid, responder, _ = build_contexts(
        columns,
        offsets,
        packet_times(columns["ts"], arrays["iat"]),
        arrays["direction"],
        valid_packet_facts(arrays),
        slots,
    )
    assert valid.sum() > len(connections)  # the split really has originators with history
    np.testing.assert_array_equal(runtime_valid, valid)
    np.testing.assert_array_equal(runtime_context, table[index][..., :width])
    np.testing.assert_array_equal(
        runtime_features.astype(np.float16),
        features if engine._models.context_columns is None else features[..., engine._models.context_columns],
    )
    assert (responder[:, 0] > 0).sum() > len(connections) // 2  # most responders had earlier connections
    np.testing.assert_array_equal(runtime_responder.astype(np.float16), responder)


def test_verdicts_follow_the_contract(bundle_path: Path, lab_connections: list[Connection]) -> None:
    engine = Engine(bundle_path, batch_size=64)
    shuffled = lab_connections[::-1]  # not in time order: verdicts still come back in the order given
    verdicts = engine.classify(shuffled, sensor="capture.pcap")
    bundle = load_bundle(bundle_path)
    assert [v.uid for v in verdicts] == [c.uid for c in shuffled]
    for verdict, conn in zip(verdicts, shuffled, strict=True):
        assert (verdict.ts, verdict.orig_h, verdict.resp_p, verdict.proto) == (
            conn.ts,
            conn.orig_h,
            conn.resp_p,
            conn.proto,
        )
        assert list(verdict.scores) == list(bundle.coarse_classes)
        assert abs(sum(verdict.scores.values()) - 1.0) < 1e-9
        # the bundle's decision rule: at its operating point an attack only when 1 - P(benign) reaches it, and then
        # the most likely attack class; without one the most likely class
        scores = verdict.scores
        attack = max((k for k in scores if k != "benign"), key=lambda name: scores[name])
        if bundle.attack_threshold is None:
            assert verdict.label == max(scores, key=lambda name: scores[name])
        else:
            flagged = 1.0 - scores["benign"] >= bundle.attack_threshold
            assert verdict.label == (attack if flagged else "benign")
        assert verdict.score == verdict.scores[verdict.label]
        assert FINE_TO_COARSE[verdict.attack] == verdict.label
        own = {k: p for k, p in verdict.fine_scores.items() if FINE_TO_COARSE[k] == verdict.label}
        assert verdict.attack == max(own, key=lambda name: own[name])  # best fine class *of the label*
        assert verdict.model == bundle.version
        assert verdict.explanation.strip()
        assert 0 < len(verdict.concepts) <= 3
        assert all(mission == verdict.label for mission, _, _ in verdict.concepts)
        activations = [a for _, _, a in verdict.concepts]
        assert activations == sorted(activations, reverse=True)


def test_the_cache_serves_identical_inputs_only(bundle_path: Path, lab_connections: list[Connection]) -> None:
    """Same bytes, directions, lengths and gaps (another time, another host): a hit with the same embedding.
    The same bytes with one gap changed: a miss, because the encoder reads the gaps."""
    conn = max(lab_connections, key=lambda c: len(c.pkt_ts))
    shifted = replace(conn, uid="Cshifted", ts=conn.ts + 100.0, pkt_ts=conn.pkt_ts + 100.0, orig_h="10.9.9.9")
    retimed_ts = conn.pkt_ts.copy()
    retimed_ts[2:] += 0.5
    retimed = replace(conn, uid="Cretimed", ts=conn.ts + 200.0, pkt_ts=retimed_ts + 200.0, orig_h="10.9.9.8")
    cached = Engine(bundle_path, cache_size=16)
    first = cached.infer_batch([conn], "s")
    assert (cached.cache.hits, cached.cache.misses) == (0, 1)
    again = cached.infer_batch([shifted], "s")
    assert (cached.cache.hits, cached.cache.misses) == (1, 1)
    np.testing.assert_array_equal(again.connection_embedding, first.connection_embedding)
    other = cached.infer_batch([retimed], "s")
    assert (cached.cache.hits, cached.cache.misses) == (1, 2)
    fresh = Engine(bundle_path, cache_size=0).infer_batch([retimed], "s")
    np.testing.assert_allclose(other.connection_embedding, fresh.connection_embedding, atol=1e-6)
    assert np.abs(other.connection_embedding - first.connection_embedding).max() > 1e-6


def test_cached_and_uncached_engines_agree(bundle_path: Path, lab_connections: list[Connection]) -> None:
    doubled = lab_connections + [
        replace(c, uid=c.uid + "x", ts=c.ts + 1e4, pkt_ts=c.pkt_ts + 1e4) for c in lab_connections
    ]
    with_cache = Engine(bundle_path, cache_size=4096).classify(doubled, "s")
    without = Engine(bundle_path, cache_size=0).classify(doubled, "s")
    for a, b in zip(with_cache, without, strict=True):
        assert a.label == b.label and abs(a.score - b.score) < 1e-5


class _RecordingSession:
    """An onnxruntime session that notes the batch shape of every call."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> Any:
        self.shapes.append(feed["bytes"].shape[:2])
        return self.session.run(outputs, feed)


def test_grouping_and_splitting_encoder_calls_changes_no_embedding(
    payload_bundle_path: Path, lab_connections: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encoder with a dynamic packet axis is run on groups of connections cut to their longest, each group in
    calls of at most ENCODER_CALL_SLOTS packet slots; the embeddings are those of the whole padded batch in one
    call (the lab capture has connections of 1 to 30 packets)."""
    grouped = Engine(payload_bundle_path, cache_size=0)
    assert grouped._models.cuts_packets
    recorder = _RecordingSession(grouped._models.encoder)
    grouped._models = replace(grouped._models, encoder=recorder)
    whole = Engine(payload_bundle_path, cache_size=0)
    whole._models = replace(whole._models, cuts_packets=False)
    batch = lab_connections[:256]
    counts = {min(len(c.pkt_ts), 30) for c in batch}
    assert min(counts) <= 2 and max(counts) > 16  # every group is used
    monkeypatch.setattr(engine_module, "ENCODER_CALL_SLOTS", 64)
    a = grouped.infer_batch(batch)
    assert len(recorder.shapes) > len(PACKET_BUCKETS) + 1  # groups were split
    assert all(rows * packets <= 64 or rows == 1 for rows, packets in recorder.shapes)
    assert sum(rows for rows, _ in recorder.shapes) == len(batch)
    monkeypatch.setattr(engine_module, "ENCODER_CALL_SLOTS", 1 << 30)
    b = whole.infer_batch(batch)
    np.testing.assert_allclose(a.packet_embeddings, b.packet_embeddings, atol=1e-5)
    np.testing.assert_allclose(a.connection_embedding, b.connection_embedding, atol=1e-5)
    for name, value in a.outputs.items():
        np.testing.assert_allclose(value, b.outputs[name], atol=1e-5)


def test_cache_is_a_bounded_lru(bundle_path: Path, lab_connections: list[Connection]) -> None:
    engine = Engine(bundle_path, cache_size=8)
    engine.classify(lab_connections[:40], "s")
    assert len(engine.cache) == 8


def test_reload_swaps_between_batches_and_refuses_a_bad_bundle(
    bundle_path: Path, lab_connections: list[Connection], tmp_path: Path
) -> None:
    engine = Engine(bundle_path, batch_size=32)
    before = engine.classify(lab_connections[:64], "s")
    history = engine.history
    engine.reload(bundle_path)  # the same encoder: contexts and cache carry on
    assert engine.history is history
    with pytest.raises(BundleError):
        engine.reload(tmp_path / "missing")
    assert engine.classify(lab_connections[:1], "t")[0].model == before[0].model  # still serving

    errors: list[BaseException] = []

    def keep_classifying() -> None:
        try:
            for _ in range(5):
                engine.classify(lab_connections[:64], "s")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=keep_classifying)
    worker.start()
    for _ in range(3):
        engine.reload(load_bundle(bundle_path))
    worker.join()
    assert not errors


def test_sessions_run_with_explicit_threads() -> None:
    import onnxruntime as ort

    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_a_bundle_naming_context_features_this_runtime_lacks_is_refused(
    bundle_path: Path, tmp_path: Path
) -> None:
    """A bundle from a newer trainer whose reasoner reads a context feature this runtime cannot compute fails to
    load with the names, instead of being fed something else."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["context"]["features"] = [*manifest["context"]["features"][:-1], "ttl"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"ttl.*this runtime knows"):
        Engine(copy)


def test_a_cache_that_does_not_pay_turns_dormant_and_a_probe_that_hits_wakes_it() -> None:
    cache = EmbeddingCache(capacity=64)
    cache.TRIAL_LOOKUPS = 100
    for _ in range(4):  # 100 lookups, no hit
        assert cache.use_for_batch(25)
        cache.account(25, 0)
    assert cache.dormant
    looked_up = [cache.use_for_batch(25) for _ in range(2 * cache.PROBE_EVERY)]
    assert looked_up.count(True) == 2 and looked_up[cache.PROBE_EVERY - 1]  # one probe batch in PROBE_EVERY
    assert cache.skipped == 2 * (cache.PROBE_EVERY - 1) * 25
    cache.account(25, 1)  # a probe with 4 % hits
    assert not cache.dormant and cache.use_for_batch(25)
    measuring = EmbeddingCache(capacity=64, rounded_iat_ms=1.0)  # the benchmark's counter never sleeps
    measuring.TRIAL_LOOKUPS = 10
    measuring.account(10, 0)
    assert not measuring.dormant and measuring.use_for_batch(10)
    assert not EmbeddingCache(capacity=0).use_for_batch(10)


def test_a_dormant_cache_changes_no_verdict(bundle_path: Path, lab_connections: list[Connection]) -> None:
    dormant = Engine(bundle_path, cache_size=4096)
    dormant.cache.TRIAL_LOOKUPS = 1
    dormant.cache.PROBE_EVERY = 3
    verdicts = dormant.classify(lab_connections, "s")
    assert dormant.cache.skipped > 0
    without = Engine(bundle_path, cache_size=0).classify(lab_connections, "s")
    for a, b in zip(verdicts, without, strict=True):
        assert a.label == b.label and a.attack == b.attack and abs(a.score - b.score) < 1e-5


def test_numpy_blas_keeps_to_the_engines_thread_count(
    bundle_path: Path, lab_connections: list[Connection]
) -> None:
    """Explanations rank descriptions with numpy matrix products: BLAS must not take more cores than the engine
    was given (OpenBLAS would use every core and leave them spinning)."""
    from threadpoolctl import threadpool_info

    engine = Engine(bundle_path, threads=1)
    seen: list[int] = []
    explainer = engine._models.explainer
    explain_batch = explainer.explain_batch

    def watched(*args: Any) -> list[str]:
        seen.extend(blas_threads())
        return explain_batch(*args)

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    explainer.explain_batch = watched  # type: ignore[method-assign]
    before = blas_threads()
    engine.classify(lab_connections[:64], "s")
    assert seen and set(seen) == {1}
    assert blas_threads() == before  # the host's setting is back


def test_decide_follows_the_operating_point() -> None:
    from packetclip.engine import decide

    coarse = np.array([[0.6, 0.3, 0.1, 0.0], [0.2, 0.1, 0.5, 0.2], [0.05, 0.5, 0.4, 0.05]])
    assert decide(coarse, 0, None).tolist() == [0, 2, 1]  # argmax
    assert decide(coarse, 0, 0.35).tolist() == [1, 2, 1]  # row 0: 1 - P(benign) = 0.4 reaches 0.35: dos
    assert decide(coarse, 0, 0.5).tolist() == [0, 2, 1]  # 0.4 does not reach 0.5: benign
    assert decide(coarse, 0, 0.9).tolist() == [0, 0, 1]  # 0.8 does not reach 0.9: benign
    assert decide(coarse, -1, 0.9).tolist() == [0, 2, 1]  # no benign class: argmax


def test_a_bundle_with_an_operating_point_labels_by_it(
    bundle_path: Path, lab_connections: list[Connection], tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    strict, lenient = dict(manifest), dict(manifest)
    strict["decision"] = {"attack_threshold": 1.0}
    (copy / "manifest.json").write_text(json.dumps(strict))
    verdicts = Engine(copy).classify(lab_connections, sensor="lab")
    argmax = Engine(bundle_path).classify(lab_connections, sensor="lab")
    assert Engine(copy).attack_threshold == 1.0
    # only a connection with P(benign) = 0 could be an attack at 1.0; every other verdict turns benign
    assert all(v.label == "benign" or v.scores["benign"] == 0.0 for v in verdicts)
    assert sum(v.label != "benign" for v in argmax) > sum(v.label != "benign" for v in verdicts)
    assert [v.scores for v in verdicts] == [v.scores for v in argmax]  # the scores never change
    lenient["decision"] = {"attack_threshold": 0.0}
    (copy / "manifest.json").write_text(json.dumps(lenient))
    with pytest.raises(BundleError, match="attack_threshold"):
        Engine(copy)


# --- several sensors in one call --------------------------------------------------------------------------------


def same_verdict(a: Verdict, b: Verdict) -> bool:
    """Label, attack, explanation and concepts exactly; probabilities within 1e-6 (a model run over more rows may
    round its last float32 bit differently)."""
    return (
        (a.uid, a.label, a.attack, a.explanation, a.allowed)
        == (b.uid, b.label, b.attack, b.explanation, b.allowed)
        and [(m, c) for m, c, _ in a.concepts] == [(m, c) for m, c, _ in b.concepts]
        and abs(a.score - b.score) <= 1e-6
        and all(abs(a.scores[k] - b.scores[k]) <= 1e-6 for k in a.scores)
        and all(abs(a.fine_scores[k] - b.fine_scores[k]) <= 1e-6 for k in a.fine_scores)
    )


def per_sensor_calls(
    engine: Engine, named: list[tuple[str, Connection]], sensors: list[str]
) -> list[Verdict]:
    """The verdicts of one call per sensor, sensor after sensor in the order given, in the order of `named`."""
    by_uid = {}
    for sensor in sensors:
        for verdict in engine.classify([conn for name, conn in named if name == sensor], sensor=sensor):
            by_uid[verdict.uid] = verdict
    return [by_uid[conn.uid] for _, conn in named]


@pytest.mark.parametrize("max_originators", [10_000, 8])
def test_one_call_for_several_sensors_gives_the_verdicts_of_a_call_per_sensor(
    bundle_path: Path, lab_connections: list[Connection], max_originators: int
) -> None:
    """One sensor name per connection (as `packetclip serve` batches many Zeek nodes): every connection gets the
    verdict that one call per sensor, in the order the sensors first appear, gives it, in one model run per
    micro-batch instead of one per sensor. The sensors' connections come interleaved and out of first-packet
    order. With room for only 8 originators the memory shared by all sensors evicts: the walk must then take the
    sensors one after another, as separate calls do, not interleaved."""
    assert len({conn.uid for conn in lab_connections}) == len(lab_connections)
    names = ["node-a", "node-b", "node-c"]
    named = [(names[i % 3], conn) for i, conn in enumerate(lab_connections)][::-1]
    appearance = list(dict.fromkeys(name for name, _ in named))

    def fresh() -> Engine:
        return Engine(bundle_path, batch_size=64, max_originators=max_originators)

    merged = fresh()
    calls: list[int] = []
    run_batch = merged.classify_batch

    def counted(connections: Any, sensor: Any = "") -> Any:
        calls.append(len(connections))
        return run_batch(connections, sensor)

    merged.classify_batch = counted  # type: ignore[method-assign]
    verdicts = merged.classify([conn for _, conn in named], sensor=[name for name, _ in named])
    reference = per_sensor_calls(fresh(), named, appearance)
    assert [v.uid for v in verdicts] == [conn.uid for _, conn in named]
    different = [v.uid for v, r in zip(verdicts, reference, strict=True) if not same_verdict(v, r)]
    assert not different, f"{len(different)} verdicts differ from one call per sensor: {different[:5]}"
    assert len(calls) == -(-len(named) // 64)  # micro-batches of the whole list, not of each sensor
    # the comparison can fail: the sensor names decide contexts and explanations ...
    pooled = fresh().classify([conn for _, conn in named], sensor="one")
    assert any(not same_verdict(v, r) for v, r in zip(pooled, reference, strict=True))
    if max_originators < 10_000:
        # ... and, once originators are evicted, so does the walk: the sensors' connections one at a time in
        # first-packet order, interleaved, evict other originators than sensor after sensor does
        assert merged.history.evicted > 0
        interleaved = fresh()
        by_uid = {}
        for name, conn in sorted(named, key=lambda item: item[1].ts):
            by_uid[conn.uid] = interleaved.classify([conn], sensor=name)[0]
        walked = [by_uid[conn.uid] for _, conn in named]
        assert any(not same_verdict(v, r) for v, r in zip(walked, reference, strict=True))


def test_a_batch_of_several_sensors_keeps_each_rows_sensor(
    bundle_path: Path, lab_connections: list[Connection]
) -> None:
    """A micro-batch's rows carry their own sensor names, in walk order, and a batch cut by sensor keeps rows
    whole: what an input store writes for each sensor."""
    connections = lab_connections[:40]
    sensors = ["b" if i % 4 else "a" for i in range(len(connections))]
    inference = Engine(bundle_path).infer_batch(connections, sensors)
    assert inference.sensor == "" and inference.sensors == ["a"] * 10 + ["b"] * 30
    assert {conn.uid for conn in inference.connections[:10]} == {conn.uid for conn in connections[::4]}
    for start, end in ((0, 10), (10, 40)):  # each sensor's rows in first-packet order
        times = [conn.ts for conn in inference.connections[start:end]]
        assert times == sorted(times)
    parts = inference.by_sensor()
    assert [part.sensor for _, part in parts] == ["a", "b"]
    for rows, part in parts:
        assert part.connections == [inference.connections[row] for row in rows]
        np.testing.assert_array_equal(part.connection_embedding, inference.connection_embedding[rows])
        np.testing.assert_array_equal(part.packed["bytes"], inference.packed["bytes"][rows])
        np.testing.assert_array_equal(part.outputs["coarse"], inference.outputs["coarse"][rows])
    single = Engine(bundle_path).infer_batch(connections, "a")
    assert single.sensor == "a" and single.by_sensor()[0][1] is single
    with pytest.raises(ValueError, match="sensor names"):
        Engine(bundle_path).classify(connections, sensor=["a"])
