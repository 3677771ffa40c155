"""Reading the inputs of a dataset: lab run directories, the real-capture MANIFEST and CICFlowMeter flow CSVs.

Owns file formats, integrity checks (sha256 prefixes of real captures) and the flow-to-connection join. Does not
featurize packets (`packetclip.featurizer`), decide labels (`labelling`) nor split (`splits`).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from packetclip_training.dataset.labelling import (
    BUILTIN_LABEL_MAPS,
    ConnectionKey,
    Drop,
    Episode,
    FlowLabelMap,
    Label,
    LabLabeller,
    ManifestLabeller,
    parse_network,
)

log = logging.getLogger(__name__)


class SourceError(Exception):
    """An input that cannot be used as it is; the message names the file and what is wrong."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_tsv(path: Path, required: list[str]) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header; a missing column is an error naming the file."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{path}: missing column(s) {', '.join(missing)}")
        return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]


# ---------------------------------------------------------------------------------------------------------------
# Lab runs

LABELS_COLUMNS = [
    "episode",
    "scenario",
    "variant",
    "coarse",
    "fine",
    "attacker_ip",
    "target",
    "start_ts",
    "end_ts",
    "tool",
    "command",
    "heldout",
]
HOSTS_COLUMNS = ["ip", "role", "name"]


@dataclass
class LabRun:
    """A lab run directory (CONTRACTS.md section 2)."""

    path: Path
    captures: list[Path]
    episodes: list[Episode]
    hosts: dict[str, str]  # ip -> role
    info: dict

    @property
    def name(self) -> str:
        return self.path.name

    def labeller(self) -> LabLabeller:
        return LabLabeller(self.episodes, self.hosts)

    def input_files(self) -> list[Path]:
        return [*self.captures, self.path / "labels.tsv", self.path / "hosts.tsv", self.path / "run.json"]


def load_lab_run(path: Path) -> LabRun:
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"lab run {path}: not a directory")
    captures = sorted(path.glob("capture*.pcap")) + sorted(path.glob("capture*.pcapng"))
    if not captures:
        raise SourceError(f"lab run {path}: no capture*.pcap")
    for name in ("labels.tsv", "hosts.tsv", "run.json"):
        if not (path / name).is_file():
            raise SourceError(f"lab run {path}: missing {name}")
    episodes = [_episode(path / "labels.tsv", row) for row in read_tsv(path / "labels.tsv", LABELS_COLUMNS)]
    hosts = {row["ip"].strip(): row["role"].strip() for row in read_tsv(path / "hosts.tsv", HOSTS_COLUMNS)}
    try:
        info = json.loads((path / "run.json").read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"lab run {path}: run.json is not JSON: {exc}") from None
    return LabRun(path=path, captures=captures, episodes=episodes, hosts=hosts, info=info)


