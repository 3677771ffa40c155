"""Feedback (`packetclip.feedback`, `packetclip feedback`): `packetclip classify --keep-inputs` on the lab capture
keeps every verdict's model input; `feedback add --uid` of a connection from the JSON output, then `export`, gives
exactly that connection's arrays — the ones the engine packed and fed its models in that run, and what packing the
connection directly gives — with the verdict classify printed. Also: a Community ID labels every connection it
names and a second label replaces the first; unknown uids and labels are refused with one line; the row cap evicts
the oldest rows and expiry drops old ones, both counted; nothing is kept, and no file written, unless a setting
asks; the flag, the environment variable and the config file reach every command's engine; a corrupt store stops a
command with one line, and a store that cannot be written while classifying is counted and logged once while
every verdict still comes out. The Zeek path is tests/zeek_peer/test_feedback_zeek.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packetclip.cli import main
from packetclip.engine import BatchInference, Engine
from packetclip.featurizer import Connection, featurize_pcap, pack
from packetclip.feedback import (
    EXPORT_FORMAT,
    RETRY_AFTER,
    FeedbackStore,
    InputStore,
    decode_arrays,
    read_export_arrays,
)
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle

PACKET_ARRAYS = ("bytes", "direction", "iat", "length", "valid")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(autouse=True)
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file, no environment setting, and a data folder of the test's own."""
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("PACKETCLIP_KEEP_INPUTS", "PACKETCLIP_KEEP_INPUTS_ROWS", "PACKETCLIP_KEEP_INPUTS_DAYS"):
        monkeypatch.delenv(name, raising=False)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the offline path, end to end ---------------------------------------------------------------------------------


