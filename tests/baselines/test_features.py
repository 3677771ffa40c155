"""The flow feature matrix reads only Zeek-conn-like facts: provenance can neither enter nor change it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from packetclip_training.baselines.features import FACT_COLUMNS, feature_matrix, read_facts

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "dataset-default"
PROVENANCE = (
    "orig_h",
    "orig_p",
    "resp_h",
    "ts",
    "last_ts",
    "uid",
    "community_id",
    "source",
    "source_file",
    "sha256",
)


def _all_columns(split: str) -> dict[str, np.ndarray]:
    table = pq.read_table(SAMPLE / f"{split}.parquet", columns=[*FACT_COLUMNS, *PROVENANCE, "fine"])
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def test_feature_names_hold_no_provenance():
    names = feature_matrix(read_facts(SAMPLE, "test")).names
    for forbidden in PROVENANCE:
        assert not any(name == forbidden or name.startswith(f"{forbidden}=") for name in names), forbidden
    assert "resp_p" in names


def test_read_facts_returns_no_provenance_columns():
    facts = read_facts(SAMPLE, "train")
    assert not set(PROVENANCE) & set(facts)


def test_permuting_provenance_leaves_features_unchanged():
    columns = _all_columns("test")
    before = feature_matrix(columns).values
    rng = np.random.default_rng(7)
    shuffled = dict(columns)
    for name in ("orig_h", "ts", "uid", "orig_p"):
        shuffled[name] = rng.permutation(columns[name])
    after = feature_matrix(shuffled).values
    np.testing.assert_array_equal(before, after)
    # The permutation is real: the shuffled columns differ, so equality above is not vacuous.
    assert (shuffled["uid"] != columns["uid"]).any()


def test_features_follow_the_facts_they_come_from():
    columns = _all_columns("test")
    matrix = feature_matrix(columns)
    reordered = np.random.default_rng(3).permutation(len(columns["fine"]))
    permuted = feature_matrix({k: v[reordered] for k, v in columns.items()})
    np.testing.assert_array_equal(matrix.values[reordered], permuted.values)
    duration = matrix.values[:, matrix.names.index("duration")]
    expected = np.array([np.nan if v is None else v for v in columns["duration"]], dtype=np.float32)
    np.testing.assert_array_equal(duration, expected)


def test_no_resp_port_drops_only_the_port():
    facts = read_facts(SAMPLE, "val")
    with_port = feature_matrix(facts, include_resp_port=True)
    without = feature_matrix(facts, include_resp_port=False)
    assert set(with_port.names) - set(without.names) == {"resp_p"}
    assert without.values.shape == (len(facts["fine"]), len(without.names))


def test_history_letters_are_counted_with_direction():
    facts = {name: np.array([None, None]) for name in FACT_COLUMNS}
    facts.update(
        history=np.array(["ShADadFf", None], dtype=object),
        conn_state=np.array(["SF", "weird"], dtype=object),
        service=np.array(["ssl,http", None], dtype=object),
        proto=np.array(["tcp", "udp"], dtype=object),
    )
    matrix = feature_matrix(facts)
    row = dict(zip(matrix.names, matrix.values[0], strict=True))
    assert row["history_orig_S"] == 1 and row["history_resp_H"] == 1 and row["history_resp_D"] == 1
    assert row["history_length"] == 8
    assert row["service=ssl"] == 1 and row["service=http"] == 1 and row["service=none"] == 0
    other = dict(zip(matrix.names, matrix.values[1], strict=True))
    assert other["conn_state=other"] == 1 and other["service=none"] == 1 and np.isnan(other["duration"])


@pytest.mark.parametrize("split", ["nope"])
def test_missing_split_is_a_clear_error(split):
    with pytest.raises(FileNotFoundError, match="no such split"):
        read_facts(SAMPLE, split)