def _episode(path: Path, row: dict[str, str]) -> Episode:
    try:
        label = Label.of_fine(row["fine"].strip())
        if label.coarse != row["coarse"].strip():
            raise ValueError(f"coarse {row['coarse']!r} does not match fine {row['fine']!r}")
        return Episode(
            episode=row["episode"].strip(),
            scenario=row["scenario"].strip(),
            variant=row["variant"].strip(),
            coarse=label.coarse,
            fine=label.fine,
            attacker=parse_network(row["attacker_ip"]),
            target=row["target"].strip(),
            start_ts=float(row["start_ts"]),
            end_ts=float(row["end_ts"]),
            tool=row["tool"].strip(),
            heldout=row["heldout"].strip() == "1",
        )
    except (KeyError, ValueError) as exc:
        raise SourceError(f"{path}: episode {row.get('episode', '?')!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Real captures

MANIFEST_COLUMNS = [
    "file",
    "bytes",
    "sha256_16",
    "source_repo",
    "source_path",
    "license",
    "label",
    "attack",
    "attacker_ip",
    "evidence",
]


@dataclass
class RealCapture:
    """One verified file of a real-capture MANIFEST."""

    file: str  # as written in the manifest, relative to its directory
    path: Path
    sha256: str
    labeller: ManifestLabeller
    fine: str


def load_manifest(manifest: Path, include: list[str] | None = None) -> list[RealCapture]:
    """The manifest's files matching any `include` glob (all when None), each verified against its sha256_16.

    A missing file or a hash mismatch refuses the whole manifest: a dataset silently built from other bytes than
    the manifest describes would carry wrong labels.
    """
    manifest = Path(manifest)
    rows = read_tsv(manifest, MANIFEST_COLUMNS)
    captures = []
    for row in rows:
        name = row["file"].strip()
        if include is not None and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
            continue
        path = manifest.parent / name
        if not path.is_file():
            raise SourceError(f"{manifest}: listed file {name} does not exist at {path}")
        digest = sha256_file(path)
        expected = row["sha256_16"].strip().lower()
        if not expected or not digest.startswith(expected):
            raise SourceError(
                f"{manifest}: sha256 mismatch for {name}: manifest says {expected or '(empty)'}, "
                f"file has {digest[:16]}; refusing to label bytes the manifest does not describe"
            )
        try:
            labeller = ManifestLabeller(name, row["label"].strip(), row["attack"].strip(), row["attacker_ip"])
        except ValueError as exc:
            raise SourceError(f"{manifest}: {exc}") from None
        captures.append(RealCapture(name, path, digest, labeller, row["attack"].strip()))
    if include is not None and not captures:
        raise SourceError(f"{manifest}: no file matches {include}")
    return captures


# ---------------------------------------------------------------------------------------------------------------
# CICFlowMeter flow CSVs

FLOW_COLUMNS = ["Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp", "Label"]
# CIC-IDS2017 spells the endpoints out (" Source IP", " Destination Port", ...)
COLUMN_ALIASES = {
    "Source IP": "Src IP",
    "Source Port": "Src Port",
    "Destination IP": "Dst IP",
    "Destination Port": "Dst Port",
}
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "icmpv6": 58}
ICMP_PROTOS = {1, 58}

# Timestamp styles seen in CICFlowMeter outputs, tried in order; the second number is the resolution in seconds
# (a flow stamped "HH:MM" started somewhere in that minute, so the join window widens by it).
TIMESTAMP_FORMATS: list[tuple[str, float]] = [
    ("%d/%m/%Y %H:%M:%S.%f", 1e-6),
    ("%d/%m/%Y %H:%M:%S", 1.0),
    ("%d/%m/%Y %I:%M:%S %p", 1.0),
    ("%d/%m/%Y %H:%M", 60.0),
    ("%d/%m/%Y %I:%M %p", 60.0),
    ("ISO8601", 1e-6),
]


@dataclass
class FlowTable:
    """Labelled flows of one CSV, indexed by protocol and unordered endpoint pair for the join."""

    csv_path: Path
    index: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]  # key -> (start, resolution, row number)
    labels: list[Label]  # per kept row
    flow_ids: list[str]
    matched: np.ndarray  # bool per kept row
    dropped: Counter = field(default_factory=Counter)  # rows left out, by reason
    rows: int = 0


def canonical_key(proto: int, a: str, a_port: int, b: str, b_port: int) -> tuple:
    """One key for both directions of a flow; ICMP ignores ports (CICFlowMeter writes 0, Zeek the type/code)."""
    if proto in ICMP_PROTOS:
        return (proto, *sorted((a, b)))
    return (proto, *sorted(((a, a_port), (b, b_port))))


def read_csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return next(csv.reader(handle))