def test_export_holds_exactly_what_the_engine_fed_the_models(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[
        str, tuple[Connection, dict[str, np.ndarray], int]
    ] = {}  # uid -> its batch's inference and row
    infer = Engine._infer

    def spy(self: Engine, models: Any, connections: list[Connection], sensor: str) -> BatchInference:
        inference = infer(self, models, connections, sensor)
        fed = {
            "connection": inference.connection_embedding,
            "context_features": inference.context_features,
            "context_valid": inference.context_valid,
            "responder_features": inference.responder_features,
            **inference.packed,
        }
        for row, conn in enumerate(inference.connections):
            seen[conn.uid] = (conn, {name: array[row].copy() for name, array in fed.items()})
        return inference

    monkeypatch.setattr(Engine, "_infer", spy)
    store, verdicts, out = (
        tmp_path / "feedback.sqlite",
        tmp_path / "verdicts.jsonl",
        tmp_path / "export.jsonl",
    )
    args = [
        "classify",
        str(LAB_CAPTURE),
        "--model",
        str(bundle_path),
        "--format",
        "json",
        "-o",
        str(verdicts),
    ]
    code, _, err = run([*args, "--keep-inputs", str(store)], capsys)
    assert code == 0
    records = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert f"inputs kept: {len(records)} in {store}" in err and len(records) > 300
    # the connection with the most packets among those the model called dos, relabelled by the analyst
    chosen = max((r for r in records if r["label"] == "dos"), key=lambda r: len(seen[r["uid"]][0].pkt_ts))
    code, out_text, err = run(
        [
            "feedback",
            "add",
            "--uid",
            chosen["uid"],
            "--label",
            "benign",
            "--note",
            "load test",
            "--store",
            str(store),
        ],
        capsys,
    )
    assert code == 0, err
    assert out_text.startswith(f"{chosen['uid']}\t{chosen['community_id']}\tverdict dos/")
    code, _, err = run(["feedback", "export", str(out), "--store", str(store)], capsys)
    assert code == 0 and "1 labelled connection(s) exported" in err
    (exported,) = [json.loads(line) for line in out.read_text().splitlines()]

    assert exported["format"] == EXPORT_FORMAT
    assert (exported["label"], exported["coarse"], exported["fine"], exported["note"]) == (
        "benign",
        "benign",
        "benign",
        "load test",
    )
    assert (exported["uid"], exported["community_id"], exported["ts"]) == (
        chosen["uid"],
        chosen["community_id"],
        chosen["ts"],
    )
    verdict = exported["verdict"]
    for key in ("label", "attack", "score", "scores", "model"):
        assert verdict[key] == chosen[key], key
    bundle = exported["bundle"]
    assert bundle["version"] == chosen["model"] and bundle["featurizer_version"] == "2"
    assert exported["sensor"] == LAB_CAPTURE.name

    arrays = read_export_arrays(exported)
    conn, fed = seen[chosen["uid"]]
    assert set(arrays) == set(fed)  # the default reasoner reads no context embeddings: none kept
    for name, value in fed.items():
        assert arrays[name].dtype == value.dtype and arrays[name].shape == value.shape, name
        assert np.array_equal(arrays[name], value), name
    assert len(arrays["context_features"][0]) == len(bundle["context_features"])
    assert len(arrays["responder_features"]) == len(bundle["responder_features"])
    # and packing the connection on its own gives the same encoder input
    direct = pack([conn], Engine(bundle_path).featurizer_config)
    for name in PACKET_ARRAYS:
        assert np.array_equal(arrays[name], direct[name][0]), name
    assert 1 < arrays["valid"].sum() == min(len(conn.pkt_ts), len(arrays["valid"]))

    code, out_text, _ = run(["feedback", "list", "--json", "--store", str(store)], capsys)
    (listed,) = [json.loads(line) for line in out_text.splitlines()]
    assert (listed["uid"], listed["label"], listed["verdict"], listed["note"]) == (
        chosen["uid"],
        "benign",
        "dos",
        "load test",
    )
    assert "arrays" not in listed


def labelled_store(bundle_path: Path, path: Path, batch_size: int = 256) -> list[Connection]:
    """The lab capture classified with its inputs kept in `path`; its connections."""
    connections = list(featurize_pcap(LAB_CAPTURE))
    engine = Engine(bundle_path, batch_size=batch_size, inputs=InputStore(path))
    engine.classify(connections, "lab")
    engine.close()
    return connections


def kept_rows(path: Path) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """uid -> (record, arrays) of every kept input in the store at `path`."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT uid, record, arrays FROM inputs").fetchall()
    return {uid: (json.loads(record), decode_arrays(blob)) for uid, record, blob in rows}


def test_a_call_of_several_sensors_keeps_what_a_call_per_sensor_keeps(
    bundle_path: Path, tmp_path: Path
) -> None:
    """`packetclip serve` hands the engine many Zeek nodes' connections in one call: each kept row names its own
    sensor and holds what a call for that sensor alone kept."""
    connections = list(featurize_pcap(LAB_CAPTURE))[:120]
    sensors = [f"node-{i % 3}" for i in range(len(connections))]
    merged, separate = tmp_path / "merged.sqlite", tmp_path / "separate.sqlite"
    engine = Engine(bundle_path, inputs=InputStore(merged))
    engine.classify(connections, sensors)
    engine.close()
    engine = Engine(bundle_path, inputs=InputStore(separate))
    for sensor in dict.fromkeys(sensors):
        engine.classify([c for c, s in zip(connections, sensors, strict=True) if s == sensor], sensor)
    engine.close()
    found, expected = kept_rows(merged), kept_rows(separate)
    assert found.keys() == expected.keys() == {c.uid for c in connections}
    sensor_of = {c.uid: s for c, s in zip(connections, sensors, strict=True)}
    for uid, (record, arrays) in found.items():
        assert record["sensor"] == sensor_of[uid]
        assert record["connection"] == expected[uid][0]["connection"]
        assert record["verdict"]["label"] == expected[uid][0]["verdict"]["label"]
        assert arrays.keys() == expected[uid][1].keys()
        for name, array in arrays.items():
            np.testing.assert_allclose(array, expected[uid][1][name], rtol=0, atol=1e-6, err_msg=name)


def test_a_community_id_labels_every_connection_it_names_and_a_label_can_be_replaced(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feedback.sqlite"
    first = labelled_store(bundle_path, path)[0]
    labelled_store(bundle_path, path)  # the same capture again: every connection kept twice, labelled once
    # the first connection's 5-tuple used again an hour and two hours later (a reused source port): one
    # Community ID, three connections
    later = [
        dataclasses.replace(
            first,
            uid=f"Clater{hours}",
            ts=first.ts + 3600 * hours,
            last_ts=first.last_ts + 3600 * hours,
            pkt_ts=first.pkt_ts + 3600 * hours,
        )
        for hours in (1, 2)
    ]
    engine = Engine(bundle_path, inputs=InputStore(path))
    engine.classify(later, "lab")
    engine.close()
    cid, uids = first.community_id, [first.uid, *(c.uid for c in later)]
    code, out, err = run(
        ["feedback", "add", "--community-id", cid, "--label", "udp_flood", "--store", str(path)], capsys
    )
    assert code == 0 and err.strip() == f"{len(uids)} connection(s) of community_id {cid} labelled udp_flood"
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(uids)
    code, out, _ = run(["feedback", "add", "--uid", uids[0], "--label", "dos", "--store", str(path)], capsys)
    assert code == 0 and out.rstrip().endswith("-> dos (was labelled udp_flood)")
    with FeedbackStore(path) as store:
        rows = {row["uid"]: row for row in store.rows()}
    assert set(rows) == set(uids) and rows[uids[0]]["label"] == "dos"
    code, out, _ = run(["feedback", "export", "-", "--store", str(path)], capsys)
    exported = [json.loads(line) for line in out.splitlines()]
    assert [(r["coarse"], r["fine"]) for r in exported if r["uid"] == uids[0]] == [("dos", None)]
    assert {(r["coarse"], r["fine"]) for r in exported if r["uid"] != uids[0]} == {("dos", "udp_flood")}
    code, out, _ = run(["feedback", "export", "-", "--since", "2999-01-01", "--store", str(path)], capsys)
    assert code == 0 and out == ""


def test_unknown_uids_labels_and_stores_are_refused_with_one_line(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feedback.sqlite"
    labelled_store(bundle_path, path)
    code, out, err = run(
        ["feedback", "add", "--uid", "Cnope", "--label", "benign", "--store", str(path)], capsys
    )
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"Error: uid Cnope: no kept input in {path} (never kept there, or evicted or expired)"
    ]
    code, _, err = run(
        ["feedback", "add", "--uid", "Cnope", "--label", "malware", "--store", str(path)], capsys
    )
    assert code == 2 and "'malware' is not one of" in err
    code, _, err = run(["feedback", "add", "--label", "benign", "--store", str(path)], capsys)
    assert code == 2 and "give exactly one of --uid and --community-id" in err
    missing = tmp_path / "missing.sqlite"
    code, _, err = run(["feedback", "list", "--store", str(missing)], capsys)
    assert code == 1 and err.strip().splitlines() == [
        f"Error: {missing}: no feedback store there (a sensor keeps inputs in one with --keep-inputs {missing})"
    ]
    assert not missing.exists()
    with FeedbackStore(path) as store:
        assert list(store.rows()) == []  # nothing was recorded by the refused commands


# --- bounds -------------------------------------------------------------------------------------------------------


def test_the_row_cap_evicts_the_oldest_and_expiry_drops_old_rows(bundle_path: Path, tmp_path: Path) -> None:
    path, clock = tmp_path / "feedback.sqlite", Clock()
    store = InputStore(path, max_rows=50, max_age_days=2, clock=clock)
    connections = list(featurize_pcap(LAB_CAPTURE))
    engine = Engine(bundle_path, batch_size=64, inputs=store)
    verdicts = engine.classify(connections, "lab")
    counts = store.counts
    assert (counts.kept, counts.evicted, counts.expired, counts.write_errors) == (
        len(verdicts),
        len(verdicts) - 50,
        0,
        0,
    )
    db = sqlite3.connect(path)
    kept = [uid for (uid,) in db.execute("SELECT uid FROM inputs ORDER BY id")]
    last_batch = sorted(connections, key=lambda c: c.ts)[-50:]  # the engine's last rows: the newest verdicts
    assert kept == [c.uid for c in last_batch]

    clock.now += 2 * 86400 - 100  # not yet two days: nothing expires (the sweep looks, finds none)
    engine.classify(connections[:10], "lab")
    assert counts.expired == 0 and db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0] == 50
    clock.now += 200  # past two days for the rows kept first, not for the 10 just kept; past the next sweep
    engine.classify(connections[10:13], "lab")
    # the 3 new rows first push out the 3 oldest (the cap), then the 37 rows left of the first run expire; the 10
    # of 200 s ago and the 3 new stay
    assert (counts.evicted, counts.expired) == (len(verdicts) - 50 + 10 + 3, 37)
    assert db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0] == 13
    engine.close()
    # a store reopened after weeks is swept at once
    clock.now += 30 * 86400
    reopened = InputStore(path, max_rows=50, max_age_days=2, clock=clock)
    assert reopened.counts.expired == 13 and db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0] == 0
    reopened.close()
    db.close()


# --- settings -----------------------------------------------------------------------------------------------------


def test_nothing_is_kept_and_no_file_written_unless_a_setting_asks(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "verdicts.jsonl"
    code, _, err = run(["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "-o", str(out)], capsys)
    assert code == 0 and "inputs kept" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty.toml", "verdicts.jsonl"]


def test_flag_environment_and_config_file_reach_every_commands_engine(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packetclip.commands.serve import open_serving_engine
    from packetclip.pipeline import open_engine

    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    config = tmp_path / "config.toml"
    config.write_text('keep_inputs = "second.sqlite"\nkeep_inputs_rows = 10\nkeep_inputs_days = 3\n')
    model = str(bundle_path)

    def kept(engine: Engine) -> tuple[Path, int, float] | None:
        inputs = engine.inputs
        engine.close()
        return None if inputs is None else (inputs.path, inputs.max_rows, inputs.max_age / 86400)

    openers: list[Callable[..., Engine]] = [
        lambda keep_inputs=None: open_engine(model, None, None, keep_inputs=keep_inputs),
        lambda keep_inputs=None, config=None: open_serving_engine(
            model, config, None, 16, keep_inputs=keep_inputs
        )[0],
    ]
    for opener in openers:
        assert kept(opener()) is None
        assert kept(opener(keep_inputs=str(first))) == (first, 100_000, 7)
    monkeypatch.setenv("PACKETCLIP_KEEP_INPUTS", str(first))
    monkeypatch.setenv("PACKETCLIP_KEEP_INPUTS_ROWS", "20")
    assert kept(openers[0]()) == (first, 20, 7) and kept(openers[1]()) == (first, 20, 7)
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(config))
    monkeypatch.delenv("PACKETCLIP_KEEP_INPUTS")
    monkeypatch.delenv("PACKETCLIP_KEEP_INPUTS_ROWS")
    assert kept(openers[0]()) == (second, 10, 3) and kept(openers[1](config=str(config))) == (second, 10, 3)
    assert kept(openers[0](keep_inputs=str(first))) == (first, 10, 3)  # flag over file
    # `packetclip feedback` reads the store the setting names
    labelled_store(bundle_path, second)
    assert main(["feedback", "list"]) == 0


# --- a store that cannot be used ----------------------------------------------------------------------------------


def test_a_corrupt_store_stops_each_command_with_one_line(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "feedback.sqlite"
    bad.write_bytes(b"this is no database, only bytes that look like nothing " * 100)
    out = str(tmp_path / "out")
    sensors: list[list[str]] = [
        ["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "-o", out],
        [
            "suricata",
            "run",
            "--eve",
            str(tmp_path / "eve.json"),
            "--model",
            str(bundle_path),
            "--verdicts",
            out,
        ],
        ["serve", "--model", str(bundle_path), "--zeek", "ws://127.0.0.1:9/v1/messages/json"],
    ]
    for args in sensors:
        code, _, err = run([*args, "--keep-inputs", str(bad)], capsys)
        assert code == 1, args
        assert err.strip().splitlines() == [
            f"Error: {bad}: not a usable feedback store (file is not a database)"
        ], args
    for args in (["list"], ["export", "-"], ["add", "--uid", "C1", "--label", "dos"]):
        code, _, err = run(["feedback", *args, "--store", str(bad)], capsys)
        assert code == 1 and err.strip().splitlines() == [
            f"Error: {bad}: not a usable feedback store (file is not a database)"
        ], args
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = run(["feedback", "list", "--store", str(other)], capsys)
    assert code == 1 and "not a feedback store" in err


def test_a_store_that_cannot_be_written_costs_no_verdict(
    bundle_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the file's write lock: every batch meanwhile is counted and the failure logged once;
    once the lock is gone, writes resume after the pause."""
    path, clock = tmp_path / "feedback.sqlite", Clock()
    store = InputStore(path, clock=clock)
    connections = sorted(featurize_pcap(LAB_CAPTURE), key=lambda c: c.ts)
    engine = Engine(bundle_path, batch_size=32, inputs=store)
    reference = Engine(bundle_path, batch_size=32).classify(connections[:200], "lab")
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.ERROR, logger="packetclip.feedback"):
        verdicts = engine.classify(connections[:200], "lab")
    assert [(v.uid, v.label, v.score) for v in verdicts] == [(v.uid, v.label, v.score) for v in reference]
    assert (store.counts.kept, store.counts.write_errors) == (0, 200)
    errors = [r for r in caplog.records if r.name == "packetclip.feedback"]
    assert len(errors) == 1 and "kept inputs not written" in errors[0].getMessage()
    locker.execute("ROLLBACK")
    locker.close()
    engine.classify(connections[200:232], "lab")  # still pausing: counted, not tried
    assert store.counts.write_errors == 232
    clock.now += RETRY_AFTER
    engine.classify(connections[232:264], "lab")
    assert store.counts.kept == 32
    engine.close()
    with sqlite3.connect(path) as db:
        (blob,) = db.execute("SELECT arrays FROM inputs LIMIT 1").fetchone()
    assert decode_arrays(blob)["bytes"].shape[1] == 128
