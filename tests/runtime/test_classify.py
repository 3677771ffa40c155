"""`packetclip classify`: connections released at max_packets exactly once, records for every connection,
several files with a bad one among them, the summary on stderr, and every real capture without a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from packetclip.commands.classify import classify
from packetclip.engine import Engine
from packetclip.featurizer import ConnectionTracker, FeaturizerConfig, ParseStats, featurize_pcap, read_frames
from packetclip.output import ZEEK_FIELDS
from packetclip.pipeline import classify_captures
from tests.real_captures import manifest_files
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart by default


def test_long_connections_leave_at_max_packets_exactly_once() -> None:
    """The lab's floods run for thousands of packets: each is handed out when its 30th packet arrives (long
    before the end of the capture), with the same first packets a full-length tracking keeps, and never twice."""
    config = FeaturizerConfig()
    tracker = ConnectionTracker(config, ParseStats(), release_full=True)
    released_before_end = []
    for ts, link_type, frame in read_frames(LAB_CAPTURE):
        for conn in tracker.add(ts, link_type, frame):
            released_before_end.append((conn, ts))
    at_end = tracker.flush()
    early = [(c, ts) for c, ts in released_before_end if len(c.pkt_ts) == config.max_packets]
    assert tracker.released_early > 0 and early
    assert all(ts == c.pkt_ts[-1] for c, ts in early)  # released by its own last kept packet
    reference = {c.uid: c for c in featurize_pcap(LAB_CAPTURE, config)}
    records = [c for c, _ in released_before_end] + at_end
    uids = [c.uid for c in records]
    assert len(uids) == len(set(uids)) == len(reference)
    assert set(uids) == set(reference)
    for conn in records:
        whole = reference[conn.uid]
        assert (conn.pkt_bytes == whole.pkt_bytes).all() and (conn.pkt_ts == whole.pkt_ts).all()
        assert conn.n_packets <= whole.n_packets


def test_json_records_for_every_connection_and_a_bad_file_fails_at_the_end(
    bundle_path: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.pcap"
    not_a_capture = tmp_path / "notes.pcap"
    not_a_capture.write_text("hello, not a capture\n")
    out = tmp_path / "verdicts.json"
    result = runner().invoke(
        classify,
        [
            str(missing),
            str(LAB_CAPTURE),
            str(not_a_capture),
            "--model",
            str(bundle_path),
            "--format",
            "json",
            "-o",
            str(out),
            "--batch-size",
            "64",
        ],
    )
    assert result.exit_code == 1, result.output
    assert str(missing) in result.stderr and str(not_a_capture) in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {c.uid for c in featurize_pcap(LAB_CAPTURE)}
    assert {r["uid"] for r in records} == expected and len(records) == len(expected)
    assert f"{len(expected)} connections" in result.stderr
    for label in {r["label"] for r in records}:
        count = sum(r["label"] == label for r in records)
        assert f"  {label}: {count}" in result.stderr


def test_max_open_caps_the_connection_table_and_counts_what_it_ends_early(
    bundle_path: Path, tmp_path: Path
) -> None:
    """Every connection still gets its record (a later packet of one ended early starts a new connection, with a
    record of its own); those ended early to stay within the cap are counted."""
    out = tmp_path / "verdicts.json"
    args = [str(LAB_CAPTURE), "--model", str(bundle_path), "--format", "json", "-o", str(out)]
    result = runner().invoke(classify, [*args, "--max-open", "5"])
    assert result.exit_code == 0, result.stderr
    capped = [json.loads(line)["uid"] for line in out.read_text().splitlines()]
    assert {c.uid for c in featurize_pcap(LAB_CAPTURE)} <= set(capped) and len(set(capped)) == len(capped)
    ended_early = [line for line in result.stderr.splitlines() if "ended early" in line]
    assert len(ended_early) == 1 and int(ended_early[0].split()[0]) > 0
    assert "ended early" not in runner().invoke(classify, args).stderr
    assert runner().invoke(classify, [*args, "--max-open", "0"]).exit_code == 2


def test_zeek_is_the_default_format_on_stdout(bundle_path: Path) -> None:
    result = runner().invoke(classify, [str(LAB_CAPTURE), "--model", str(bundle_path)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#separator \\x09" and lines[-1].startswith("#close\t")
    assert "packets/s" in result.stderr and "#" not in result.stderr.splitlines()[0][:1]


def test_several_files_are_several_sensors(bundle_path: Path, tmp_path: Path) -> None:
    """The same capture under two names: each is its own sensor, so the second gets the same verdicts as the
    first (no history carried over from the other file)."""
    copy = tmp_path / "copy.pcap"
    copy.write_bytes(LAB_CAPTURE.read_bytes())
    engine = Engine(bundle_path)
    verdicts: list = []
    summary = classify_captures(engine, [LAB_CAPTURE, copy], verdicts.append)
    half = len(verdicts) // 2
    assert summary.connections == len(verdicts) == 2 * half
    first = {v.uid: v for v in verdicts[:half]}
    for verdict in verdicts[half:]:
        assert abs(first[verdict.uid].score - verdict.score) < 1e-5


@pytest.mark.slow
def test_every_real_capture_classifies_and_malformed_frames_are_counted(
    real_data: Path, bundle_path: Path, tmp_path: Path
) -> None:
    # the manifest's captures, not every file of the folder: the committed set carries its README and licences
    captures = sorted(str(real_data / name) for name in manifest_files(real_data))
    assert captures
    expected = ParseStats()
    for path in captures:
        stats = ParseStats()
        for _ in featurize_pcap(path, stats=stats):
            pass
        expected.merge(stats)
    out = tmp_path / "real.log"
    result = runner().invoke(classify, [*captures, "--model", str(bundle_path), "-o", str(out)])
    assert result.exit_code in (0, 1), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    rows = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert rows and all(len(row.split("\t")) == len(ZEEK_FIELDS) for row in rows)
    assert f"malformed: {expected.malformed_total}" in result.stderr
    assert expected.malformed_total > 0  # the real captures do hold damaged frames
    for reason, count in expected.malformed.items():
        assert f"  malformed: {reason}: {count}" in result.stderr


def test_connections_reach_the_engine_in_first_packet_order(bundle_path: Path) -> None:
    """Every connection gets one verdict, and the engine sees them sorted by first packet although the tracker
    finishes some later-starting ones first on this capture (the order training replays a capture in; classify
    has no other)."""
    released = []
    tracker = ConnectionTracker(Engine(bundle_path).featurizer_config, release_full=True)
    for ts, link_type, frame in read_frames(LAB_CAPTURE):
        released += [conn.ts for conn in tracker.add(ts, link_type, frame)]
    released += [conn.ts for conn in tracker.flush()]
    assert released != sorted(released)
    times: list[float] = []
    summary = classify_captures(
        Engine(bundle_path, batch_size=1), [LAB_CAPTURE], lambda v: times.append(v.ts)
    )
    assert summary.connections == len(times) == len(released) > 300 and summary.reordered_forced == 0
    assert times == sorted(released)


def test_classify_has_no_order_flag(bundle_path: Path) -> None:
    result = runner().invoke(classify, [str(LAB_CAPTURE), "--model", str(bundle_path), "--order", "release"])
    assert result.exit_code == 2 and "--order" in result.output + result.stderr
