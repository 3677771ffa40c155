"""Datasets the model tests train on: real packets, built once per session with the project's own builder.

`real_packets` holds the nDPI test captures of the real-capture folder in use: the committed set's 20 (about 2,400
connections, most of them one SYN scan) or the extended corpus's (several thousand connections of many protocols);
`lab_packets` the committed quick lab sample (all eleven fine classes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SAMPLE = REPO_ROOT / "samples" / "lab-quick"
REAL_SUBSET = "nDPI/tests/cfgs/default/pcap/*"


@pytest.fixture(autouse=True)
def one_thread():
    """Model tests run on one thread: the same numbers on every machine, and no oversubscribed CI runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(out: Path, **recipe_fields) -> Path:
    from packetclip_training.dataset.build import build_dataset
    from packetclip_training.dataset.recipe import Recipe

    build_dataset(Recipe(name=out.name, **recipe_fields), out)
    return out


@pytest.fixture(scope="session")
def real_packets(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(
        tmp_path_factory.mktemp("models") / "real-ndpi",
        real_manifest=real_data / "MANIFEST.tsv",
        real_include=[REAL_SUBSET],
    )


@pytest.fixture(scope="session")
def lab_packets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("models") / "lab-quick", lab_runs=[LAB_SAMPLE])
