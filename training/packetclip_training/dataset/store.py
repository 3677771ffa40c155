"""The columnar layout of a dataset split and its fast reader.

Owns the parquet schema (provenance, labels, facts, model input), turning featurized connections into record
batches, incremental writing, and `load_split`, which returns the arrays `packetclip.featurizer.pack` would.
Does not decide labels or splits.

Addresses and ports are kept for audit only: `load_split` never returns them as model input.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from packetclip_training.dataset.labelling import Label

log = logging.getLogger(__name__)

FACT_TYPES: dict[str, pa.DataType] = {
    "duration": pa.float64(),
    "orig_pkts": pa.int64(),
    "resp_pkts": pa.int64(),
    "orig_bytes": pa.int64(),
    "resp_bytes": pa.int64(),
    "orig_ip_bytes": pa.int64(),
    "resp_ip_bytes": pa.int64(),
    "conn_state": pa.string(),
    "history": pa.string(),
    "service": pa.string(),
    "n_packets": pa.int64(),
}

PROVENANCE_TYPES: dict[str, pa.DataType] = {
    "source_kind": pa.string(),  # lab | real | flows
    "source": pa.string(),  # the unit the split is cut in: lab run, real file, CSV
    "source_file": pa.string(),  # the capture the connection was read from
    "sha256": pa.string(),  # of source_file
    "uid": pa.string(),
    "community_id": pa.string(),
    "orig_h": pa.string(),
    "orig_p": pa.int32(),
    "resp_h": pa.string(),
    "resp_p": pa.int32(),
    "proto": pa.string(),
    "ts": pa.float64(),
    "last_ts": pa.float64(),
}

LABEL_TYPES: dict[str, pa.DataType] = {
    "coarse": pa.string(),
    "fine": pa.string(),
    "variant": pa.string(),
    "heldout": pa.bool_(),
    "episode": pa.string(),
}

METADATA_KEY = b"packetclip.dataset"


@dataclass(frozen=True)
class InputShape:
    """The model-input geometry a dataset was built with."""

    max_packets: int
    snaplen: int
    featurizer_version: str


def schema(shape: InputShape) -> pa.Schema:
    n, s = shape.max_packets, shape.snaplen
    fields = [
        pa.field(name, kind) for name, kind in {**PROVENANCE_TYPES, **LABEL_TYPES, **FACT_TYPES}.items()
    ]
    fields += [
        pa.field("n", pa.int16()),  # valid packets among the first max_packets
        pa.field("bytes", pa.binary(n * s)),  # (N, S) uint8 row-major
        pa.field("direction", pa.list_(pa.int8(), n)),
        pa.field("iat", pa.list_(pa.float32(), n)),
        pa.field("length", pa.list_(pa.int32(), n)),
        pa.field("featurizer_version", pa.string()),
    ]
    meta = {
        "max_packets": n,
        "snaplen": s,
        "featurizer_version": shape.featurizer_version,
    }
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta).encode()})


@dataclass(frozen=True)
class Provenance:
    source_kind: str
    source: str
    source_file: str
    sha256: str


def record_batch(
    connections: Sequence,
    labels: Sequence[Label],
    provenance: Sequence[Provenance],
    packed: dict,
    shape: InputShape,
) -> pa.RecordBatch:
    """Rows for featurized connections; `packed` is `pack(connections, config)`."""
    n, s = shape.max_packets, shape.snaplen
    count = len(connections)
    columns: dict[str, pa.Array] = {}
    columns["source_kind"] = pa.array([p.source_kind for p in provenance], pa.string())
    columns["source"] = pa.array([p.source for p in provenance], pa.string())
    columns["source_file"] = pa.array([p.source_file for p in provenance], pa.string())
    columns["sha256"] = pa.array([p.sha256 for p in provenance], pa.string())
    for name in ("uid", "community_id", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "ts", "last_ts"):
        columns[name] = pa.array([getattr(c, name) for c in connections], PROVENANCE_TYPES[name])
    for name in ("coarse", "fine", "variant", "heldout", "episode"):
        columns[name] = pa.array([getattr(label, name) for label in labels], LABEL_TYPES[name])
    facts = [c.facts() for c in connections]
    for name, kind in FACT_TYPES.items():
        columns[name] = pa.array([f.get(name) for f in facts], kind)
    valid = np.asarray(packed["valid"], dtype=bool).reshape(count, n)
    columns["n"] = pa.array(valid.sum(axis=1).astype(np.int16))
    raw = np.ascontiguousarray(packed["bytes"], dtype=np.uint8).reshape(count, n * s)
    columns["bytes"] = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(n * s), count, [None, pa.py_buffer(raw)]
    )
    columns["direction"] = _fixed_list(packed["direction"], np.int8, n)
    columns["iat"] = _fixed_list(packed["iat"], np.float32, n)
    columns["length"] = _fixed_list(packed["length"], np.int32, n)
    columns["featurizer_version"] = pa.array([shape.featurizer_version] * count, pa.string())
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=schema(shape))


def _fixed_list(values: np.ndarray, dtype: type, width: int) -> pa.FixedSizeListArray:
    flat: np.ndarray = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


class SplitWriter:
    """Appends record batches to one parquet file; the file is complete once `close` returns."""

    def __init__(self, path: Path, shape: InputShape, compression: str = "zstd"):
        self.path = Path(path)
        self.rows = 0
        self._writer = pq.ParquetWriter(self.path, schema(shape), compression=compression)

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()


def read_shape(path: Path) -> InputShape:
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    return InputShape(int(meta["max_packets"]), int(meta["snaplen"]), str(meta["featurizer_version"]))


def iter_batches(path: Path, columns: Iterable[str] | None = None, batch_size: int = 4096):
    yield from pq.ParquetFile(path).iter_batches(
        batch_size=batch_size, columns=list(columns) if columns else None
    )


LABEL_OUTPUTS = ("coarse", "fine", "variant", "heldout", "uid", "source", "ts")


def load_split(
    directory: str | Path, split: str, columns: Iterable[str] = LABEL_OUTPUTS
) -> dict[str, np.ndarray]:
    """One split as numpy arrays shaped like `pack`'s output, plus the requested label/provenance columns.

    Model input: `bytes` uint8 (B, N, S), `direction` int8 (B, N), `iat` float32 (B, N), `length` int32 (B, N),
    `valid` bool (B, N). Extra keys: one numpy array per name in `columns` (strings as object arrays).
    """
    path = _split_path(directory, split)
    extra = list(dict.fromkeys(columns))
    table = pq.read_table(path, columns=[*_MODEL_COLUMNS, *extra])
    return _split_arrays(table, read_shape(path), extra)


def iter_split(
    directory: str | Path, split: str, columns: Iterable[str] = LABEL_OUTPUTS, rows: int = 65536
) -> Iterator[dict[str, np.ndarray]]:
    """`load_split`'s arrays `rows` connections at a time, in split order: what a pass over a split that does not
    fit in memory as model input reads (a 1 M-connection split of 30 × 128-byte packets is 3.8 GB of bytes). A split
    without connections gives one empty chunk, its arrays shaped as `load_split`'s."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    path = _split_path(directory, split)
    shape = read_shape(path)
    extra = list(dict.fromkeys(columns))
    empty = True
    for batch in iter_batches(path, [*_MODEL_COLUMNS, *extra], batch_size=rows):
        empty = False
        yield _split_arrays(pa.Table.from_batches([batch]), shape, extra)
    if empty:
        yield _split_arrays(pq.read_table(path, columns=[*_MODEL_COLUMNS, *extra]), shape, extra)


