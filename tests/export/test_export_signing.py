"""`packetclip-train export --sign-key`: the exported bundle leaves the factory signed by the key given, with the
runtime's signing code; a key that cannot sign stops the command before any export is spent on it.

The export itself is stood in for by a copy of the embedded bundle (tests/export/test_export_bundle.py exports
real ones): what is under test is the flag, not the models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from packetclip.bundle import default_bundle_path
from packetclip.signing import SignaturePolicy, generate_key_pair
from packetclip_training.export import cli as export_cli


@pytest.fixture
def checkpoints(tmp_path: Path) -> list[str]:
    """The command's required inputs (files that exist; the stand-in export never reads them)."""
    (tmp_path / "dataset").mkdir()
    for name in ("encoder.pt", "align.pt", "reasoner.pt"):
        (tmp_path / name).write_bytes(b"")
    return [
        "--dataset",
        str(tmp_path / "dataset"),
        "--encoder",
        str(tmp_path / "encoder.pt"),
        "--align",
        str(tmp_path / "align.pt"),
        "--reasoner",
        str(tmp_path / "reasoner.pt"),
    ]


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stand in for the export: the embedded bundle copied to --out; records each call."""
    calls: list[Path] = []

    def copy_embedded(*args: Any, **kwargs: Any) -> Path:
        out = Path(args[4])
        calls.append(out)
        return Path(shutil.copytree(default_bundle_path(), out))

    monkeypatch.setattr(export_cli, "export_bundle", copy_embedded)
    return calls


def test_export_signs_the_bundle_with_the_key_given(
    tmp_path: Path, checkpoints: list[str], exports: list[Path]
) -> None:
    private, public, identity = generate_key_pair(tmp_path / "keys")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        export_cli.export,
        [*checkpoints, "--out", str(out), "--sign-key", str(private)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"signed with key {identity}" in result.output
    check = SignaturePolicy((public,), required=True).check(out)
    assert check.key_id == identity and check.trusted_key == public


def test_a_key_that_cannot_sign_stops_the_export_before_it_starts(
    tmp_path: Path, checkpoints: list[str], exports: list[Path]
) -> None:
    _, public, _ = generate_key_pair(tmp_path / "keys")
    result = CliRunner().invoke(
        export_cli.export, [*checkpoints, "--out", str(tmp_path / "bundle"), "--sign-key", str(public)]
    )
    assert result.exit_code == 2 and "not a PEM private key" in result.output, result.output
    assert exports == []
