"""Feedback: what an analyst says a verdict should have been, kept with the model input it can be learnt from.

Owns the feedback store, one SQLite file (WAL mode) that a sensor and `packetclip feedback` share:

- `inputs`, written by the sensor when the `keep_inputs` setting names the file (`InputStore`): for every recent
  verdict, what the models were fed for its connection — the packed packets (`packetclip.featurizer.pack`, only
  the valid ones), the reasoner's inputs (connection embedding, the originator context's features and validity,
  the context packets' embeddings for a reasoner that reads them, every responder feature) — and what came out
  (label, attack, scores), with the connection's identity and facts. Bounded twice: at most `max_rows` rows (the
  oldest leave first, counted) and none older than `max_age_days` days of wall-clock time (dropped at most every
  `SWEEP_EVERY` seconds, counted). One transaction per engine batch.
- `bundles`: one row per bundle that produced kept inputs (name, version, featurizer, the names of the feature
  columns), so a row need not repeat them.
- `feedback`, written by `packetclip feedback add` (`FeedbackStore.add`): the analyst's label (a coarse or fine
  class of `packetclip.classes`), a note and the time, with a copy of the input row, so a label outlives the
  input's eviction. One label per connection (uid and first-packet time): a second one replaces the first.

`export_rows` turns the labelled rows into `packetclip-feedback/1` records, one JSON object per line, each with its
arrays inline (dtype, shape, base64 of the little-endian C-order bytes); docs/feedback.md has the schema.

A sensor never stops for the store: a batch whose rows cannot be written (a locked, full or broken file) is
counted, the first failure logged, and writes pause `RETRY_AFTER` seconds so a locked file does not stall every
batch for the busy timeout. A file that cannot be opened at start is a one-line `FeedbackStoreError`.

Cost: with no store the engine does nothing per verdict. With one, a verdict costs the copy of its arrays into one
blob, one JSON record and one row insert; eviction deletes by primary key.

It does not choose the file (`packetclip.config`, the commands) and does not train anything (the factory reads
the export).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.context import RESPONDER_FEATURES

if TYPE_CHECKING:  # the engine imports this module; its types are only named here
    from packetclip.bundle import Bundle
    from packetclip.engine import BatchInference
    from packetclip.verdict import Verdict

log = logging.getLogger(__name__)

STORE_FORMAT = "packetclip-feedback-store/1"
EXPORT_FORMAT = "packetclip-feedback/1"
# about 0.5 GB with the default bundle (~5 KB a row on disk); at 2,000 verdicts a second, 50 s of them
DEFAULT_MAX_ROWS = 100_000
# long enough for a week's triage, short enough not to keep a sensor's traffic for long
DEFAULT_MAX_AGE_DAYS = 7
SWEEP_EVERY = 60.0  # seconds between expiry sweeps (each one scans the table once)
RETRY_AFTER = 10.0  # seconds without writes after a failed batch
BUSY_TIMEOUT_MS = 200  # the sensor waits at most this long for `feedback add` to finish writing
# what an analyst may say a connection is
CLASS_NAMES = tuple(dict.fromkeys((*COARSE_CLASSES, *FINE_CLASSES)))
PACKET_ARRAYS = ("bytes", "direction", "iat", "length", "valid")  # `pack`'s arrays, padded in the export
_BLOB_MAGIC = b"PCA1"
_SCORES = ("scores", "fine_scores")  # kept as arrays, exported in the verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (
    id INTEGER PRIMARY KEY,
    description TEXT NOT NULL UNIQUE  -- JSON: name, version, featurizer, feature names
);
CREATE TABLE IF NOT EXISTS inputs (
    id INTEGER PRIMARY KEY,   -- grows with every row: the smallest ids are the oldest
    kept REAL NOT NULL,       -- wall-clock epoch seconds when the sensor kept it (expiry)
    uid TEXT NOT NULL,
    community_id TEXT NOT NULL,
    ts REAL NOT NULL,         -- the connection's first packet
    bundle INTEGER NOT NULL REFERENCES bundles(id),
    record TEXT NOT NULL,     -- JSON: sensor, connection identity and facts, verdict
    arrays BLOB NOT NULL      -- the arrays (`encode_arrays`), last so scans skip it
);
CREATE INDEX IF NOT EXISTS inputs_uid ON inputs (uid);
CREATE INDEX IF NOT EXISTS inputs_community_id ON inputs (community_id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    added REAL NOT NULL,      -- epoch seconds of the analyst's (latest) label
    label TEXT NOT NULL,      -- a coarse or fine class, as the analyst gave it
    note TEXT NOT NULL,
    uid TEXT NOT NULL,
    community_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kept REAL NOT NULL,
    bundle TEXT NOT NULL,     -- the bundle's description (JSON), copied: bundles are never deleted, but copies
    record TEXT NOT NULL,     -- travel on their own
    arrays BLOB NOT NULL,
    UNIQUE (uid, ts)
);
"""