def read_columns(directory: str | Path, split: str, columns: Iterable[str]) -> dict[str, np.ndarray]:
    """Label or provenance columns of a split without its model input (strings as object arrays)."""
    names = list(dict.fromkeys(columns))
    table = pq.read_table(_split_path(directory, split), columns=names)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in names}


def load_rows(
    directory: str | Path,
    split: str,
    rows: np.ndarray,
    columns: Iterable[str] = LABEL_OUTPUTS,
    chunk: int = 65536,
) -> dict[str, np.ndarray]:
    """`load_split`'s arrays for some rows of a split (in the order of `rows`), read `chunk` connections at a
    time: memory holds the rows kept and one chunk, never the whole split's packet bytes."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    parts: list[dict[str, np.ndarray]] = []
    start = 0
    for arrays in iter_split(directory, split, columns, rows=chunk):
        count = len(arrays["valid"])
        low, high = np.searchsorted(wanted, [start, start + count])
        parts.append({name: values[wanted[low:high] - start] for name, values in arrays.items()})
        start += count
    if len(wanted) and (wanted[0] < 0 or wanted[-1] >= start):
        raise IndexError(f"{split}: rows outside 0..{start - 1}")
    taken = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return {name: values[restore] for name, values in taken.items()}


_MODEL_COLUMNS = ("n", "bytes", "direction", "iat", "length")


def _split_path(directory: str | Path, split: str) -> Path:
    path = Path(directory) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split (expected train, val or test of a built dataset)")
    return path


def _split_arrays(table: pa.Table, shape: InputShape, extra: Sequence[str]) -> dict[str, np.ndarray]:
    n, s = shape.max_packets, shape.snaplen
    count = table.num_rows
    out: dict[str, np.ndarray] = {}
    raw = table.column("bytes").combine_chunks() if count else None
    if raw is not None:
        buffer = np.frombuffer(raw.buffers()[1], dtype=np.uint8)
        width = n * s
        out["bytes"] = buffer[raw.offset * width : (raw.offset + count) * width].reshape(count, n, s)
    else:
        out["bytes"] = np.zeros((0, n, s), np.uint8)
    for name, dtype in (("direction", np.int8), ("iat", np.float32), ("length", np.int32)):
        column = table.column(name).combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False) if count else np.zeros(0, dtype)
        out[name] = flat.astype(dtype, copy=False).reshape(count, n)
    valid_counts = table.column("n").to_numpy().astype(np.int64)
    out["valid"] = np.arange(n)[None, :] < valid_counts[:, None]
    for name in extra:
        out[name] = table.column(name).to_numpy(zero_copy_only=False)
    return out
