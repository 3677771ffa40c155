"""scripts/check_docs.py finds what it promises to find: links to missing files or headings, repository paths that
do not exist, and commands, options or choices the CLIs do not have; and the repository's own documents pass."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from packetclip.cli import cli
from packetclip_training.cli import cli as train_cli

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_docs.py"


@pytest.fixture
def check_docs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_docs", module)
    spec.loader.exec_module(module)
    return module


def test_the_repository_documents_pass(check_docs: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_docs.main() == 0
    out, err = capsys.readouterr()
    assert out == "" and "0 problems" in err
    assert all(count > 0 for count in check_docs.COUNTS.values())  # it did check links, paths and commands


def test_broken_links_paths_and_commands_are_reported(
    check_docs: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check_docs, "REPO_ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "here.pcap").write_bytes(b"")
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#a-section) [gone](missing.md) [no heading](other.md#nowhere)\n\n"
        "`samples/here.pcap` and `samples/absent.pcap`\n\n"
        "```sh\n"
        "packetclip classify --format json samples/here.pcap\n"
        "packetclip classify --no-such-option samples/here.pcap\n"
        "packetclip classify --format xml samples/here.pcap\n"
        "packetclip no-such-command\n"
        "```\n"
    )
    roots = {"packetclip": cli, "packetclip-train": train_cli}
    links = check_docs.check_links(page)
    paths = check_docs.check_paths(page)
    commands = check_docs.check_commands(page, roots)
    assert len(links) == 2 and "missing.md does not exist" in links[0] and "#nowhere" in links[1]
    assert paths == ["docs/page.md:5: `samples/absent.pcap` does not exist"]
    assert len(commands) == 3, commands
    assert "--no-such-option" in commands[0] and "xml" in commands[1] and "no-such-command" in commands[2]
