"""The efficiency comparison: ET-BERT's architecture is counted and exported right, and the side-by-side
measurement times pipelines of ONNX sessions fairly and reports them in the table's shape."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from packetclip_training.dataset import load_split
from packetclip_training.evaluation.efficiency import (
    Candidate,
    compare_with_etbert,
    efficiency_result,
    efficiency_rows,
    etbert_candidate,
    markdown_table,
    measure,
    pipeline_candidate,
    single_thread_session,
    split_batches,
)
from packetclip_training.export.encoder import INPUT_NAMES, ONNX_NAME, export_encoder
from packetclip_training.models.encoder import PacketEncoder, load_config, save_checkpoint
from packetclip_training.models.etbert import (
    EtBertConfig,
    build_etbert,
    export_etbert,
    flops_per_sample,
    parameter_count,
    random_tokens,
)
from packetclip_training.models.flops import encoder_cost

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
TINY = EtBertConfig(
    name="tiny", vocab_size=300, max_positions=40, hidden=64, heads=4, ffn=128, layers=2, seq_length=32
)


def _torch_inputs(tokens: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(tokens["input_ids"]), torch.from_numpy(tokens["attention_mask"])


def test_tiny_parameter_count_is_torchs():
    assert parameter_count(TINY) == sum(p.numel() for p in build_etbert(TINY).parameters())


def test_one_layer_flops_match_a_hand_count_and_torchs_counter():
    """L=32, D=64, F=128, 11 classes, one layer, written out number by number."""
    config = EtBertConfig(
        vocab_size=300, max_positions=40, hidden=64, heads=4, ffn=128, layers=1, seq_length=32
    )
    qkv = 2 * 32 * 64 * 192  # 786,432
    attention_output = 2 * 32 * 64 * 64  # 262,144
    scores_and_mixing = 2 * 2 * 32 * 32 * 64  # 262,144
    feed_forward = 2 * 2 * 32 * 64 * 128  # 1,048,576
    head = 2 * 64 * 64 + 2 * 64 * 11  # 9,600
    assert (
        flops_per_sample(config)
        == qkv + attention_output + scores_and_mixing + feed_forward + head
        == 2_368_896
    )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        build_etbert(config)(*_torch_inputs(random_tokens(config, 3)))
    assert counter.get_total_flops() == 3 * flops_per_sample(config)


def test_full_config_is_bert_base_size():
    """ET-BERT's config: about 132 M parameters (analytic within 1 % of torch's) and about 22 GFLOPs a sample."""
    full = EtBertConfig()
    built = sum(p.numel() for p in build_etbert(full).parameters())
    assert abs(parameter_count(full) - built) <= 0.01 * built
    assert 131e6 < built < 133e6
    assert 22.0e9 < flops_per_sample(full) < 22.7e9


def test_onnx_matches_torch_at_other_batch_sizes_with_padding(tmp_path):
    model = build_etbert(TINY, seed=3)
    session = ort.InferenceSession(str(export_etbert(model, tmp_path)), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        tokens = random_tokens(TINY, batch, seed=batch)
        tokens["attention_mask"][-1, 20:] = 0  # a short sample: padding keys are masked out
        with torch.no_grad():
            expected = model(*_torch_inputs(tokens)).numpy()
        (got,) = session.run(["logits"], tokens)
        assert got.shape == (batch, TINY.classes)
        assert np.abs(got - expected).max() <= 1e-4


def test_padding_changes_the_output_only_through_the_mask():
    """Masked positions are ignored: changing their tokens does not change the logits."""
    model = build_etbert(TINY)
    tokens = random_tokens(TINY, 2)
    tokens["attention_mask"][:, 16:] = 0
    other = {name: value.copy() for name, value in tokens.items()}
    other["input_ids"][:, 16:] = 7
    with torch.no_grad():
        assert torch.allclose(model(*_torch_inputs(tokens)), model(*_torch_inputs(other)), atol=1e-5)


class _FakeClock:
    """Time that passes only when a candidate works: one tick per unit of work."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rates_follow_work_exactly_under_a_work_clock():
    """Interleaved rounds, rates per round and overall, computed from work done — no wall-time race."""
    clock = _FakeClock()
    order: list[str] = []

    def worker(name: str, cost: float):
        def run(batch):
            clock.now += cost
            order.append(name)

        return run

    light = Candidate("light", worker("light", 1.0), [{}], [4])  # 4 connections per tick
    heavy = Candidate("heavy", worker("heavy", 10.0), [{}, {}], [4, 2])  # 10x the work, a partial batch
    measured = measure([light, heavy], round_seconds=20.0, rounds=3, warmup_batches=1, clock=clock)
    assert measured["light"]["connections_per_second_median"] == 4.0
    assert measured["light"]["connections"] == 3 * 20 * 4
    # heavy: rounds of 2 batches (20 ticks); 4 + 2 connections per round
    assert measured["heavy"]["connections_per_second_rounds"] == [0.3, 0.3, 0.3]
    assert measured["heavy"]["connections_per_second_overall"] == pytest.approx(0.3)
    after_warmup = order[2:]
    first_heavy = after_warmup.index("heavy")
    assert after_warmup[first_heavy + 2] == "light", "rounds alternate between candidates"


