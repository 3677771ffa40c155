"""Verdict records on disk: Zeek's ASCII-writer layout and escaping, and JSON lines that validate against the
verdict-record contract of docs/design.md (checked field by field on real verdicts of the lab capture)."""

from __future__ import annotations

import io
import ipaddress
import json

import numpy as np
import pytest

from packetclip.classes import COARSE_CLASSES, FINE_TO_COARSE
from packetclip.engine import Engine, Verdict, decide
from packetclip.featurizer import featurize_pcap
from packetclip.output import ZEEK_FIELDS, JsonWriter, ZeekWriter, open_writer, zeek_escape
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle

FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto community_id label attack score explanation model missions "
    "allowed"
)
TYPES = "time string addr port addr port enum string string string double string string vector[string] bool"


def make_verdict(**changes: object) -> Verdict:
    values: dict[str, object] = {
        "ts": 1700000000.5,
        "uid": "CAbc",
        "orig_h": "10.0.0.1",
        "orig_p": 40000,
        "resp_h": "2001:db8::1",
        "resp_p": 80,
        "proto": "tcp",
        "community_id": "1:xyz=",
        "label": "recon",
        "attack": "port_scan",
        "score": 0.75,
        "scores": {"benign": 0.1, "dos": 0.1, "recon": 0.75, "bruteforce": 0.05},
        "fine_scores": {},
        "explanation": "TCP to port 80.",
        "model": "2026.11.27-1",
    }
    values.update(changes)
    return Verdict(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lab_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(runtime_bundle(tmp_path_factory))


@pytest.fixture(scope="module")
def lab_verdicts(lab_engine: Engine) -> list[Verdict]:
    return lab_engine.classify(list(featurize_pcap(LAB_CAPTURE)), "capture.pcap")


def test_zeek_layout_header_rows_and_close() -> None:
    out = io.StringIO()
    writer = ZeekWriter(out, clock=lambda: 0.0)
    writer.write(make_verdict())
    writer.close()
    lines = out.getvalue().split("\n")
    assert lines[0] == "#separator \\x09"
    assert lines[1] == "#set_separator\t,"
    assert lines[2] == "#empty_field\t(empty)"
    assert lines[3] == "#unset_field\t-"
    assert lines[4] == "#path\tpacketclip"
    assert lines[5].startswith("#open\t") and len(lines[5].split("\t")[1].split("-")) == 6
    assert lines[6] == "#fields\t" + FIELDS.replace(" ", "\t")
    assert lines[7] == "#types\t" + TYPES.replace(" ", "\t")
    row = lines[8].split("\t")
    assert row == [
        "1700000000.500000",
        "CAbc",
        "10.0.0.1",
        "40000",
        "2001:db8::1",
        "80",
        "tcp",
        "1:xyz=",
        "recon",
        "port_scan",
        "0.750000",
        "TCP to port 80.",
        "2026.11.27-1",
        "-",
        "F",
    ]
    assert lines[9].startswith("#close\t") and lines[10] == ""


def test_user_missions_fill_the_missions_column_as_zeeks_package_writes_it() -> None:
    out = io.StringIO()
    writer = ZeekWriter(out, clock=lambda: 0.0)
    writer.write(make_verdict(missions={"ntp_flood": 0.9981204, "web_probe": 0.5}))
    writer.write(make_verdict(missions={}))
    rows = [line.split("\t") for line in out.getvalue().splitlines() if not line.startswith("#")]
    assert rows[0][-2] == "ntp_flood=0.998120,web_probe=0.500000"  # fmt("%s=%.6f"), set separator between
    assert rows[1][-2] == "-"  # no missions: unset, as Zeek leaves the optional field


def test_zeek_escaping_keeps_one_line_per_record() -> None:
    assert zeek_escape("a\tb\nc\\d\x7f") == "a\\x09b\\x0ac\\x5cd\\x7f"
    assert zeek_escape("") == "(empty)"
    assert zeek_escape("-") == "\\x2d"  # a value that reads like the unset marker is escaped
    assert zeek_escape("(empty)") == "\\x28empty)"
    assert zeek_escape("über ≥ 3") == "über ≥ 3"  # valid UTF-8 passes, as Zeek's enable_utf_8 default does
    assert zeek_escape("ü", utf8=False) == "\\xc3\\xbc"
    out = io.StringIO()
    writer = ZeekWriter(out)
    writer.write(make_verdict(explanation="two\tcolumns\nand lines", community_id=""))
    writer.close()
    rows = [line for line in out.getvalue().splitlines() if not line.startswith("#")]
    assert len(rows) == 1
    fields = rows[0].split("\t")
    assert len(fields) == len(FIELDS.split())
    assert fields[7] == "(empty)" and fields[11] == "two\\x09columns\\x0aand lines"


def test_unset_values_are_dashes() -> None:
    out = io.StringIO()
    ZeekWriter(out).write(make_verdict(community_id=None))
    row = next(line for line in out.getvalue().splitlines() if not line.startswith("#"))
    assert row.split("\t")[7] == "-"


def check_record(record: dict[str, object], attack_threshold: float | None) -> None:
    """The verdict-record contract, as a schema: every field, its type, and the rules between fields; the label
    follows the bundle's decision rule (`attack_threshold`: its operating point, None: the most likely class)."""
    expected = [
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "community_id",
        "label",
        "attack",
        "score",
        "scores",
        "explanation",
        "model",
        "allowed",
    ]
    assert list(record) == expected
    assert record["allowed"] is False  # no allowlist here (tests/runtime/test_allowlist.py has one)
    assert isinstance(record["ts"], float) and record["ts"] > 0
    for key in ("uid", "community_id", "explanation", "model"):
        assert isinstance(record[key], str), key
    assert str(record["uid"]).startswith("C")
    for key in ("id.orig_h", "id.resp_h"):
        ipaddress.ip_address(record[key])
    for key in ("id.orig_p", "id.resp_p"):
        port = record[key]
        assert isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535
    assert record["proto"] in ("tcp", "udp", "icmp")
    scores = record["scores"]
    assert isinstance(scores, dict) and list(scores) == list(COARSE_CLASSES)
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in scores.values())
    assert abs(sum(scores.values()) - 1.0) < 1e-6
    probabilities = np.array([[scores[name] for name in COARSE_CLASSES]])
    rule = decide(probabilities, COARSE_CLASSES.index("benign"), attack_threshold)
    assert record["label"] == COARSE_CLASSES[int(rule[0])]
    assert isinstance(record["score"], float) and record["score"] == scores[record["label"]]
    assert FINE_TO_COARSE[str(record["attack"])] == record["label"]
    assert str(record["explanation"]).strip()


