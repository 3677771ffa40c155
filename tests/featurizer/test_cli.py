"""`packetclip featurize`: records on stdout or a file, the summary with malformed reasons on stderr."""

from __future__ import annotations

import json

from packetclip.cli import main

from .captures import FUZZED, SF_HTTP


def test_json_records_and_summary(real_data, capsys):
    assert main(["featurize", str(real_data / SF_HTTP)]) == 0
    out, err = capsys.readouterr()
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["conn_state"] == "SF" and record["community_id"].startswith("1:") and record["resp_p"] == 80
    assert "connections: 1" in err and "frames: 8" in err


def test_tsv_to_file_with_malformed_reasons(real_data, tmp_path, capsys):
    out_file = tmp_path / "conns.tsv"
    assert (
        main(
            [
                "featurize",
                str(real_data / FUZZED),
                "--format",
                "tsv",
                "-o",
                str(out_file),
                "--max-packets",
                "5",
            ]
        )
        == 0
    )
    lines = out_file.read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["uid", "ts", "proto"] and len(lines) > 100
    err = capsys.readouterr().err
    assert "malformed: bad_ip_version: 6" in err


def test_unreadable_capture_fails_with_its_name(tmp_path, capsys):
    bogus = tmp_path / "bogus.pcap"
    bogus.write_text("not a capture")
    assert main(["featurize", str(bogus)]) == 1
    assert "bogus.pcap" in capsys.readouterr().err
