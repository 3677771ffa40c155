"""Shared test fixtures: where the real public captures live.

The real captures are never copied into the repository; they sit in `shared/data/real` beside the checkout
(`../shared/data/real` from the repository root). `PACKETCLIP_REAL_DATA` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("PACKETCLIP_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real captures with its MANIFEST.tsv; a missing folder fails loudly (CI has it)."""
    manifest = REAL_DATA / "MANIFEST.tsv"
    if not manifest.is_file():
        pytest.fail(f"real captures not found at {REAL_DATA} (set PACKETCLIP_REAL_DATA)")
    return REAL_DATA
