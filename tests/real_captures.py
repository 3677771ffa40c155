"""Where the tests read real public captures, and which corpus that is (not a test module).

Owns the one rule every test that reads real captures follows: the `real_data` fixture of tests/conftest.py, the
dataset tests' `dataset_testdata` and the evaluation tests all take their folder from here. Does not read the
captures themselves.

Two corpora share one layout and one MANIFEST.tsv format (file, bytes, sha256_16, source_repo, source_path,
license, label, attack, attacker_ip, evidence; files relative to the folder):

- the committed set, tests/data/real: about 2 MB of Zeek, nDPI and Suricata-verify captures chosen for what the
  tests need (see its README.md). A clean clone tests with it;
- the extended corpus, when there is one: the folder `PACKETCLIP_REAL_DATA` names, else `shared/data/real` beside
  the checkout (`../shared/data/real` from the repository root, several hundred captures). The committed set is a
  subset of it, file for file, so every test holds on either; the few checks only the extended corpus can make
  run in addition when it is in use (`EXTENDED`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

REAL_DATA_ENV = "PACKETCLIP_REAL_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_REAL_DATA = REPO_ROOT / "tests" / "data" / "real"
SHARED_REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


def resolve_real_data(
    environ: Mapping[str, str] = os.environ,
    shared: Path = SHARED_REAL_DATA,
    committed: Path = COMMITTED_REAL_DATA,
) -> Path:
    """`PACKETCLIP_REAL_DATA` when set (a named folder is never passed over), else the shared corpus when its
    manifest is there, else the committed set; absolute, so that links and recorded paths hold from anywhere."""
    named = environ.get(REAL_DATA_ENV)
    if named:
        return Path(named).resolve()
    if (shared / "MANIFEST.tsv").is_file():
        return shared.resolve()
    return committed.resolve()


REAL_DATA = resolve_real_data()
EXTENDED = COMMITTED_REAL_DATA.resolve() != REAL_DATA  # the extended corpus is in use, not the committed set


def require_real_data() -> Path:
    """The folder in use; a folder without its manifest fails loudly (only a wrong `PACKETCLIP_REAL_DATA` can)."""
    if not (REAL_DATA / "MANIFEST.tsv").is_file():
        pytest.fail(f"real captures not found at {REAL_DATA} (check {REAL_DATA_ENV})")
    return REAL_DATA


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of a corpus's MANIFEST.tsv, in manifest order."""
    with (folder / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def manifest_files(folder: Path) -> list[str]:
    """The captures a corpus's manifest lists, relative to the folder, in manifest order."""
    return [row["file"] for row in manifest_rows(folder)]
