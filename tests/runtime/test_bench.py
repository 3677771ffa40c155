"""`packetclip bench`: its JSON carries rates, latency, memory and cache figures that agree with one another,
and the ET-BERT comparison runs in the same process when the factory is importable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from packetclip.commands.bench import bench, run_pass
from packetclip.engine import Engine
from packetclip.featurizer import ParseStats, featurize_pcap
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def test_bench_reports_consistent_figures(bundle_path: Path) -> None:
    result = CliRunner().invoke(bench, ["--model", str(bundle_path), "--seconds", "0.5", "--no-etbert"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    e2e = report["end_to_end"]
    stats = ParseStats()
    connections = sum(1 for _ in featurize_pcap(LAB_CAPTURE, stats=stats))
    assert e2e["passes"] >= 1
    assert e2e["packets"] == e2e["passes"] * stats.frames  # the default capture, every frame of every pass
    assert e2e["connections"] == e2e["passes"] * connections
    assert e2e["packets_per_second"] == pytest.approx(e2e["packets"] / e2e["seconds"])
    assert e2e["connections_per_second"] == pytest.approx(e2e["connections"] / e2e["seconds"])
    latency = e2e["latency_ms"]
    assert latency["connections"] == e2e["connections"]
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
    cache = e2e["cache"]
    assert 0.0 <= cache["hit_rate"] <= 1.0
    looked_up_or_skipped = cache["lookups"] + cache["skipped_while_dormant"]
    assert looked_up_or_skipped == e2e["connections"]
    assert report["cache_effect"]["connections_per_second_without_cache"] > 0
    assert report["peak_rss_mb"] > 10
    assert report["etbert"] == {"available": False, "reason": "skipped (--no-etbert)"}


def test_passes_start_from_an_empty_cache(bundle_path: Path) -> None:
    """A second pass over the same capture must not hit entries of the first (that would flatter the cache)."""
    engine = Engine(bundle_path)
    first = run_pass(engine, [LAB_CAPTURE])
    hits_first = engine.cache.hits
    second = run_pass(engine, [LAB_CAPTURE])
    assert first.connections == second.connections
    assert engine.cache.hits == hits_first


def test_a_missing_capture_is_an_error(bundle_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench, [str(tmp_path / "none.pcap"), "--model", str(bundle_path), "--no-etbert"]
    )
    assert result.exit_code != 0 and "none.pcap" in result.output


def test_etbert_is_measured_in_the_same_run(bundle_path: Path, tmp_path: Path) -> None:
    """A small ET-BERT-shaped model (the full one is 530 MB), exported by the factory's own command in another
    process as `bench` does, then timed by the command next to the pipeline."""
    from packetclip.commands.models import factory_command

    command = factory_command()
    if command is None:
        pytest.skip("the factory (packetclip-train) is not installed")
    small = ["--layers", "2", "--hidden", "64", "--heads", "2", "--ffn", "128", "--vocab-size", "1000"]
    subprocess.run([*command, "etbert", "--out", str(tmp_path / "etbert"), *small], check=True)
    result = CliRunner().invoke(
        bench,
        [
            "--model",
            str(bundle_path),
            "--seconds",
            "0.3",
            "--etbert-model",
            str(tmp_path / "etbert"),
            "--etbert-rounds",
            "2",
            "--etbert-round-seconds",
            "0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["etbert"]
    assert report["available"] is True and report["config"]["hidden"] == 64
    ours, theirs = report["packetclip_connections_per_second"], report["etbert_connections_per_second"]
    assert ours > 0 and theirs > 0
    assert report["ratio"] == pytest.approx(ours / theirs)
    assert len(report["measured"]["packetclip end-to-end"]["connections_per_second_rounds"]) == 2


def test_without_the_factory_the_comparison_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from packetclip.commands import bench as bench_module

    monkeypatch.setattr(bench_module, "factory_command", lambda: None)
    with pytest.raises(bench_module.EtBertUnavailable, match="not installed"):
        bench_module.export_etbert(tmp_path)