def parse_timestamps(values: pd.Series, dayfirst: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Naive CSV timestamps -> (epoch seconds as if UTC, resolution seconds); NaN where no style fits.

    Vectorised per style: each format parses what the previous ones left unparsed.
    """
    text = values.astype("string").str.strip()
    seconds = np.full(len(text), np.nan)
    resolution = np.full(len(text), np.nan)
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    is_numeric = ~np.isnan(numeric)
    # plain epoch numbers: seconds, milliseconds or microseconds by magnitude
    scale = np.where(numeric > 1e14, 1e-6, np.where(numeric > 1e11, 1e-3, 1.0))
    seconds[is_numeric] = (numeric * scale)[is_numeric]
    resolution[is_numeric] = 1e-6
    for fmt, res in TIMESTAMP_FORMATS:
        todo = np.isnan(seconds)
        if not todo.any():
            break
        fmt_used = fmt if dayfirst or fmt == "ISO8601" else fmt.replace("%d/%m", "%m/%d")
        parsed = pd.to_datetime(text[todo], format=fmt_used, errors="coerce", utc=True)
        ok = parsed.notna().to_numpy()
        # unit-agnostic: pandas picks s/ms/us/ns resolution by version and input
        epoch = (
            (parsed[ok] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            if ok.any()
            else np.empty(0)
        )
        where = np.flatnonzero(todo)[ok]
        seconds[where] = epoch
        resolution[where] = res
    return seconds, resolution


def load_flow_table(
    path: Path,
    label_map: FlowLabelMap,
    utc_offset_hours: float = 0.0,
    dayfirst: bool = True,
    block_size: int = 1 << 24,
) -> FlowTable:
    """Read only the join columns of a CICFlowMeter CSV and index its labelled flows.

    `utc_offset_hours` is the offset of the CSV's local clock (CIC-IDS2017 wrote New Brunswick time, UTC-3):
    epoch = local time - offset. Header names are matched after stripping spaces; CIC-IDS2017's " Source IP"
    style names are aliased to the CICFlowMeter-v4 ones.
    """
    path = Path(path)
    header = read_csv_header(path)
    by_stripped = {COLUMN_ALIASES.get(name.strip(), name.strip()): name for name in header}
    missing = [name for name in FLOW_COLUMNS if name not in by_stripped]
    if missing:
        raise SourceError(f"{path}: not a CICFlowMeter CSV, missing column(s) {', '.join(missing)}")
    wanted = [by_stripped[name] for name in FLOW_COLUMNS]
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_size),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={name: pa.string() for name in wanted},
            strings_can_be_null=True,
        ),
    )
    canonical = {raw: name for name, raw in by_stripped.items()}
    frame = table.rename_columns([canonical[name] for name in table.column_names]).to_pandas()
    return index_flows(path, frame, label_map, utc_offset_hours, dayfirst)


def index_flows(
    path: Path, frame: pd.DataFrame, label_map: FlowLabelMap, utc_offset_hours: float, dayfirst: bool
) -> FlowTable:
    dropped: Counter = Counter()
    rows = len(frame)
    start, resolution = parse_timestamps(frame["Timestamp"].fillna(""), dayfirst=dayfirst)
    start = start - utc_offset_hours * 3600.0
    proto = pd.to_numeric(frame["Protocol"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    src_port = pd.to_numeric(frame["Src Port"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    dst_port = pd.to_numeric(frame["Dst Port"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    src = frame["Src IP"].fillna("").astype(str).str.strip().to_numpy()
    dst = frame["Dst IP"].fillna("").astype(str).str.strip().to_numpy()
    raw_labels = frame["Label"].fillna("").astype(str).to_numpy()
    flow_ids = frame["Flow ID"].fillna("").astype(str).to_numpy()

    # label strings repeat a lot: map each distinct one once
    label_of = {raw: label_map.label(raw) for raw in pd.unique(raw_labels)}
    keys: dict[tuple, list[int]] = {}
    kept_labels: list[Label] = []
    kept_ids: list[str] = []
    kept_start: list[float] = []
    kept_res: list[float] = []
    for i in range(rows):
        reason = _row_problem(start[i], proto[i], src[i], dst[i], src_port[i], dst_port[i])
        label = label_of[raw_labels[i]]
        if reason is None and isinstance(label, Drop):
            reason = f"{label.reason}:{raw_labels[i].strip()}"
        if reason is not None:
            dropped[reason] += 1
            continue
        assert isinstance(label, Label)  # a Drop gave a reason above
        key = canonical_key(int(proto[i]), src[i], int(src_port[i]), dst[i], int(dst_port[i]))
        keys.setdefault(key, []).append(len(kept_labels))
        kept_labels.append(label)
        kept_ids.append(flow_ids[i])
        kept_start.append(start[i])
        kept_res.append(resolution[i])
    starts = np.asarray(kept_start)
    res = np.asarray(kept_res)
    index = {}
    for key, members in keys.items():
        rows_of_key = np.asarray(members)
        order = np.argsort(starts[rows_of_key], kind="stable")
        rows_of_key = rows_of_key[order]
        index[key] = (starts[rows_of_key], res[rows_of_key], rows_of_key)
    for reason, count in dropped.items():
        log.info("%s: %d flow rows dropped (%s)", path, count, reason)
    return FlowTable(path, index, kept_labels, kept_ids, np.zeros(len(kept_labels), bool), dropped, rows)


def _row_problem(start: float, proto: float, src: str, dst: str, sport: float, dport: float) -> str | None:
    if np.isnan(start):
        return "bad_timestamp"
    if np.isnan(proto) or not src or not dst or np.isnan(sport) or np.isnan(dport):
        return "bad_flow_tuple"
    return None


def load_label_map(spec: str) -> FlowLabelMap:
    if spec in BUILTIN_LABEL_MAPS:
        return FlowLabelMap(BUILTIN_LABEL_MAPS[spec], spec)
    path = Path(spec)
    if not path.is_file():
        raise SourceError(
            f"label map {spec!r}: neither a built-in map ({', '.join(BUILTIN_LABEL_MAPS)}) nor a file"
        )
    mapping = yaml.safe_load(path.read_text())
    if not isinstance(mapping, dict):
        raise SourceError(f"{path}: a label map is a mapping of CSV label -> fine class or 'drop'")
    return FlowLabelMap(mapping, str(path))


class FlowLabeller:
    """Labels connections by the nearest-starting CSV flow with the same protocol and endpoints.

    CICFlowMeter splits long flows into several rows under one `Flow ID`, so a tuple can have many rows: the
    connection takes the row whose start is nearest its first packet, if within `tolerance_s` (plus the
    timestamp's own resolution, for minute-stamped CSVs). A connection no row matches is dropped
    (`no_matching_flow`); rows no connection matched are counted by `unmatched_flows`.
    """

    def __init__(self, flows: FlowTable, tolerance_s: float = 2.0):
        self.flows = flows
        self.tolerance_s = tolerance_s  # clock skew between the CSV's timestamp and the pcap's first packet

    def label(self, conn: ConnectionKey) -> Label | Drop:
        proto = PROTO_NUMBERS.get(conn.proto)
        if proto is None:
            return Drop("no_matching_flow")
        if proto == 1 and ":" in conn.orig_h:
            proto = 58
        candidates = self.flows.index.get(
            canonical_key(proto, conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p)
        )
        if candidates is None:
            return Drop("no_matching_flow")
        starts, resolution, rows = candidates
        # distance from the connection's start to each row's [start, start + resolution) window
        distance = np.maximum(0.0, np.maximum(starts - conn.ts, conn.ts - (starts + resolution)))
        best = int(np.argmin(distance))
        if distance[best] > self.tolerance_s:
            return Drop("no_matching_flow")
        row = int(rows[best])
        self.flows.matched[row] = True
        return self.flows.labels[row]

    def unmatched_flows(self) -> int:
        return int((~self.flows.matched).sum())
