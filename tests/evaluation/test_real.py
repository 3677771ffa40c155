"""The real-traffic evaluation: its metrics on arrays small enough to check by hand, and the command end to end
on four real captures through the embedded default bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from packetclip.bundle import default_bundle_path
from packetclip.engine import Engine, Verdict
from packetclip.pipeline import classify_captures
from packetclip_training.cli import cli
from packetclip_training.evaluation.real import (
    SHIPPED,
    FileRun,
    ScoredRows,
    argmax_labels,
    by_family,
    choose_threshold,
    dataset_file_splits,
    evaluate_runs,
    false_alarm_rate,
    family_of,
    file_macro,
    mauc,
    operating_point,
    operating_point_labels,
    recall_by_class,
    render_markdown,
)

B, D, R, F = "benign", "dos", "recon", "bruteforce"


def test_family_rule() -> None:
    assert family_of("packet-captures/amp.UDP.isakmp.pcap", "dos") == "ddos-public"
    assert family_of("nDPI/tests/cfgs/default/pcap/443-chrome.pcap", "benign") == "ndpi-benign"
    assert family_of("zeek/testing/btest/Traces/http/get.trace", "benign") == "zeek-benign"
    assert family_of("zeek/testing/btest/Traces/ssh/sshguess.pcap", "bruteforce") == "real-attacks"
    assert family_of("nDPI/tests/cfgs/default/pcap/synscan.pcap", "recon") == "real-attacks"
    assert family_of("suricata-verify/tests/firewall/x/input.pcap", "dos") == "real-attacks"


def test_threshold_is_just_above_the_first_score_the_budget_cannot_flag() -> None:
    scores = np.arange(200) / 200  # 0.000 … 0.995; 1 % of 200 allows 2 false alarms: 0.995 and 0.990
    threshold = choose_threshold(scores, 0.01)
    assert threshold == np.nextafter(0.985, np.inf)
    assert (scores >= threshold).sum() == 2
    assert (scores >= 0.985).sum() == 3  # any lower threshold would flag a third


def test_threshold_with_ties_keeps_the_whole_tie_out() -> None:
    scores = np.array([0.9, 0.9, 0.9] + [0.1] * 97)  # budget allows 1, but the top three are tied
    threshold = choose_threshold(scores, 0.01)
    assert 0.9 < threshold < 0.9 + 1e-12
    assert (scores >= threshold).sum() == 0


def test_threshold_edges() -> None:
    assert choose_threshold(np.array([]), 0.01) is None
    assert choose_threshold(np.array([0.2, 0.7]), 0.01) == np.nextafter(0.7, np.inf)  # 1 % of 2 allows none
    assert choose_threshold(np.array([0.2, 0.7]), 1.0) == 0.0  # every row may be flagged
    # 0.29 · 100 is 28.999… in floats: still 29 rows may be flagged
    scores = np.arange(100) / 100
    assert (scores >= choose_threshold(scores, 0.29)).sum() == 29


def test_threshold_by_file_weighs_every_file_the_same() -> None:
    # one chatty capture (50 connections scored high) beside 99 quiet captures of one connection each: by
    # connection it holds a third of the rows and sets the threshold above all of them; by file it is 1 % of the
    # weight, so the budget may flag it all and nothing else
    chatty = np.linspace(0.95, 0.999, 50)
    quiet = np.linspace(0.0, 0.5, 99)
    scores = np.concatenate([chatty, quiet])
    files = np.array(["chatty"] * 50 + [f"quiet-{i}" for i in range(99)])
    by_connection = choose_threshold(scores, 0.01)
    assert by_connection == np.nextafter(chatty[-2], np.inf)  # 1 % of 149 allows one row
    by_file = choose_threshold(scores, 0.01, files)
    assert by_file == np.nextafter(quiet.max(), np.inf)
    assert (scores >= by_file).sum() == 50 and (quiet >= by_file).sum() == 0
    # half the budget: half the chatty file's rows, its highest ones
    half = choose_threshold(scores, 0.005, files)
    assert (scores >= half).sum() == 25 and (chatty[-25:] >= half).all()


def test_threshold_by_file_with_one_row_per_file_is_the_connection_rule() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    files = np.array([f"f{i}" for i in range(500)])
    for budget in (0.0, 0.01, 0.05, 0.29, 1.0):
        assert choose_threshold(scores, budget, files) == choose_threshold(scores, budget)


def test_threshold_by_file_keeps_ties_out_across_files() -> None:
    # two files tie at 0.9; each weighs half, and a 40 % budget cannot take the tie whole
    scores = np.array([0.9, 0.1, 0.9, 0.2])
    files = np.array(["a", "a", "b", "b"])
    threshold = choose_threshold(scores, 0.4, files)
    assert 0.9 < threshold < 0.9 + 1e-12
    assert choose_threshold(scores, 0.5, files) == np.nextafter(0.2, np.inf)


def test_operating_point_labels() -> None:
    probabilities = np.array(
        [
            [0.5, 0.3, 0.1, 0.1],  # attack score 0.5 ≥ 0.5: dos, the most likely attack
            [0.6, 0.1, 0.25, 0.05],  # 0.4 < 0.5: benign
            [0.2, 0.1, 0.3, 0.4],  # bruteforce
            [0.1, 0.05, 0.8, 0.05],  # recon
        ]
    )
    assert operating_point_labels(probabilities, 0.5).tolist() == [D, B, F, R]
    assert argmax_labels(probabilities).tolist() == [B, B, F, R]
    # a high threshold turns even a confident attack into benign
    assert operating_point_labels(probabilities, 0.95).tolist() == [B, B, B, B]


def test_recall_and_false_alarms() -> None:
    truth = np.array([B, B, B, B, D, D, R], dtype=object)
    predicted = np.array([B, B, B, R, D, B, D], dtype=object)
    assert recall_by_class(truth, predicted) == {B: 0.75, D: 0.5, R: 0.0, F: None}
    assert false_alarm_rate(truth, predicted) == 0.25
    assert false_alarm_rate(np.array([D]), np.array([B])) is None


def test_file_macro_counts_each_file_once() -> None:
    # file a: 99 dos connections all missed; file b: 1 dos connection found; file c: 4 benign, 1 false alarm
    truth = np.array([D] * 99 + [D] + [B] * 4, dtype=object)
    predicted = np.array([B] * 99 + [D] + [B, B, B, R], dtype=object)
    files = np.array(["a"] * 99 + ["b"] + ["c"] * 4, dtype=object)
    assert recall_by_class(truth, predicted)[D] == 0.01
    macro = file_macro(truth, predicted, files)
    assert macro["recall"][D] == 0.5
    assert macro["files_per_class"] == {B: 1, D: 2, R: 0, F: 0}
    assert macro["false_alarm"] == 0.25


def test_mauc_counts_only_scoreable_classes() -> None:
    truth = np.array([B, B, D, D], dtype=object)
    probabilities = np.array([[0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [0.3, 0.7, 0, 0], [0.5, 0.5, 0, 0]])
    result = mauc(truth, probabilities)
    assert result["scoreable"] == [B, D]
    assert result["auc"][R] is None and result["auc"][F] is None
    assert result["auc"][B] == 1.0 and result["auc"][D] == 1.0
    assert result["mauc"] == 1.0
    # one class only: nothing to score
    assert mauc(np.array([D, D], dtype=object), probabilities[:2])["mauc"] is None


def _rows() -> ScoredRows:
    """zeek-benign: 100 benign rows with attack scores 0.00 … 0.99; ndpi-benign: 10 with 0.0 … 0.9;
    ddos-public: 4 dos rows with attack scores 0.3, 0.6, 0.985, 0.999 (all dos-leaning)."""

    def benign_row(score: float) -> list[float]:
        return [1 - score, score, 0.0, 0.0]

    zeek = [benign_row(i / 100) for i in range(100)]
    ndpi = [benign_row(i / 10) for i in range(10)]
    ddos = [benign_row(s) for s in (0.3, 0.6, 0.985, 0.999)]
    probabilities = np.array(zeek + ndpi + ddos)
    truth = np.array([B] * 110 + [D] * 4, dtype=object)
    families = np.array(["zeek-benign"] * 100 + ["ndpi-benign"] * 10 + ["ddos-public"] * 4, dtype=object)
    files = np.array(
        [f"z{i % 4}" for i in range(100)] + ["n0"] * 10 + ["big", "big", "big", "small"], dtype=object
    )
    return ScoredRows(truth, truth.copy(), probabilities, files, families)


def test_per_family_aggregation_at_argmax() -> None:
    rows = _rows()
    families, overall = by_family(rows, argmax_labels(rows.probabilities))
    assert list(families) == ["ddos-public", "ndpi-benign", "zeek-benign"]  # attack families first
    # argmax: benign rows with attack score > 0.5 are dos — zeek 0.51 … 0.99 (49 rows), ndpi 0.6 … 0.9 (4)
    assert families["zeek-benign"]["false_alarm"] == 0.49
    assert families["ndpi-benign"]["false_alarm"] == 0.4
    assert families["ddos-public"]["recall"][D] == 0.75  # 0.3 is benign at argmax
    assert families["ddos-public"]["file_macro"]["recall"][D] == (2 / 3 + 1) / 2
    assert families["ddos-public"]["mauc"] is None  # one class only
    assert overall["connections"] == 114
    assert overall["truth"] == {B: 110, D: 4, R: 0, F: 0}
    assert overall["false_alarm"] == 53 / 110
    assert overall["scoreable"] == [B, D]


def test_operating_point_calibrates_on_one_family_and_holds_out_the_other() -> None:
    rows = _rows()
    point = operating_point(rows, ["zeek-benign"], 0.01)
    # 1 % of 100 allows one false alarm (0.99), so the threshold sits just above 0.98
    assert point["threshold"] == np.nextafter(1 - (1 - 0.98), np.inf)
    assert point["calibration_benign"] == 100
    assert point["calibration_false_alarm"] == 0.01
    assert point["held_out"] == ["ndpi-benign"]
    assert point["held_out_benign"] == 10
    assert point["held_out_false_alarm"] == 0.0  # ndpi's highest is 0.9
    assert point["families"]["ddos-public"]["recall"][D] == 0.5  # 0.985 and 0.999 pass the threshold
    other = operating_point(rows, ["ndpi-benign"], 0.01)
    # 1 % of 10 allows none: just above 0.9; zeek's 0.91 … 0.99 are held-out false alarms
    assert other["threshold"] == np.nextafter(0.9, np.inf)
    assert other["held_out_false_alarm"] == 0.09
    assert other["families"]["ddos-public"]["recall"][D] == 0.5


def test_evaluate_runs_from_file_runs_and_markdown() -> None:
    benign = FileRun(
        "zeek/a.pcap", "zeek-benign", "benign", [B, B], [B, B], [[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0]]
    )
    ndpi = FileRun("nDPI/b.pcap", "ndpi-benign", "benign", [B], [B], [[0.7, 0.3, 0, 0]])
    attack = FileRun(
        "zeek/ssh.pcap",
        "real-attacks",
        "dictionary_attack",
        [F, F, B],
        ["dictionary_attack"] * 2 + [B],
        [[0.1, 0, 0, 0.9], [0.6, 0, 0, 0.4], [0.95, 0.05, 0, 0]],
    )
    attack.dropped["attacker_is_responder"] = 2
    results = evaluate_runs([benign, ndpi, attack])
    assert results["connections"] == 6
    assert results["dropped"] == {"attacker_is_responder": 2}
    assert results["argmax"]["families"]["real-attacks"]["recall"][F] == 0.5
    assert results["argmax"]["overall"]["false_alarm"] == 0.25  # one of the four benign rows
    assert set(results["operating_points"]) == {"calibrated on ndpi-benign", "calibrated on zeek-benign"}
    by_file = {row["file"]: row for row in results["per_file"]}
    assert by_file["zeek/ssh.pcap"]["truth"] == {F: 2, B: 1}
    assert by_file["zeek/ssh.pcap"]["recall"] == {F: 0.5, B: 1.0}
    text = render_markdown(results)
    assert "| real-attacks |" in text and "calibrated on zeek-benign" in text and "zeek/ssh.pcap" in text
    json.dumps(results, allow_nan=False)
    assert results["shipped"] is None and "bundle's operating point" not in text
    # the bundle's own threshold: 0.5 flags the 0.8 benign row and the 0.9 guess, not the 0.4 one
    shipped = evaluate_runs([benign, ndpi, attack], shipped=0.5)
    assert shipped["shipped"]["overall"]["false_alarm"] == 0.25
    assert shipped["shipped"]["families"]["real-attacks"]["recall"][F] == 0.5
    at_point = {row["file"]: row["at_operating_point"] for row in shipped["per_file"]}
    assert at_point["zeek/ssh.pcap"]["the bundle's operating point"]["recall"][F] == 0.5
    assert "At the bundle's operating point: attack if 1 − P(benign) ≥ 0.5" in render_markdown(shipped)
    strict = evaluate_runs([benign, ndpi, attack], shipped=0.95)
    assert strict["shipped"]["overall"]["false_alarm"] == 0.0
    assert strict["shipped"]["families"]["real-attacks"]["recall"][F] == 0.0


def test_the_numbers_per_split_of_the_bundles_dataset() -> None:
    """`splits` (sha256 → split) groups whole files: a file the dataset does not hold is reported apart."""
    held_out = FileRun(
        "zeek/a.pcap", "zeek-benign", "benign", [B, B], [B, B], [[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0]]
    )
    held_out.sha256 = "aa"
    trained = FileRun("nDPI/b.pcap", "ndpi-benign", "benign", [B], [B], [[0.7, 0.3, 0, 0]], sha256="bb")
    stranger = FileRun(
        "zeek/ssh.pcap", "real-attacks", "dictionary_attack", [F], [F], [[0.1, 0, 0, 0.9]], sha256="cc"
    )
    results = evaluate_runs([held_out, trained, stranger], shipped=0.5, splits={"aa": "test", "bb": "train"})
    splits = results["by_split"]
    assert list(splits) == ["train", "test", "not in the dataset"]  # a split without files is left out
    assert splits["test"]["files"] == 1 and splits["test"]["argmax"]["overall"]["false_alarm"] == 0.5
    assert splits["test"]["shipped"]["overall"]["false_alarm"] == 0.5  # 0.8 ≥ 0.5: raised
    assert splits["train"]["shipped"]["overall"]["false_alarm"] == 0.0
    assert splits["not in the dataset"]["argmax"]["families"]["real-attacks"]["recall"][F] == 1.0
    text = render_markdown(results)
    assert "### By the dataset's split" in text and "**test** (1 files), at the argmax verdict:" in text
    json.dumps(results, allow_nan=False)
    assert evaluate_runs([held_out])["by_split"] is None and "dataset's split" not in render_markdown(
        evaluate_runs([held_out])
    )


def test_a_datasets_real_files_are_read_back_from_its_splits() -> None:
    import pyarrow.parquet as pq

    sample = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
    splits = dataset_file_splits(sample)
    card = json.loads((sample / "card.json").read_text())
    real = {item["sha256"]: item["path"] for item in card["inputs"] if item["kind"] == "real"}
    assert splits and set(splits) <= set(real)
    for split in ("train", "val", "test"):
        table = pq.read_table(sample / f"{split}.parquet", columns=["source_file", "source_kind"]).to_pydict()
        files = {
            f for f, kind in zip(table["source_file"], table["source_kind"], strict=True) if kind == "real"
        }
        assert files == {real[sha] for sha, named in splits.items() if named == split}, split


# ---------------------------------------------------------------------------------------------------------------
# End to end on real captures

BENIGN_ZEEK = "zeek/testing/btest/Traces/http/bro.org.pcap"
BENIGN_NDPI = "nDPI/tests/cfgs/default/pcap/443-chrome.pcap"
SSH_GUESSING = "zeek/testing/btest/Traces/ssh/sshguess.pcap"  # 11 connections, all from 192.168.56.1
VNC_SCANNER = "zeek/testing/btest/Traces/rfb/vnc-scanner.pcap"  # no attacker_ip: the whole file is the attack
ATTACKER = {SSH_GUESSING: "192.168.56.1"}  # the manifest's evidence names it; given here to exercise the rule


@pytest.fixture(scope="module")
def small_manifest(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of four real captures beside links to the real source folders (the files keep their paths)."""
    folder = tmp_path_factory.mktemp("real")
    for top in ("zeek", "nDPI"):
        (folder / top).symlink_to(real_data / top, target_is_directory=True)
    with (real_data / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [row for row in reader if row["file"] in (BENIGN_ZEEK, BENIGN_NDPI, SSH_GUESSING, VNC_SCANNER)]
        header = reader.fieldnames
    assert len(rows) == 4, "a capture this test names left the real-capture manifest"
    for row in rows:
        row["attacker_ip"] = ATTACKER.get(row["file"], row["attacker_ip"])
    with (folder / "MANIFEST.tsv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_evaluate_real_command_on_four_real_captures(small_manifest: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["evaluate-real", "--real-data", str(small_manifest), "--out", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "real.md").read_text() == result.output
    results = json.loads((tmp_path / "real.json").read_text())
    assert results["files"] == 4
    assert results["file_errors"] == {}
    by_file = {row["file"]: row for row in results["per_file"]}
    assert by_file[SSH_GUESSING]["family"] == "real-attacks"
    assert by_file[SSH_GUESSING]["truth"] == {F: 11}  # originated by the attacker
    assert by_file[VNC_SCANNER]["truth"] == {R: 1}
    assert by_file[BENIGN_NDPI]["family"] == "ndpi-benign" and by_file[BENIGN_NDPI]["truth"] == {B: 1}
    assert by_file[BENIGN_ZEEK]["family"] == "zeek-benign" and by_file[BENIGN_ZEEK]["truth"] == {B: 13}
    assert set(results["argmax"]["families"]) == {"real-attacks", "ndpi-benign", "zeek-benign"}
    assert results["argmax"]["overall"]["connections"] == 26
    points = results["operating_points"]
    assert points["calibrated on zeek-benign"]["held_out"] == ["ndpi-benign"]
    assert points["calibrated on zeek-benign"]["calibration_false_alarm"] == 0.0  # 13 rows: no alarm allowed
    assert points["calibrated on ndpi-benign"]["held_out"] == ["zeek-benign"]
    assert results["by_split"] is None

    # each file's verdicts are those of `packetclip classify FILE` run alone, with the same default bundle: at the
    # bundle's operating point when it ships one, by the most likely class otherwise
    engine = Engine(default_bundle_path())
    shipped = engine.bundle.attack_threshold
    assert (results["shipped"] is None) == (shipped is None)
    for file, row in by_file.items():
        engine.reset()
        verdicts: list[Verdict] = []
        classify_captures(engine, [small_manifest / file], verdicts.append)
        counts: dict[str, int] = {}
        for verdict in verdicts:
            counts[verdict.label] = counts.get(verdict.label, 0) + 1
        sensor = row["predicted"] if shipped is None else row["at_operating_point"][SHIPPED]["predicted"]
        assert sensor == counts, file
    engine.close()


def test_evaluate_real_with_the_dataset_reports_its_splits_apart(
    small_manifest: Path, tmp_path: Path
) -> None:
    """None of the four captures is in the committed dataset sample: all of them land outside its splits."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
    args = [
        "evaluate-real",
        "--real-data",
        str(small_manifest),
        "--dataset",
        str(sample),
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "real.json").read_text())
    assert list(results["by_split"]) == ["not in the dataset"]
    assert results["by_split"]["not in the dataset"]["files"] == 4
    assert "### By the dataset's split" in result.output
    bad = CliRunner().invoke(cli, [*args[:4], str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "not a built dataset" in bad.output
