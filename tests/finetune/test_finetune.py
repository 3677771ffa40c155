"""`packetclip-train finetune`: a feedback round trip on tiny checkpoints. The lab capture is classified with a
bundle that keeps its inputs, an analyst labels some connections, the export fine-tunes the reasoner, and the
bundle written verifies, installs with `packetclip models install`, carries its before/after record, and — run
through the sensor again — gives the labelled connections more of their label, while the pull towards the base
keeps the replayed base rows close. Feedback from another encoder's bundle and checkpoints that did not make the bundle are refused
with a line saying why.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from packetclip.bundle import check_fixtures, load_bundle
from packetclip.cli import main as packetclip
from packetclip.commands.models import models
from packetclip_training.cli import main as packetclip_train
from packetclip_training.finetune.finetune import FinetuneConfig, FinetuneError, FinetuneResult, run_finetune
from packetclip_training.reasoner.model import load_reasoner, save_reasoner
from tests.runtime.test_engine import LAB_CAPTURE
from tests.support import SAMPLE_DATASET, export_tiny_bundles, hashed_text_vectors

LABELLED = 8
# small enough for a test, large enough to move a tiny model: a real fine-tune keeps the defaults
TINY = FinetuneConfig(
    steps=60, batch_size=64, feedback_batch=16, learning_rate=1e-3, anchor_weight=4.0, replay_per_class=40
)


@pytest.fixture(autouse=True)
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def classify(bundle: Path, out: Path, store: Path | None = None) -> list[dict[str, Any]]:
    args = ["classify", str(LAB_CAPTURE), "--model", str(bundle), "--format", "json", "-o", str(out)]
    assert packetclip([*args, *(["--keep-inputs", str(store)] if store else [])]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def identity(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["ts"], record["id.orig_h"], record["id.orig_p"], record["id.resp_h"], record["id.resp_p"])


class RoundTrip:
    """What the module's one fine-tune made, and from what."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.base = export_tiny_bundles(work, versions=("1.0",))[0]
        store = work / "feedback.sqlite"
        self.verdicts = classify(self.base, work / "base.jsonl", store)
        # the analyst corrects the verdicts towards the coarse class the base gives least to these connections:
        # whatever the tiny model says, the label asks it to move
        chosen = self.verdicts[::7][:LABELLED]
        scores = np.asarray(
            [[r["scores"][c] for c in ("benign", "dos", "recon", "bruteforce")] for r in chosen]
        )
        self.label = ("benign", "dos", "recon", "bruteforce")[int(scores.mean(axis=0).argmin())]
        self.chosen = {identity(r) for r in chosen}
        for record in chosen:
            add = ["feedback", "add", "--store", str(store), "--uid", record["uid"], "--label", self.label]
            assert packetclip(add) == 0
        self.export = work / "feedback.jsonl"
        assert packetclip(["feedback", "export", "--store", str(store), str(self.export)]) == 0
        others = [r for r in self.verdicts if identity(r) not in self.chosen][:10]
        for record in others:
            assert (
                packetclip(
                    ["feedback", "add", "--store", str(store), "--uid", record["uid"], "--label", "benign"]
                )
                == 0
            )
        self.everything = work / "everything.jsonl"
        assert packetclip(["feedback", "export", "--store", str(store), str(self.everything)]) == 0
        self.result: FinetuneResult = run_finetune(
            self.base,
            [self.export],
            SAMPLE_DATASET,
            work / "encoder.pt",
            work / "align.pt",
            work / "reasoner.pt",
            work / "finetuned",
            evaluate_paths=[self.everything],
            config=TINY,
            test_rows=0,
            cache=work / "cache",
            version="1.0-ft1",
            encode_texts=hashed_text_vectors,
        )


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory) -> RoundTrip:
    work = tmp_path_factory.mktemp("finetune")
    (work / "empty.toml").write_text("")
    with pytest.MonkeyPatch.context() as settings:
        settings.setenv("PACKETCLIP_CONFIG", str(work / "empty.toml"))
        settings.setenv("XDG_DATA_HOME", str(work / "data"))
        return RoundTrip(work)


def test_the_bundle_verifies_installs_and_activates(trip: RoundTrip, tmp_path: Path) -> None:
    bundle = load_bundle(trip.result.bundle, verify=True)
    assert max(check_fixtures(bundle).values()) < 1e-4
    assert (bundle.name, bundle.version) == (load_bundle(trip.base).name, "1.0-ft1")
    store = tmp_path / "store"
    runner = CliRunner()
    installed = runner.invoke(
        models, ["--store", str(store), "install", str(trip.result.bundle), "--activate"]
    )
    assert installed.exit_code == 0, installed.output
    assert "active:" in installed.output and "1.0-ft1" in installed.output
    verified = runner.invoke(models, ["--store", str(store), "verify"])
    assert verified.exit_code == 0, verified.output


