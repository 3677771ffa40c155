"""`packetclip suricata run`'s log format, through the real command in its own process (the logging set-up of the
`packetclip` group included): `--log-format json`, or `log_format` in the config file's `[suricata]` table, turns
stderr into JSON lines only — the skipped eve lines with their counts as fields, and the closing statistics as one
line; the flag wins over the file; a log format other than text or json in the file is a one-line error before the
model loads.

The eve input is the lab capture's first frames written as Suricata's tagged-packet records (no Suricata needed),
with a line that is not JSON and a record whose timestamp is out of range among them.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from packetclip.cli import main
from packetclip.featurizer.frames import parse_frame
from packetclip.featurizer.pcapio import read_frames
from packetclip.suricata.eve import format_timestamp
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle

PACKETCLIP = "import sys; from packetclip.cli import main; sys.exit(main())"
FRAMES = 300  # the capture's first frames: a few dozen flows, classified in well under a second
PROTO = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "IPv6-ICMP"}
OUT_OF_RANGE = "9999-12-31T23:59:59.999999-2359"  # past year 9999 once moved to UTC


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def eve(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eve `packet` records of the lab capture's first frames (one flow_id per 5-tuple, either direction), with a
    line that is not JSON after the 10th and a record with an out-of-range timestamp after the 20th."""
    flow_ids: dict[tuple[Any, ...], int] = {}
    lines: list[str] = []
    for ts, link_type, frame in itertools.islice(read_frames(LAB_CAPTURE), FRAMES):
        parsed = parse_frame(link_type, frame)
        if len(parsed) < 7:  # not IP: Suricata logs no packet record for it
            continue
        _, _, proto, src, dst, sport, dport = parsed[:7]
        src, dst = str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))
        key = (proto, *sorted([(src, sport), (dst, dport)]))
        record = {
            "timestamp": format_timestamp(ts),
            "flow_id": flow_ids.setdefault(key, len(flow_ids) + 1),
            "event_type": "packet",
            "src_ip": src,
            "src_port": sport,
            "dest_ip": dst,
            "dest_port": dport,
            "proto": PROTO.get(proto, str(proto)),
            "packet": base64.b64encode(frame).decode(),
            "packet_info": {"linktype": link_type},
        }
        lines.append(json.dumps(record))
    assert len(flow_ids) > 5
    lines.insert(10, "Suricata was killed mid-write")
    lines.insert(20, json.dumps(dict(json.loads(lines[19]), timestamp=OUT_OF_RANGE)))
    path = tmp_path_factory.mktemp("eve") / "eve.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_sidecar(
    eve: Path, bundle: Path, workdir: Path, config: str, *flags: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """`packetclip -vv suricata run` over `eve` with `config` as the config file; the verdict records it wrote."""
    (workdir / "config.toml").write_text(config)
    verdicts = workdir / "verdicts.json"
    verdicts.unlink(missing_ok=True)
    env = dict(os.environ, PACKETCLIP_CONFIG=str(workdir / "config.toml"))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PACKETCLIP,
            "-vv",
            "suricata",
            "run",
            "--eve",
            str(eve),
            "--model",
            str(bundle),
            "--verdicts",
            str(verdicts),
            "--stop-after-idle",
            "0.3",
            *flags,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result, [json.loads(line) for line in verdicts.read_text().splitlines()]


@pytest.mark.parametrize(
    ("config", "flags"),
    [("", ("--log-format", "json")), ('[suricata]\nlog_format = "json"\n', ())],
    ids=["flag", "config-file"],
)
def test_json_logs_are_one_object_per_line_with_the_counts_as_fields(
    eve: Path, bundle_path: Path, tmp_path: Path, config: str, flags: tuple[str, ...]
) -> None:
    result, verdicts = run_sidecar(eve, bundle_path, tmp_path, config, *flags)
    lines = result.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line of stderr is JSON
    assert all(isinstance(entry, dict) for entry in entries) and len(entries) >= 3
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    skipped = [e for e in entries if e["logger"] == "packetclip.suricata.eve"]
    assert [(e["message"], e["reason"], e["count"], e["malformed_lines"], e["lines"]) for e in skipped] == [
        ("eve line skipped: not_json", "not_json", 1, 1, 11),
        ("eve line skipped: bad_timestamp", "bad_timestamp", 1, 2, 21),
    ]
    *_, last = entries
    assert (last["message"], last["level"], last["logger"]) == (
        "suricata run finished",
        "info",
        "packetclip.commands.suricata",
    )
    stats = last["stats"]
    assert stats["eve"]["malformed"] == {"bad_timestamp": 1, "not_json": 1}
    assert stats["sidecar"]["flows_classified"] == len(verdicts) == stats["verdicts_written"] > 0


def test_the_flag_wins_over_the_config_file_and_text_reads_as_before(
    eve: Path, bundle_path: Path, tmp_path: Path
) -> None:
    result, verdicts = run_sidecar(
        eve, bundle_path, tmp_path, '[suricata]\nlog_format = "json"\n', "--log-format", "text"
    )
    err = result.stderr
    assert " DEBUG packetclip.suricata.eve: eve line skipped: not_json\n" in err
    assert " DEBUG packetclip.suricata.eve: eve line skipped: bad_timestamp\n" in err
    assert '"reason"' not in err  # the fields ride in JSON lines only
    stats = json.loads(err[err.index("\n{\n") :])  # the indented statistics close stderr, as before
    assert stats["eve"]["malformed"] == {"bad_timestamp": 1, "not_json": 1}
    assert stats["sidecar"]["flows_classified"] == len(verdicts) > 0


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('log_format = "xml"', "key 'log_format': expected 'text' or 'json', got 'xml'"),
        ("log_format = 1", "key 'log_format': expected str, got int 1"),
        ('log-format = "json"', "unknown key 'log-format' (known: log_format)"),
    ],
)
def test_a_bad_suricata_table_is_a_one_line_error_before_the_model_loads(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    table: str,
    error: str,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[suricata]\n{table}\n")
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(config))
    missing = tmp_path / "no-such-bundle"  # never opened: the settings are checked first
    code = main(["suricata", "run", "--eve", str(tmp_path / "eve.json"), "--model", str(missing)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and lines == [f"Error: {config}: [suricata] {error}"]


def test_the_other_commands_accept_a_suricata_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One config file serves every command: the runtime's reader leaves `[suricata]` to `suricata run`."""
    config = tmp_path / "config.toml"
    config.write_text('threads = 1\n[suricata]\nlog_format = "json"\n')
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(config))
    monkeypatch.setenv("PACKETCLIP_STORE", str(tmp_path / "store"))
    assert main(["models", "list"]) == 0, capsys.readouterr().err
    config.write_text('threads = 1\nsuricata = "json"\n')  # a table, nothing else, goes by that name
    assert main(["models", "list"]) == 1
    assert "unknown key 'suricata'" in capsys.readouterr().err
