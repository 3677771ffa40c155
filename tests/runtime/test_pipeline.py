"""`packetclip.pipeline`, the library under the commands: driven alone over the lab capture it gives exactly the
records `packetclip classify` prints, and no module outside the commands and the entry point loads a command."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from packetclip.bundle import load_bundle
from packetclip.commands.classify import classify
from packetclip.engine import Engine
from packetclip.featurizer import featurize_pcap
from packetclip.output import open_writer
from packetclip.pipeline import classify_captures
from tests.runtime.test_engine import LAB_CAPTURE, runtime_bundle


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_bundle(tmp_path_factory)


def test_the_pipeline_alone_writes_the_records_classify_prints(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine built from the bundle alone (no settings, no command) and `classify_captures` give, byte for
    byte, the JSON records of `packetclip classify --format json` on the same bundle: the command adds options
    and output handling, nothing to the verdicts."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("PACKETCLIP_CONFIG", str(empty))  # the host's config file must not reach the command
    for name in ("PACKETCLIP_ALLOWLIST", "PACKETCLIP_MISSIONS", "PACKETCLIP_KEEP_INPUTS"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "cli.json"
    result = CliRunner().invoke(
        classify, [str(LAB_CAPTURE), "--model", str(bundle_path), "--format", "json", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output

    buffer = io.StringIO()
    writer = open_writer("json", buffer)
    engine = Engine(load_bundle(bundle_path))
    try:
        summary = classify_captures(engine, [LAB_CAPTURE], writer.write)
    finally:
        writer.close()
        engine.close()

    records = buffer.getvalue()
    connections = len(list(featurize_pcap(LAB_CAPTURE)))
    assert summary.connections == connections == len(records.splitlines()) > 0  # every connection, once
    assert len(summary.labels) > 1  # the lab capture's verdicts are not all one class
    assert records.encode() == out.read_bytes()


def test_no_module_below_the_commands_loads_a_command() -> None:
    """lint-imports holds this statically (the layers contract in pyproject.toml); this holds it at run time, where
    an `importlib` call or a plugin hook would slip past the import graph: importing every module of `packetclip`
    outside `packetclip.commands` and `packetclip.cli` loads neither."""
    check = """
import importlib, sys
from pathlib import Path
import packetclip
root = Path(packetclip.__file__).parent  # read from the files: pkgutil's walk would import packetclip.commands
names = [".".join(("packetclip", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
         for f in sorted(root.rglob("*.py"))]
names = [n for n in names if not n.startswith(("packetclip.commands", "packetclip.cli"))]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith(("packetclip.commands", "packetclip.cli")))
print(len(names), "modules;", "loaded:", loaded)
"""
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, rest = out.stdout.split(" modules;")
    assert int(count) > 10, out.stdout
    assert rest.strip() == "loaded: []", out.stdout
