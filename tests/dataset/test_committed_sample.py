"""The committed dataset sample (samples/dataset-default): intact, every class present, and masked as promised.

It is cut from the default dataset (lab `full` profile + real captures) and is what small training tests read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from packetclip.classes import FINE_CLASSES
from packetclip_training.dataset import load_split

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"


def test_files_match_the_manifest_hashes():
    manifest = json.loads((SAMPLE / "manifest.json").read_text())["files"]
    for name, digest in manifest.items():
        assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == digest, name


def test_every_fine_class_is_in_train_and_shapes_are_the_models():
    train = load_split(SAMPLE, "train")
    assert set(train["fine"]) == set(FINE_CLASSES)
    assert train["bytes"].shape[1:] == (30, 128) and train["valid"].any(axis=1).all()


def test_lab_identifying_ipv4_fields_are_zero_in_every_packet():
    for split in ("train", "val", "test"):
        data = load_split(SAMPLE, split)
        packets = data["bytes"][data["valid"]]  # (P, 128)
        ipv4 = packets[packets[:, 0] >> 4 == 4]
        assert len(ipv4) > 100
        # identification, TTL, header checksum, source and destination addresses
        for start, end in ((4, 6), (8, 9), (10, 20)):
            assert not ipv4[:, start:end].any(), (split, start, end)
        # what is kept is not all zero: protocol and total length survive masking
        assert ipv4[:, 9].any() and ipv4[:, 2:4].any()
        assert np.isin(ipv4[:, 9], (1, 6, 17)).all()
