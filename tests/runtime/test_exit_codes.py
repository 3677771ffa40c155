"""Exit codes and error messages of `packetclip`, through the console-script entry (`packetclip.cli.main`):
0 when every capture was read, 1 when one could not be (missing, empty, not a capture, a folder), 2 for a usage
error. An unreadable capture is reported on stderr when it fails, counted and skipped, and the good captures
beside it are still classified in full. Also: `models list` columns line up and `models show` rounds metrics to
three decimals."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from packetclip.cli import main, run_group
from packetclip.commands.models import _short, _table_lines
from packetclip.engine import Engine
from packetclip.featurizer import featurize_pcap
from packetclip.pipeline import classify_captures
from packetclip.store import InstalledBundle
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle

SUMMARY_START = " connections in "  # the first line of classify's summary


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def lab_uids() -> set[str]:
    return {conn.uid for conn in featurize_pcap(LAB_CAPTURE)}


def unreadable_capture(kind: str, folder: Path) -> Path:
    """One capture that cannot be read, made in `folder`; its error message names it."""
    path = folder / f"{kind}.pcap"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("ts,src,dst\n1.0,10.0.0.1,10.0.0.2\n")  # a CSV export saved under a capture's name
    elif kind == "directory":
        path.mkdir()
    else:
        assert kind == "missing"
    return path


UNREADABLE = ("missing", "empty", "text", "directory")


@pytest.mark.parametrize("kind", UNREADABLE)
def test_classify_of_one_unreadable_capture_exits_1_with_the_error_before_the_summary(
    kind: str, bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = unreadable_capture(kind, tmp_path)
    assert main(["classify", str(bad), "--model", str(bundle_path)]) == 1
    out, err = capsys.readouterr()
    assert [line for line in out.splitlines() if not line.startswith("#")] == []  # no records
    lines = err.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith(f"error: {bad}")]
    summary = [i for i, line in enumerate(lines) if SUMMARY_START in line]
    assert len(errors) == 1 and len(summary) == 1, err
    assert errors[0] < summary[0], err  # reported when it failed, not only after the run
    assert lines[-1] == "unreadable captures: 1 of 1 (reported above)"


def test_classify_of_good_and_unreadable_captures_writes_every_verdict_and_exits_1(
    bundle_path: Path, tmp_path: Path, lab_uids: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [unreadable_capture(kind, tmp_path) for kind in UNREADABLE]
    out = tmp_path / "verdicts.json"
    argv = ["classify", str(bad[0]), str(bad[1]), str(LAB_CAPTURE), str(bad[2]), str(bad[3])]
    assert main([*argv, "--model", str(bundle_path), "--format", "json", "-o", str(out)]) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(lab_uids) and {r["uid"] for r in records} == lab_uids
    err = capsys.readouterr().err
    for path in bad:
        assert f"error: {path}" in err
    assert f"{len(lab_uids)} connections in " in err
    assert "unreadable captures: 4 of 5 (reported above)" in err


def test_classify_of_good_captures_exits_0_without_errors(
    bundle_path: Path, lab_uids: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(LAB_CAPTURE), "--model", str(bundle_path)]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if not line.startswith("#")]) == len(lab_uids)
    assert "error" not in err and "unreadable" not in err


def test_a_usage_error_exits_2(bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(LAB_CAPTURE), "--model", str(bundle_path), "--format", "csv"]) == 2
    assert main(["classify"]) == 2  # no capture named
    assert "csv" in capsys.readouterr().err


def test_unreadable_captures_are_reported_in_the_order_they_fail(bundle_path: Path, tmp_path: Path) -> None:
    """The stream hands each error over between the verdicts of the captures around it."""
    events: list[str] = []
    summary = classify_captures(
        Engine(bundle_path),
        [unreadable_capture("empty", tmp_path), LAB_CAPTURE, unreadable_capture("missing", tmp_path)],
        lambda verdict: events.append("verdict"),
        on_file_error=lambda message: events.append(message),
    )
    verdicts = summary.connections
    assert verdicts > 0 and summary.captures == 3 and len(summary.file_errors) == 2
    assert events[0] == summary.file_errors[0] and "empty.pcap" in events[0]
    assert events[1 : 1 + verdicts] == ["verdict"] * verdicts
    assert events[1 + verdicts :] == [summary.file_errors[1]] and "missing.pcap" in events[-1]


def test_featurize_skips_unreadable_captures_keeps_the_good_records_and_exits_1(
    tmp_path: Path, lab_uids: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [unreadable_capture(kind, tmp_path) for kind in UNREADABLE]
    assert main(["featurize", str(bad[0]), str(LAB_CAPTURE), *map(str, bad[1:])]) == 1
    out, err = capsys.readouterr()
    assert {json.loads(line)["uid"] for line in out.splitlines()} == lab_uids
    assert len(out.splitlines()) == len(lab_uids)
    for path in bad:
        assert f"error: {path}" in err
    assert err.splitlines()[-1] == "unreadable captures: 4 of 5 (reported above)"
    assert main(["featurize", str(LAB_CAPTURE)]) == 0
    assert "unreadable" not in capsys.readouterr().err


def test_the_entry_passes_a_commands_exit_code_on() -> None:
    """click returns (does not raise) a command's `Exit` outside standalone mode; the entry must not turn it
    into 0."""

    @click.group()
    def group() -> None:
        pass

    @group.command()
    @click.argument("code", type=int)
    def leave(code: int) -> None:
        raise click.exceptions.Exit(code)

    @group.command()
    def fine() -> None:
        pass

    assert [run_group(group, "test", ["leave", str(code)]) for code in (0, 1, 3)] == [0, 1, 3]
    assert run_group(group, "test", ["fine"]) == 0
    assert run_group(group, "test", ["nope"]) == 2


def test_models_list_columns_line_up() -> None:
    created = "2026-12-06T09:08:29Z"
    entries = [
        InstalledBundle(
            "lab-2026.12.06-1", "lab", "2026.12.06-1", created, Path("/s/bundles/lab"), active=True
        ),
        InstalledBundle(
            "embedded",
            "packetclip-default",
            "2026.12.06-1",
            created,
            Path("/site-packages/packetclip/models/default"),
            active=False,
            embedded=True,
        ),
        InstalledBundle(
            "a-much-longer-bundle-name-than-the-others-2026.1",
            "x",
            "1",
            "",
            Path("/b"),
            active=False,
            problem="manifest.json: not JSON",
        ),
    ]
    heading, *lines = _table_lines(entries)
    assert heading.split() == ["BUNDLE", "VERSION", "CREATED", "PATH"]
    readable = lines[
        :2
    ]  # the embedded bundle's version is the widest: it must not push its line's columns on
    for word in ("VERSION", "CREATED", "PATH"):
        column = heading.index(word)
        for line in readable:
            assert line[column - 1] == " " and line[column] != " ", (word, line)
    assert lines[0].startswith("* lab-2026.12.06-1 ") and lines[1].startswith("  embedded ")
    assert lines[2].endswith(" UNREADABLE: manifest.json: not JSON")
    assert lines[2].index("UNREADABLE") == heading.index("VERSION")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.99996, "1.000"),
        (0.9692, "0.969"),
        (0.5, "0.500"),
        (0.0052, "0.0052"),
        (0.0002592, "0.000259"),
        (0.0, "0.000"),
        (12, "12"),
        ("default", "default"),
    ],
)
def test_models_show_metrics_have_three_decimals(value: object, shown: str) -> None:
    assert _short(value) == shown