def test_ten_times_the_sessions_is_measurably_slower(tmp_path):
    """Real onnxruntime sessions: the same model run 10 times per batch comes out several times slower."""
    once = etbert_candidate(tmp_path, TINY, batch_size=8)
    session = once.sessions[0]

    def ten_times(batch):
        for _ in range(10):
            session.run(["logits"], dict(batch))

    tenfold = Candidate("tenfold", ten_times, once.batches, once.connections, [session])
    measured = measure([once, tenfold], round_seconds=0.2, rounds=3)
    for name in ("ET-BERT", "tenfold"):
        assert measured[name]["connections_per_second_median"] > 0
        assert len(measured[name]["connections_per_second_rounds"]) == 3
    ratio = (
        measured["tenfold"]["connections_per_second_overall"]
        / measured["ET-BERT"]["connections_per_second_overall"]
    )
    assert ratio < 0.4


@pytest.fixture(scope="module")
def tiny_encoder_onnx(tmp_path_factory) -> Path:
    """The tiny packet encoder with random weights, exported as the runtime gets it, on real connections."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    save_checkpoint(
        folder / "encoder.pt", PacketEncoder(load_config("packet-encoder-tiny")), {"note": "random"}
    )
    fixture = load_split(SAMPLE, "val", columns=())
    export_encoder(folder / "encoder.pt", folder, {name: fixture[name][:4] for name in INPUT_NAMES})
    return folder / ONNX_NAME


@pytest.fixture(scope="module")
def second_stage_onnx(tmp_path_factory) -> Path:
    """A stand-in second stage reading the connection embedding under another name, as the reasoner does."""
    path = tmp_path_factory.mktemp("stage") / "head.onnx"
    torch.manual_seed(1)
    head = nn.Linear(32, 4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the TorchScript exporter, chosen as for the encoder
        torch.onnx.export(
            head,
            (torch.zeros(2, 32),),
            str(path),
            input_names=["connection"],
            output_names=["scores"],
            dynamic_axes={"connection": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def test_a_pipeline_candidate_runs_every_stage_in_order(tiny_encoder_onnx, second_stage_onnx):
    arrays = load_split(SAMPLE, "test", columns=())
    inputs = {name: arrays[name][:50] for name in INPUT_NAMES}
    candidate = pipeline_candidate(
        "packetclip",
        [(tiny_encoder_onnx, {}), (second_stage_onnx, {"connection": "connection_embedding"})],
        inputs,
        batch_size=16,
    )
    assert candidate.connections == [16, 16, 16, 2]
    values = candidate.run(candidate.batches[0])
    embedding = single_thread_session(tiny_encoder_onnx).run(["connection_embedding"], candidate.batches[0])[
        0
    ]
    (expected,) = single_thread_session(second_stage_onnx).run(["scores"], {"connection": embedding})
    assert values["scores"].shape == (16, 4)
    assert np.allclose(values["scores"], expected)


def test_compare_with_etbert_reports_rows_markdown_and_json(tiny_encoder_onnx, tmp_path):
    arrays = load_split(SAMPLE, "test", columns=())
    packetclip = pipeline_candidate("packetclip", [(tiny_encoder_onnx, {})], arrays, batch_size=64)
    cost = encoder_cost(load_config("packet-encoder-tiny"))
    packets = float(arrays["valid"].sum(axis=1).mean())
    packetclip_cost = {
        "parameters": cost.parameters,
        "flops_per_packet": cost.flops_per_packet,
        "flops_per_connection": cost.flops_connection_overhead + packets * cost.flops_per_packet,
    }
    result = compare_with_etbert(packetclip, packetclip_cost, tmp_path, TINY, 8, round_seconds=0.1, rounds=2)
    assert json.loads(json.dumps(result)) == result
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"packetclip", "ET-BERT"}
    assert rows["ET-BERT"]["ratio"] == 1.0 and rows["ET-BERT"]["parameters"] == parameter_count(TINY)
    assert rows["packetclip"]["ratio"] == pytest.approx(
        rows["packetclip"]["connections_per_second"] / rows["ET-BERT"]["connections_per_second"]
    )
    assert all(row["connections_per_second"] > 0 for row in rows.values())
    assert (
        result["settings"]["intra_op_threads"] == 1 and result["settings"]["onnxruntime"] == ort.__version__
    )
    lines = result["markdown"].strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model |") and lines[2].startswith("| packetclip |")
    assert all(line.count("|") == 7 for line in lines)


def test_rows_refuse_mismatched_models_and_a_missing_reference():
    costs = {"a": {"parameters": 10, "flops_per_packet": 2e6, "flops_per_connection": 3e7}}
    with pytest.raises(ValueError, match="reference"):
        efficiency_rows(costs, {"a": 5.0}, "b")
    with pytest.raises(ValueError, match="different models"):
        efficiency_rows(costs, {"a": 5.0, "b": 1.0}, "b")
    rows = efficiency_rows(
        {**costs, "b": {"parameters": 132e6, "flops_per_packet": 22e9, "flops_per_connection": 22e9}},
        {"a": 5000.0, "b": 4.0},
        "b",
    )
    table = markdown_table(rows, "b")
    assert "| a | 10 | 2 M | 30 M | 5,000.0 | 1,250.0 |" in table
    assert "| b | 132 M | 22 G | 22 G | 4.0 | 1.0 |" in table


def test_result_uses_medians_for_rows_and_keeps_overall_ratios():
    measured = {
        name: {"connections_per_second_median": median, "connections_per_second_overall": overall}
        for name, median, overall in (("a", 100.0, 90.0), ("b", 2.0, 3.0))
    }
    costs = {name: {"parameters": 1, "flops_per_packet": 1, "flops_per_connection": 1} for name in "ab"}
    measured["a"]["connections_per_second_rounds"] = [100.0, 60.0, 90.0]
    measured["b"]["connections_per_second_rounds"] = [2.0, 1.0, 3.0]  # a slow middle round hits both
    result = efficiency_result(measured, costs, "b", {"note": "synthetic"})
    assert [row["ratio"] for row in result["rows"]] == [50.0, 1.0]
    assert result["ratio_overall"] == {"a": 30.0, "b": 1.0}
    assert result["ratio_paired_rounds"]["a"] == {"median": 50.0, "min": 30.0, "max": 60.0}


def test_batches_keep_every_row_and_candidates_refuse_empty_batches():
    batches, counts = split_batches({"x": np.arange(10)}, 4)
    assert counts == [4, 4, 2] and np.concatenate([b["x"] for b in batches]).tolist() == list(range(10))
    with pytest.raises(ValueError, match="batches"):
        Candidate("empty", lambda batch: None, [], [])
    with pytest.raises(ValueError, match="at least one"):
        Candidate("zero", lambda batch: None, [{}], [0])
