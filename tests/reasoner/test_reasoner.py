"""The reasoner: mission-graph propagation, contexts replayed from a split, training, and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES
from packetclip.context import PACKET_FACTS, RESPONDER_FEATURES
from packetclip.missions import load_missions, parse_mission
from packetclip_training.models.encoder import PacketEncoder, load_config
from packetclip_training.models.heads import AlignmentHeads
from packetclip_training.models.reasoner import REASONER_INPUTS, MissionGraphs, Reasoner, ReasonerConfig
from packetclip_training.reasoner.data import build_contexts, embed_split
from packetclip_training.reasoner.fit import fit_reasoner, fraction_rows, training_arrays
from packetclip_training.reasoner.model import (
    TrainConfig,
    concept_targets,
    export_reasoner,
    predict,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
TOY = parse_mission(
    {
        "name": "toy",
        "description": "a toy mission",
        "key_concepts": ["k1", "k2"],
        "associated": {"k1": ["a1", "a2"], "k2": ["a2", "a3"]},
        "edges": [["a1", "a3"]],
        "classes": {"syn_flood": ["k1", "a1"]},
    }
)


def _unit(rows: int, width: int, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def _toy_model() -> Reasoner:
    torch.manual_seed(0)
    graphs = MissionGraphs([TOY], _unit(len(TOY.concepts()), 16))
    return Reasoner(
        ReasonerConfig(
            embed_dim=8, aligned_dim=6, slots=4, temporal_dim=16, temporal_heads=2, temporal_ffn=16, hidden=8
        ),
        graphs,
        torch.nn.Linear(8, 6),
    )


def test_graph_propagation_matches_the_dag_by_hand() -> None:
    model = _toy_model().eval()
    aligned = torch.nn.functional.normalize(torch.randn(3, 6), dim=-1)
    _, activations = model.missions(aligned)
    s = torch.tanh(model.sensor_projection(aligned))
    h0 = torch.tanh(model.concept_projection(model.graphs.concept_text))  # k1 k2 a1 a2 a3
    k1, k2 = s * h0[0], s * h0[1]
    a1 = k1 * h0[2]
    a2 = (k1 + k2) / 2 * h0[3]  # two parents: mean of the messages
    a3 = (k2 + a1) / 2 * h0[4]  # parents k2 and, by the extra edge, a1
    expected = torch.stack([k1, k2, a1, a2, a3], dim=1)
    want = torch.sigmoid(expected @ model.activation_vector + model.activation_bias)
    assert model.graphs.depth == 3
    assert torch.allclose(activations, want, atol=1e-6)
    embedding, _ = model.missions(aligned)
    assert torch.allclose(embedding, (a2 + a3) / 2, atol=1e-6)  # leaves: a2 and a3


def test_concepts_and_targets_follow_the_mission_files() -> None:
    model = _toy_model()
    assert [c["concept"] for c in model.graphs.concepts] == ["k1", "k2", "a1", "a2", "a3"]
    assert [c["kind"] for c in model.graphs.concepts] == [
        "key",
        "key",
        "associated",
        "associated",
        "associated",
    ]
    targets = concept_targets(model.graphs, [TOY], ["benign", "syn_flood"])
    assert targets.tolist() == [[0, 0, 0, 0, 0], [1, 0, 1, 0, 0]]


def test_contexts_hold_only_earlier_connections_of_the_same_originator() -> None:
    columns = {
        "source_file": np.asarray(["f", "f", "f", "g"], object),
        "orig_h": np.asarray(["x", "y", "x", "x"], object),
        "resp_h": np.asarray(["s", "s", "t", "s"], object),
        "orig_p": np.asarray([40000, 40001, 40002, 40003]),
        "resp_p": np.asarray([80, 80, 443, 80]),
        "proto": np.asarray(["tcp"] * 4, object),
        "ts": np.asarray([3.0, 1.0, 2.0, 0.5]),  # replay order: row 3 (other file), 1, 2, 0
    }
    offsets = np.asarray([0, 2, 3, 4, 5])  # row 0 has two packets
    times = np.asarray([[3.0, 3.1], [1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    direction = np.asarray([[1, 0], [1, 0], [1, 0], [1, 0]], np.int8)
    facts = np.arange(5 * len(PACKET_FACTS), dtype=np.float32).reshape(5, len(PACKET_FACTS))
    index, features, valid, responder, previous = build_contexts(
        columns, offsets, times, direction, facts, slots=3
    )
    assert previous.tolist() == [2, -1, -1, -1]  # x in f: row 2 came before row 0; g is another capture
    assert valid.sum(axis=1).tolist() == [1, 0, 0, 0]
    assert index[0, 0] == 1 + offsets[2]  # row 2's packet (table row 0 is the empty slot)
    assert features[0, 0, 1] == 0.0 and features[0, 0, 2] == 0.0  # other responder, other port
    assert features[0, 0, 5:].tolist() == facts[offsets[2]].tolist()  # and row 2's packet's own facts
    # responder s of file f: row 1 (y, at 1.0) came before row 0 (x, at 3.0); row 3 is another capture's s
    assert responder[[1, 2, 3]].tolist() == np.zeros((3, len(RESPONDER_FEATURES))).tolist()
    seen = dict(zip(RESPONDER_FEATURES, responder[0].tolist(), strict=True))
    assert seen["victim_source_share"] == 1.0 and seen["victim_same_originator"] == 0.0
    assert (
        seen["victim_unanswered"] == 1.0 and seen["victim_single_packet"] == 1.0
    )  # y's one packet, no reply


def test_fraction_rows_is_stratified() -> None:
    labels = np.asarray(["a"] * 100 + ["b"] * 10 + ["c"])
    rows = fraction_rows(labels, 0.1, seed=0)
    picked = labels[rows]
    assert (picked == "a").sum() == 10 and (picked == "b").sum() == 1 and (picked == "c").sum() == 1


@pytest.fixture(scope="module")
def sample_splits():
    torch.manual_seed(0)
    encoder = PacketEncoder(load_config("tiny")).eval()
    return {split: embed_split(encoder, SAMPLE, split) for split in ("train", "val", "test")}


def _fit(splits, classes=FINE_CLASSES, epochs: int = 3, context_payload: bool = False):
    missions = load_missions()
    concepts = sum(len(m.concepts()) for m in missions)
    heads = AlignmentHeads(32, 384, "both")
    config = TrainConfig(epochs=epochs, max_per_class=200, min_per_class=60, learning_rate=3e-3)
    architecture = ReasonerConfig(embed_dim=32, aligned_dim=256, context_payload=context_payload)
    return fit_reasoner(
        splits["train"], splits["val"], heads, missions, _unit(concepts, 256), config, architecture, classes
    )


def test_training_learns_the_sample(sample_splits) -> None:
    torch.set_num_threads(1)
    result = _fit(sample_splits)
    first, last = result.curve[0], result.curve[-1]
    assert last["coarse_loss"] < first["coarse_loss"]
    coarse, fine, concepts, aligned = predict(
        result.model, training_arrays(sample_splits["test"], FINE_CLASSES)
    )
    assert coarse.shape == (len(sample_splits["test"]), len(COARSE_CLASSES))
    assert np.allclose(coarse.sum(axis=1), 1.0, atol=1e-5) and np.allclose(fine.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(aligned, axis=1), 1.0, atol=1e-5)
    assert ((concepts > 0) & (concepts < 1)).all()
    assert last["coarse_mauc"] > 0.6  # a random reasoner sits at 0.5


def test_an_unseen_class_is_never_a_training_target(sample_splits) -> None:
    classes = [c for c in FINE_CLASSES if c != "port_scan"]
    arrays = training_arrays(sample_splits["train"], classes)
    port_scan = np.asarray([str(v) == "port_scan" for v in sample_splits["train"].columns["fine"]])
    assert port_scan.any() and (arrays.fine[port_scan] == -1).all()
    result = _fit(sample_splits, classes, epochs=1)
    assert result.train_rows == int((~port_scan).sum())


@pytest.mark.parametrize("context_payload", [False, True])
def test_onnx_export_matches_torch(sample_splits, tmp_path: Path, context_payload: bool) -> None:
    import onnxruntime as ort

    result = _fit(sample_splits, epochs=1, context_payload=context_payload)
    arrays = training_arrays(sample_splits["test"], FINE_CLASSES)
    rows = np.arange(6)
    context, features, valid, responder = arrays.context(rows)
    inputs = dict(
        zip(REASONER_INPUTS, (arrays.connection[rows], context, features, valid, responder), strict=True)
    )
    expected = export_reasoner(result.model, tmp_path / "reasoner.onnx", inputs)
    session = ort.InferenceSession(str(tmp_path / "reasoner.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == [n for n in REASONER_INPUTS if context_payload or n != "context"]
    batch = {name: inputs[name][:3] for name in names}  # another batch size than the export's
    for name, got in zip(expected, session.run(list(expected), batch), strict=True):
        assert np.abs(got - expected[name][:3]).max() < 1e-4, name


def test_behaviour_dropout_hides_embeddings_of_some_rows_only() -> None:
    from packetclip_training.reasoner.model import behaviour_dropout

    rng = np.random.default_rng(0)
    inputs = (
        torch.ones(200, 4),
        torch.ones(200, 3, 4),
        torch.ones(200, 3, 5),
        torch.ones(200, 3, dtype=torch.bool),
    )
    connection, context, features, valid = behaviour_dropout(inputs, 0.5, rng)
    hidden = connection.sum(dim=1) == 0
    assert 60 < int(hidden.sum()) < 140  # about half
    assert (context[hidden] == 0).all() and (context[~hidden] == 1).all()
    assert (features == 1).all() and valid.all()  # timing and responder features always stay
    assert behaviour_dropout(inputs, 0.0, rng) is inputs


def test_rate_jitter_touches_only_the_responder_rate_of_full_windows() -> None:
    from packetclip.context import RESPONDER_FEATURES
    from packetclip_training.reasoner.model import TrainConfig, rate_jitter

    responder = np.full((300, len(RESPONDER_FEATURES)), 0.5, np.float32)
    responder[:200, RESPONDER_FEATURES.index("victim_log_connections")] = 1.0  # full windows
    inputs = (torch.ones(300, 4), torch.ones(300, 3, 4), torch.from_numpy(responder))
    connection, context, after = rate_jitter(inputs, TrainConfig(rate_jitter=1.0), np.random.default_rng(0))
    changed = (after.numpy() != responder).any(axis=0)
    assert changed.tolist() == [name == "victim_log_rate" for name in RESPONDER_FEATURES]
    assert (after.numpy()[200:] == responder[200:]).all() and connection is inputs[0] and context is inputs[1]
    assert rate_jitter(inputs, TrainConfig(rate_jitter=0.0), np.random.default_rng(0)) is inputs


def test_a_block_computing_only_its_first_tokens_matches_the_full_block() -> None:
    from packetclip_training.models.encoder import Block

    torch.manual_seed(3)
    block = Block(32, 4, 64).eval()
    tokens = torch.randn(6, 9, 32)
    key_bias = torch.zeros(6, 1, 1, 9)
    key_bias[:3, ..., 5:] = -1.0e9  # some rows with padding keys
    full = block(tokens, key_bias)
    for queries in (1, 4):
        part = block(tokens, key_bias, queries=queries)
        assert part.shape == (6, queries, 32)
        torch.testing.assert_close(part, full[:, :queries], rtol=0, atol=1e-5)


def test_replay_order_breaks_first_packet_ties_as_the_sensor_paths_do() -> None:
    """Training replays a split in the order `classify` and the sidecars hand connections to the engine: by
    first-packet time, ties by `endpoint_tie` (never by the dataset's row order)."""
    from packetclip.ordering import FirstPacketOrder, endpoint_tie
    from packetclip_training.reasoner.data import replay_order

    rows = [  # (ts, orig_h, orig_p, resp_h, resp_p, proto, uid)
        (2.0, "10.0.0.9", 1000, "10.0.0.1", 80, "tcp", "Cb"),
        (1.0, "10.0.0.10", 5, "10.0.0.1", 80, "tcp", "Cc"),
        (1.0, "10.0.0.9", 7, "10.0.0.1", 80, "udp", "Cd"),
        (1.0, "10.0.0.9", 7, "10.0.0.1", 80, "tcp", "Ce"),
        (1.0, "::1", 7, "::2", 80, "tcp", "Cf"),
        (0.5, "10.0.0.200", 7, "10.0.0.1", 80, "tcp", "Cg"),
        (1.0, "10.0.0.9", 7, "10.0.0.1", 80, "tcp", "Ca"),  # one 5-tuple twice at one time: the uid decides
    ]
    columns = {
        name: np.array([row[i] for row in rows], dtype=object if i not in (0,) else np.float64)
        for i, name in enumerate(("ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "uid"))
    }
    order = [rows[i][6] for i in replay_order(columns)]
    # 10.0.0.9 sorts before 10.0.0.10 by address, not by text; IPv4 before IPv6; tcp before udp
    assert order == ["Cg", "Ca", "Ce", "Cd", "Cc", "Cf", "Cb"]
    sensor = FirstPacketOrder(lambda row: row[0], tie=lambda row: endpoint_tie(*row[1:]))
    sensor.push(rows[::-1])
    assert [row[6] for row in sensor.drain()] == order
    assert [rows[i][6] for i in replay_order({k: v for k, v in columns.items() if k != "uid"})][:3] == [
        "Cg",
        "Ce",
        "Ca",
    ]


def test_epoch_rows_draw_a_share_of_each_class_from_real_captures() -> None:
    from packetclip_training.reasoner.model import TrainConfig, epoch_rows

    # class 0: 1,000 lab rows and 20 real ones; class 1: 300 lab rows only
    fine = np.array([0] * 1020 + [1] * 300)
    real = np.zeros(len(fine), bool)
    real[1000:1020] = True
    config = TrainConfig(max_per_class=500, min_per_class=100)
    plain = epoch_rows(fine, config, np.random.default_rng(0), real)
    assert (fine[plain] == 0).sum() == 500 and (fine[plain] == 1).sum() == 300
    assert np.array_equal(plain, epoch_rows(fine, config, np.random.default_rng(0)))  # off: real is ignored
    config.real_share = 0.1
    rows = epoch_rows(fine, config, np.random.default_rng(0), real)
    assert (fine[rows] == 0).sum() == 500 and (fine[rows] == 1).sum() == 300  # the same number per class
    assert real[rows].sum() == 50  # 10 % of class 0's 500, from its 20 real rows (with replacement)
    config.real_share = 0.5
    rows = epoch_rows(fine, config, np.random.default_rng(0), real)
    assert real[rows].sum() == 80 and (fine[rows] == 0).sum() == 500  # capped at real_repeats (4) × 20 rows


@pytest.mark.parametrize("view", ["both", "originator"])
def test_embedding_a_split_in_chunks_equals_embedding_it_whole(view) -> None:
    torch.manual_seed(0)
    encoder = PacketEncoder(load_config("tiny")).eval()
    whole = embed_split(encoder, SAMPLE, "val", batch_size=64, view=view, rows=1_000_000)
    chunked = embed_split(encoder, SAMPLE, "val", batch_size=64, view=view, rows=128)
    assert len(whole) > 2 * 128  # at least three chunks
    for name in ("connection", "packets", "offsets", "context_index", "context_features", "context_valid"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(chunked.responder_features, whole.responder_features)
    np.testing.assert_array_equal(chunked.previous, whole.previous)
    for name, values in whole.columns.items():
        np.testing.assert_array_equal(chunked.columns[name], values, err_msg=name)


def test_tool_invariance_draws_are_the_same_every_time() -> None:
    torch.manual_seed(0)
    encoder = PacketEncoder(load_config("tiny")).eval()
    plain = embed_split(encoder, SAMPLE, "val", rows=128)
    first, second = (embed_split(encoder, SAMPLE, "val", tool_invariance=0.5, rows=128) for _ in range(2))
    np.testing.assert_array_equal(first.connection, second.connection)
    changed = np.any(first.connection != plain.connection, axis=1)
    assert 0 < changed.sum() < len(changed)
