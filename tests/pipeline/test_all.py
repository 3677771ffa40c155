"""`packetclip-train all` end to end on the committed dataset sample: every stage runs through its own command
(the real text encoder included), the bundle verifies, and a second run reuses every stage's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from packetclip.bundle import check_fixtures, load_bundle
from packetclip_training.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


@pytest.mark.slow
def test_all_builds_a_verified_bundle_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    args = ["all", "--dataset", str(SAMPLE), "--work", str(work), "--bundle", str(bundle), "--pretrain-steps", "3",
            "--reasoner-epochs", "1", "--skip-evaluate"]  # fmt: skip
    assert main(args) == 0
    loaded = load_bundle(bundle)
    assert set(loaded.roles) == {"encoder", "reasoner"}
    assert max(check_fixtures(loaded).values()) < 1e-4
    assert loaded.manifest["training"]["encoder"]["steps"] == 3
    for stage in ("encoder/encoder.pt", "align/align.pt", "reasoner/reasoner.pt"):
        assert (work / stage).is_file(), stage
    capsys.readouterr()
    assert main([*args[:6], str(tmp_path / "bundle2"), *args[7:]]) == 0
    out = capsys.readouterr().out
    assert "[pretrain] reusing" in out and "[align] reusing" in out and "[reasoner] reusing" in out
