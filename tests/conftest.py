"""Shared test fixtures: the folder of real public captures.

Which folder that is — the set committed in tests/data/real, or an extended corpus (`PACKETCLIP_REAL_DATA`, else
`../shared/data/real` beside the checkout) — is decided in `real_captures`, for every test that reads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_captures import require_real_data


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real captures with its MANIFEST.tsv; a folder without one fails loudly."""
    return require_real_data()