def test_json_lines_validate_against_the_contract(lab_engine: Engine, lab_verdicts: list[Verdict]) -> None:
    out = io.StringIO()
    writer = open_writer("json", out)
    assert isinstance(writer, JsonWriter)
    for verdict in lab_verdicts:
        writer.write(verdict)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(lab_verdicts) > 100
    for line in lines:
        check_record(json.loads(line), lab_engine.bundle.attack_threshold)


def test_the_schema_check_rejects_a_broken_record(lab_engine: Engine, lab_verdicts: list[Verdict]) -> None:
    out = io.StringIO()
    JsonWriter(out).write(lab_verdicts[0])
    record = json.loads(out.getvalue())
    wrong_attack = dict(record, attack="benign" if record["label"] != "benign" else "syn_flood")
    with pytest.raises(AssertionError):
        check_record(wrong_attack, lab_engine.bundle.attack_threshold)
    with pytest.raises(AssertionError):
        check_record({k: v for k, v in record.items() if k != "model"}, lab_engine.bundle.attack_threshold)


def test_zeek_rows_of_real_verdicts_have_every_field(lab_verdicts: list[Verdict]) -> None:
    out = io.StringIO()
    writer = open_writer("zeek", out)
    for verdict in lab_verdicts:
        writer.write(verdict)
    writer.close()
    rows = [line.split("\t") for line in out.getvalue().splitlines() if not line.startswith("#")]
    assert len(rows) == len(lab_verdicts)
    assert all(len(row) == len(ZEEK_FIELDS) for row in rows)
    assert {row[8] for row in rows} <= set(COARSE_CLASSES)