def test_the_manifest_records_base_feedback_and_before_after(trip: RoundTrip) -> None:
    manifest = load_bundle(trip.result.bundle).manifest
    record = manifest["metrics"]["finetune"]
    assert record == trip.result.record
    assert record["base_bundle"]["version"] == "1.0"
    assert record["feedback"]["trained_on"] == {trip.label: LABELLED}
    # the evaluation export holds the trained rows too: they are dropped from it, the ten others measured
    assert record["feedback"]["evaluate_rows_dropped_as_trained_on"] == LABELLED
    assert record["feedback"]["evaluated"] == {"benign": 10}
    # torch's base reasoner on the exported inputs gives the verdicts the sensor gave: the rows are what it saw
    assert record["feedback_rows_trained_on"]["sensor_verdicts_reproduced"] == f"{LABELLED} of {LABELLED}"
    assert record["held_back_rows"]["sensor_verdicts_reproduced"] == "10 of 10"
    for stage in ("before", "after"):
        assert 0.0 <= record["test_split"][stage]["coarse_mauc"] <= 1.0
        assert record["test_split"][stage]["rows"] == 302
    assert manifest["metrics"][f"feedback rows trained on: {trip.label}"] == LABELLED
    assert manifest["training"]["reasoner"]["finetune"]["base_bundle"]["version"] == "1.0"


def test_labelled_rows_move_towards_their_label_through_the_sensor(trip: RoundTrip) -> None:
    record = trip.result.record["feedback_rows_trained_on"]
    assert record["after"]["mean_p_labelled"] > record["before"]["mean_p_labelled"] + 0.2
    # the fine-tuned bundle's own ONNX reasoner on the same capture, as a sensor runs it
    after = {identity(r): r for r in classify(trip.result.bundle, trip.work / "after.jsonl")}
    before = {identity(r): r for r in trip.verdicts}
    labelled = [k for k in before if k in trip.chosen]
    gained = [after[k]["scores"][trip.label] - before[k]["scores"][trip.label] for k in labelled]
    assert len(labelled) == LABELLED and np.mean(gained) > 0.2


def test_the_anchor_keeps_the_base_sample_close(trip: RoundTrip, tmp_path: Path) -> None:
    """A tiny model reads every connection alike, so any correction moves them all; the pull towards the base
    reasoner's outputs must still hold the replayed base rows at well under half the drift of a fine-tune
    without it, while the labelled rows move as much."""
    work = trip.work
    loose = run_finetune(
        trip.base,
        [trip.export],
        SAMPLE_DATASET,
        work / "encoder.pt",
        work / "align.pt",
        work / "reasoner.pt",
        tmp_path / "loose",
        config=dataclasses.replace(TINY, anchor_weight=0.0),
        test_rows=0,
        cache=work / "cache",
        version="1.0-ft2",
        encode_texts=hashed_text_vectors,
    ).record
    anchored = trip.result.record
    assert anchored["replay_sample_mean_coarse_change"] < 0.6 * loose["replay_sample_mean_coarse_change"]
    moved = anchored["feedback_rows_trained_on"]["after"]["mean_p_labelled"]
    assert moved > loose["feedback_rows_trained_on"]["after"]["mean_p_labelled"] - 0.1


def test_feedback_from_another_encoder_is_refused(trip: RoundTrip, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.jsonl"
    lines = trip.export.read_text().splitlines()
    record = json.loads(lines[0])
    record["bundle"]["encoder_sha256"] = "0" * 64
    foreign.write_text("\n".join([*lines[1:], json.dumps(record)]) + "\n")
    work = trip.work
    with pytest.raises(FinetuneError, match=f"uid {record['uid']} .* is not the encoder of"):
        run_finetune(
            trip.base,
            [foreign],
            SAMPLE_DATASET,
            work / "encoder.pt",
            work / "align.pt",
            work / "reasoner.pt",
            tmp_path / "out",
            config=TINY,
            encode_texts=hashed_text_vectors,
        )
    assert not (tmp_path / "out").exists()
    code = packetclip_train(
        [
            "finetune",
            "--bundle",
            str(trip.base),
            "--feedback",
            str(foreign),
            "--dataset",
            str(SAMPLE_DATASET),
            "--encoder",
            str(work / "encoder.pt"),
            "--align",
            str(work / "align.pt"),
            "--reasoner",
            str(work / "reasoner.pt"),
            "--out",
            str(tmp_path / "cli-out"),
        ]
    )
    assert code == 1 and not (tmp_path / "cli-out").exists()


def test_checkpoints_that_did_not_make_the_bundle_are_refused(trip: RoundTrip, tmp_path: Path) -> None:
    reasoner, missions, payload = load_reasoner(trip.work / "reasoner.pt")
    with torch.no_grad():
        reasoner.head[-1].bias[0] += 2.0  # another reasoner: its fixture outputs differ
    save_reasoner(tmp_path / "other.pt", reasoner, missions, payload["record"])
    work = trip.work
    with pytest.raises(FinetuneError, match="the reasoner checkpoint did not make bundle"):
        run_finetune(
            trip.base,
            [trip.export],
            SAMPLE_DATASET,
            work / "encoder.pt",
            work / "align.pt",
            tmp_path / "other.pt",
            tmp_path / "out",
            config=TINY,
            encode_texts=hashed_text_vectors,
        )
