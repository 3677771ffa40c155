"""The committed dataset sample (samples/dataset-default): intact, every class present, and masked as promised.

It is cut from the default dataset (lab `full` profile + real captures) and is what small training tests read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from packetclip.classes import FINE_CLASSES
from packetclip_training.dataset import load_split
from packetclip_training.dataset.store import iter_split, load_rows, read_columns

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


@pytest.mark.parametrize("rows", [1, 97, 1_000_000])
def test_reading_a_split_in_chunks_gives_the_whole_split_in_order(rows):
    columns = ("fine", "uid", "ts", "source_file")
    whole = load_split(SAMPLE, "val", columns=columns)
    chunks = list(iter_split(SAMPLE, "val", columns=columns, rows=rows))
    assert all(len(chunk["ts"]) <= rows for chunk in chunks)
    assert len(chunks) == -(-len(whole["ts"]) // rows)
    assert set(chunks[0]) == set(whole)
    for name, values in whole.items():
        np.testing.assert_array_equal(np.concatenate([chunk[name] for chunk in chunks]), values, err_msg=name)


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_split(SAMPLE, "val", rows=0))


def test_some_rows_read_chunk_by_chunk_are_those_rows_of_the_whole_split_in_the_order_asked():
    whole = load_split(SAMPLE, "val", columns=("fine", "uid"))
    rows = np.random.default_rng(0).permutation(len(whole["uid"]))[:50]
    taken = load_rows(SAMPLE, "val", rows, columns=("fine", "uid"), chunk=32)
    for name, values in whole.items():
        np.testing.assert_array_equal(taken[name], values[rows], err_msg=name)
    assert len(load_rows(SAMPLE, "val", np.zeros(0, np.int64), columns=("fine",))["bytes"]) == 0
    np.testing.assert_array_equal(read_columns(SAMPLE, "val", ("uid",))["uid"], whole["uid"])
    with pytest.raises(IndexError, match="rows outside"):
        load_rows(SAMPLE, "val", np.asarray([len(whole["uid"])]))


def test_a_split_without_connections_reads_as_one_empty_chunk(tmp_path):
    pq.write_table(pq.read_table(SAMPLE / "val.parquet").slice(0, 0), tmp_path / "val.parquet")
    chunks = list(iter_split(tmp_path, "val", columns=("fine",)))
    whole = load_split(SAMPLE, "val", columns=("fine",))
    assert len(chunks) == 1 and set(chunks[0]) == set(whole)
    for name, values in chunks[0].items():
        assert values.shape == (0, *whole[name].shape[1:]), name
    assert load_rows(tmp_path, "val", np.zeros(0, np.int64), columns=("fine",))["bytes"].shape == (0, 30, 128)