class FeedbackStoreError(ValueError):
    """A feedback store that cannot be used, or a request it cannot answer; the message is one line."""


# --- arrays in one blob -------------------------------------------------------------------------------------


def encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays as one blob: magic, a JSON layout [[name, dtype, shape], ...] and their bytes, in order."""
    layout = json.dumps([[name, a.dtype.str, a.shape] for name, a in arrays.items()], separators=(",", ":"))
    header = layout.encode()
    parts = [_BLOB_MAGIC, len(header).to_bytes(4, "little"), header]
    parts.extend(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return b"".join(parts)


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays `encode_arrays` wrote (read-only views of the blob)."""
    if blob[:4] != _BLOB_MAGIC:
        raise FeedbackStoreError("an input row's arrays are not in a known layout")
    size = int.from_bytes(blob[4:8], "little")
    offset = 8 + size
    arrays = {}
    for name, dtype, shape in json.loads(blob[8:offset]):
        kind = np.dtype(dtype)
        count = math.prod(shape)
        arrays[name] = np.frombuffer(blob, kind, count, offset).reshape(shape)
        offset += count * kind.itemsize
    return arrays


# --- opening ------------------------------------------------------------------------------------------------


def default_feedback_store() -> Path:
    """$XDG_DATA_HOME/packetclip/feedback.sqlite, or ~/.local/share/packetclip/feedback.sqlite."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "packetclip" / "feedback.sqlite"


def _why(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _connect(path: Path, create: bool, busy_ms: int) -> sqlite3.Connection:
    """A connection to a checked store; with `create` the file and its tables are made when missing."""
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            # the store holds addresses and packet headers: readable by its owner only (WAL files follow the mode)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        elif not path.is_file():
            raise FeedbackStoreError(
                f"{path}: no feedback store there (a sensor keeps inputs in one with --keep-inputs {path})"
            )
        connection = sqlite3.connect(
            path.resolve().as_uri() + "?mode=rw", uri=True, timeout=busy_ms / 1000, check_same_thread=False
        )
    except OSError as exc:
        raise FeedbackStoreError(f"{path}: cannot open feedback store ({_why(exc)})") from None
    except sqlite3.Error as exc:
        raise FeedbackStoreError(f"{path}: cannot open feedback store ({exc})") from None
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(
            "PRAGMA synchronous=NORMAL"
        )  # WAL: a crash loses at most the last batches, never the file
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if create and not tables:
            with connection:
                connection.executescript(_SCHEMA)
                connection.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
            tables = {"meta"}
        row = (
            connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if "meta" in tables
            else None
        )
        if row is None or row[0] != STORE_FORMAT:
            raise FeedbackStoreError(
                f"{path}: not a feedback store (format {row[0] if row else 'missing'}; expected {STORE_FORMAT})"
            )
    except sqlite3.Error as exc:
        connection.close()
        raise FeedbackStoreError(f"{path}: not a usable feedback store ({exc})") from None
    except FeedbackStoreError:
        connection.close()
        raise
    return connection


# --- the sensor's side --------------------------------------------------------------------------------------


@dataclass
class InputCounts:
    kept: int = 0  # rows written
    evicted: int = 0  # rows removed to stay within max_rows, oldest first
    expired: int = 0  # rows removed for being older than max_age_days
    write_errors: int = 0  # rows not written: their batch failed, or came while writes paused after a failure

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class InputStore:
    """The sensor's writer of the `inputs` table; the engine calls `keep` once per batch (see the module)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_rows: int = DEFAULT_MAX_ROWS,
        max_age_days: float = DEFAULT_MAX_AGE_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_rows < 1 or max_age_days <= 0:
            raise ValueError("max_rows and max_age_days must be positive")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_age = max_age_days * 86400.0
        self.clock = clock
        self.counts = InputCounts()
        self._db = _connect(self.path, create=True, busy_ms=BUSY_TIMEOUT_MS)
        self._bundle: tuple[Bundle, int] | None = None  # the last bundle's row id, looked up once per bundle
        self._paused_until = -math.inf
        self._failing = False
        try:
            self._rows = self._db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0]
            self._sweep(self.clock())
        except sqlite3.Error as exc:
            self._db.close()
            raise FeedbackStoreError(f"{self.path}: not a usable feedback store ({exc})") from None

    def keep(self, inference: BatchInference, verdicts: Sequence[Verdict], bundle: Bundle) -> None:
        """Write one batch's inputs and verdicts (row i of `inference` is `verdicts[i]`); never raises for the
        store's sake."""
        if not verdicts:
            return
        now = self.clock()
        if now < self._paused_until:
            self.counts.write_errors += len(verdicts)
            return
        try:
            rows = self._rows_of(inference, verdicts, now, self._bundle_id(bundle))
            with self._db:
                self._db.executemany(
                    "INSERT INTO inputs (kept, uid, community_id, ts, bundle, record, arrays) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._rows += len(rows)
                excess = self._rows - self.max_rows
                if excess > 0:
                    evicted = self._db.execute(
                        "DELETE FROM inputs WHERE id IN (SELECT id FROM inputs ORDER BY id LIMIT ?)",
                        (excess,),
                    ).rowcount
                    self._rows -= evicted
                    self.counts.evicted += evicted
            self.counts.kept += len(rows)
            if now >= self._next_sweep:
                self._sweep(now)
        except (sqlite3.Error, OSError) as exc:
            self._bundle = None  # a failed transaction may have taken the bundle's row with it
            self.counts.write_errors += len(verdicts)
            self._paused_until = now + RETRY_AFTER
            if not self._failing:
                log.error("kept inputs not written to %s (verdicts go on; counted): %s", self.path, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("kept inputs written to %s again", self.path)
            self._failing = False

    def close(self) -> None:
        self._db.close()

    def describe(self) -> str:
        """One line for a summary: how many rows went in, and out, of which file."""
        counts = self.counts
        line = f"{counts.kept} in {self.path}"
        if counts.evicted or counts.expired:
            line += f" ({counts.evicted} evicted for room, {counts.expired} expired)"
        if counts.write_errors:
            line += f"; {counts.write_errors} not written (see the log)"
        return line

    def _sweep(self, now: float) -> None:
        with self._db:
            expired = self._db.execute("DELETE FROM inputs WHERE kept < ?", (now - self.max_age,)).rowcount
        self.counts.expired += expired
        # another writer (a second sensor on the same file) may have added rows: count them again here
        self._rows = self._db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0]
        self._next_sweep = now + SWEEP_EVERY

    def _bundle_id(self, bundle: Bundle) -> int:
        if self._bundle is not None and self._bundle[0] is bundle:
            return self._bundle[1]
        description = json.dumps(describe_bundle(bundle), sort_keys=True)
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO bundles (description) VALUES (?)", (description,))
        row_id = self._db.execute("SELECT id FROM bundles WHERE description = ?", (description,)).fetchone()[
            0
        ]
        self._bundle = (bundle, row_id)
        return int(row_id)

    @staticmethod
    def _rows_of(
        inference: BatchInference, verdicts: Sequence[Verdict], now: float, bundle_id: int
    ) -> list[tuple[Any, ...]]:
        packed = inference.packed
        counts = packed["valid"].sum(axis=1).tolist()
        reads_context = inference.context.shape[-1] > 0
        rows = []
        for row, (conn, verdict) in enumerate(zip(inference.connections, verdicts, strict=True)):
            n = counts[row]
            arrays = {
                "bytes": packed["bytes"][
                    row, :n
                ],  # (n, S): only the valid packets; the export pads them again
                "direction": packed["direction"][row, :n],
                "iat": packed["iat"][row, :n],
                "length": packed["length"][row, :n],
                "connection": inference.connection_embedding[row],  # (E,)
                "context_features": inference.context_features[row],  # (A, F) the columns the reasoner read
                "context_valid": inference.context_valid[row],  # (A,)
                "responder_features": inference.responder_features[
                    row
                ],  # (V,) every RESPONDER_FEATURES column
            }
            if reads_context:
                arrays["context"] = inference.context[row]  # (A, E)
            # the verdict's probabilities travel as arrays (the bundle names the classes): cheaper than JSON
            arrays["scores"] = np.fromiter(verdict.scores.values(), np.float64)  # (C,)
            arrays["fine_scores"] = np.fromiter(verdict.fine_scores.values(), np.float64)  # (F,)
            record = {
                "sensor": inference.sensor,
                "connection": conn.record(),
                "last_ts": conn.last_ts,
                "verdict": {
                    "label": verdict.label,
                    "attack": verdict.attack,
                    "score": verdict.score,
                    "allowed": verdict.allowed,
                },
            }
            rows.append(
                (
                    now,
                    conn.uid,
                    conn.community_id,
                    conn.ts,
                    bundle_id,
                    json.dumps(record, separators=(",", ":")),
                    encode_arrays(arrays),
                )
            )
        return rows


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    """What a reader of kept inputs needs to know of the bundle behind them."""
    manifest = bundle.manifest
    encoder = bundle.model_paths.get("encoder")
    return {
        "name": bundle.name,
        "version": bundle.version,
        "featurizer_version": str(manifest.get("featurizer_version", bundle.featurizer.get("version", ""))),
        "featurizer": bundle.featurizer,
        "coarse_classes": list(bundle.coarse_classes),  # the order of the kept `scores`
        "fine_classes": list(bundle.fine_classes),  # the order of the kept `fine_scores`
        "encoder_sha256": "" if encoder is None else str(manifest.get("files", {}).get(encoder.name, "")),
        "context_slots": bundle.context_slots,
        "context_features": list(bundle.context_features),  # the columns of the kept `context_features`
        "responder_features": list(RESPONDER_FEATURES),  # the columns of the kept `responder_features`
        "reasoner_responder_features": list(bundle.responder_features),  # the columns the reasoner read
    }


# --- the analyst's side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    """One connection labelled by `FeedbackStore.add`."""

    uid: str
    community_id: str
    ts: float
    verdict_label: str
    verdict_attack: str
    replaced: str | None  # the label this one replaced; None: the connection had none


class FeedbackStore:
    """`packetclip feedback`'s access to a store a sensor made; never creates one."""

    def __init__(self, path: str | os.PathLike[str], busy_ms: int = 5000) -> None:
        self.path = Path(path)
        self._db = _connect(self.path, create=False, busy_ms=busy_ms)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(
        self,
        label: str,
        note: str = "",
        uid: str | None = None,
        community_id: str | None = None,
        now: float | None = None,
    ) -> list[Labelled]:
        """Label the kept connection `uid`, or every kept connection of `community_id` (its newest input each:
        a capture classified twice keeps a connection twice)."""
        if label not in CLASS_NAMES:
            raise FeedbackStoreError(f"unknown label {label!r} (known: {', '.join(CLASS_NAMES)})")
        if (uid is None) == (community_id is None):
            raise FeedbackStoreError("give a uid or a community_id")
        column, value = ("uid", uid) if uid is not None else ("community_id", community_id)
        added = time.time() if now is None else now
        try:
            with self._db:
                found = self._db.execute(
                    "SELECT i.uid, i.community_id, i.ts, i.kept, b.description, i.record, i.arrays "
                    f"FROM inputs i JOIN bundles b ON b.id = i.bundle WHERE i.{column} = ? "
                    "AND i.id = (SELECT MAX(id) FROM inputs WHERE uid = i.uid) ORDER BY i.ts, i.uid",
                    (value,),
                ).fetchall()
                if not found:
                    what = "uid" if uid is not None else "community_id"
                    raise FeedbackStoreError(
                        f"{what} {value}: no kept input in {self.path} (never kept there, or evicted or expired)"
                    )
                labelled = []
                for row_uid, row_cid, ts, kept, bundle, record, arrays in found:
                    before = self._db.execute(
                        "SELECT label FROM feedback WHERE uid = ? AND ts = ?", (row_uid, ts)
                    ).fetchone()
                    self._db.execute(
                        "INSERT INTO feedback (added, label, note, uid, community_id, ts, kept, bundle, record, "
                        "arrays) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid, ts) DO UPDATE SET "
                        "added = excluded.added, label = excluded.label, note = excluded.note",
                        (added, label, note, row_uid, row_cid, ts, kept, bundle, record, arrays),
                    )
                    verdict = json.loads(record)["verdict"]
                    labelled.append(
                        Labelled(
                            row_uid,
                            row_cid,
                            ts,
                            verdict["label"],
                            verdict["attack"],
                            before[0] if before else None,
                        )
                    )
                return labelled
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{self.path}: cannot record feedback ({exc})") from None

    def rows(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The labelled connections, oldest label first, as `export_record` reads them (arrays still a blob)."""
        try:
            cursor = self._db.execute(
                "SELECT id, added, label, note, uid, community_id, ts, kept, bundle, record, arrays "
                "FROM feedback WHERE added >= ? ORDER BY added, id",
                (-math.inf if since is None else since,),
            )
            names = [c[0] for c in cursor.description]
            for values in cursor:
                yield dict(zip(names, values, strict=True))
        except sqlite3.Error as exc:
            raise FeedbackStoreError(f"{self.path}: cannot read feedback ({exc})") from None


def iso_utc(seconds: float) -> str:
    return (
        dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def summary_record(row: dict[str, Any]) -> dict[str, Any]:
    """A labelled connection without its arrays (`packetclip feedback list`)."""
    record, bundle = json.loads(row["record"]), json.loads(row["bundle"])
    connection = record["connection"]
    return {
        "id": row["id"],
        "added": iso_utc(row["added"]),
        "label": row["label"],
        "note": row["note"],
        "uid": row["uid"],
        "community_id": row["community_id"],
        "ts": row["ts"],
        "id.orig_h": connection["orig_h"],
        "id.orig_p": connection["orig_p"],
        "id.resp_h": connection["resp_h"],
        "id.resp_p": connection["resp_p"],
        "proto": connection["proto"],
        "verdict": record["verdict"]["label"],
        "verdict_attack": record["verdict"]["attack"],
        "model": f"{bundle['name']} {bundle['version']}",
    }


def export_record(row: dict[str, Any]) -> dict[str, Any]:
    """One `packetclip-feedback/1` record (docs/feedback.md): the label, the note, the connection, the verdict,
    the bundle and the arrays, packet arrays padded to the bundle's `max_packets` as `pack` gives them."""
    record, bundle = json.loads(row["record"]), json.loads(row["bundle"])
    kept = decode_arrays(row["arrays"])
    max_packets = int(bundle["featurizer"].get("max_packets", len(kept["iat"])))
    n = len(kept["iat"])
    arrays: dict[str, np.ndarray] = {}
    for name in PACKET_ARRAYS:
        if name == "valid":
            padded = np.zeros(max_packets, bool)
            padded[:n] = True
        else:
            part = kept[name]
            padded = np.zeros((max_packets, *part.shape[1:]), part.dtype)
            padded[:n] = part
        arrays[name] = padded
    arrays.update((name, value) for name, value in kept.items() if name not in (*PACKET_ARRAYS, *_SCORES))
    scores = {
        "scores": dict(zip(bundle["coarse_classes"], kept["scores"].tolist(), strict=True)),
        "fine_scores": dict(zip(bundle["fine_classes"], kept["fine_scores"].tolist(), strict=True)),
    }
    label = row["label"]
    return {
        "format": EXPORT_FORMAT,
        "label": label,
        "coarse": label if label in COARSE_CLASSES else FINE_TO_COARSE[label],
        "fine": label if label in FINE_CLASSES else None,
        "note": row["note"],
        "added": iso_utc(row["added"]),
        "uid": row["uid"],
        "community_id": row["community_id"],
        "ts": row["ts"],
        "kept": iso_utc(row["kept"]),
        "sensor": record["sensor"],
        "connection": {**record["connection"], "last_ts": record["last_ts"]},
        "verdict": {**record["verdict"], **scores, "model": bundle["version"]},
        "bundle": bundle,
        "arrays": {name: _inline(value) for name, value in arrays.items()},
    }


def _inline(value: np.ndarray) -> dict[str, Any]:
    """An array as JSON: little-endian dtype string, shape, base64 of its C-order bytes."""
    little = value.dtype.newbyteorder("<")
    data = np.ascontiguousarray(value, little).tobytes()
    return {"dtype": little.str, "shape": list(value.shape), "data": base64.b64encode(data).decode("ascii")}


def read_export_arrays(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of one exported record (what a reader of the export does; the tests use it)."""
    return {
        name: np.frombuffer(base64.b64decode(spec["data"]), np.dtype(spec["dtype"])).reshape(spec["shape"])
        for name, spec in record["arrays"].items()
    }


def parse_since(text: str) -> float:
    """Epoch seconds of a date (its start, UTC) or an ISO date-time (UTC unless it has an offset)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FeedbackStoreError(f"{text!r}: expected a date (2027-03-31) or an ISO date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
