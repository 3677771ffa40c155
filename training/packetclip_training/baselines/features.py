"""The tabular feature matrix of the flow baselines, built from a dataset split's Zeek-conn-like fact columns.

Owns which columns may be read (`FACT_COLUMNS`) and how they become numbers. Does not train or score models.

Addresses, originator ports, timestamps, uids and every provenance column are never read: a model that sees them
learns the lab, not the attack. The responder port is what NSM rules key on, so it is a legitimate but optional
feature (`include_resp_port`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from packetclip.featurizer.connection import FACT_NAMES

log = logging.getLogger(__name__)

CATEGORICAL_FACTS = ("conn_state", "history", "service", "proto")
# every numeric fact the featurizer computes, in its order: a fact added there is a feature here
NUMERIC_FACTS = tuple(name for name in FACT_NAMES if name not in CATEGORICAL_FACTS)
RESP_PORT = "resp_p"
FACT_COLUMNS = (*NUMERIC_FACTS, *CATEGORICAL_FACTS, RESP_PORT)
LABEL_COLUMNS = ("fine", "coarse", "heldout")

# Fixed vocabularies (Zeek's own) so that a column means the same thing in every split and every run.
CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")
HISTORY_LETTERS = "SHADFRCGTWIQ" + "shadfrcgtwiq" + "^"  # upper: originator, lower: responder
PROTOCOLS = ("tcp", "udp", "icmp")
SERVICES = (
    "http",
    "ssl",
    "dns",
    "ssh",
    "ftp",
    "ftp-data",
    "smtp",
    "ntp",
    "mqtt",
    "quic",
    "smb",
    "ldap",
    "pop3",
    "imap",
    "sip",
    "snmp",
    "dhcp",
    "krb",
    "rdp",
    "dce_rpc",
    "sunrpc",
    "netbios-ns",
    "ipsec",
)


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of one split: `values` is float32 (rows, len(names)); NaN marks an unknown fact."""

    values: np.ndarray
    names: list[str]


def read_facts(directory: str | Path, split: str, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The fact and label columns of one split (and the `extra` columns asked for), nothing else.

    Reads the parquet file directly rather than through `load_split`, which always decodes the packet tensor the
    flow baselines never use (gigabytes on the full dataset).
    """
    path = Path(directory) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such split (expected train, val or test of a built dataset)")
    table = pq.read_table(path, columns=list(dict.fromkeys([*FACT_COLUMNS, *LABEL_COLUMNS, *extra])))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def feature_matrix(facts: Mapping[str, np.ndarray], include_resp_port: bool = True) -> FeatureMatrix:
    """Turn fact columns into a feature matrix; any other key in `facts` is ignored by construction."""
    columns: dict[str, np.ndarray] = {}
    numeric = {name: _as_float(facts[name]) for name in NUMERIC_FACTS}
    columns.update(numeric)
    columns.update(_ratios(numeric))
    columns.update(_one_hot("conn_state", facts["conn_state"], CONN_STATES))
    columns.update(_one_hot("proto", facts["proto"], PROTOCOLS))
    columns.update(_services(facts["service"]))
    columns.update(_history_letters(facts["history"]))
    if include_resp_port:
        columns[RESP_PORT] = _as_float(facts[RESP_PORT])
    names = list(columns)
    values = np.column_stack([columns[name] for name in names]).astype(np.float32)
    return FeatureMatrix(values=values, names=names)


def _as_float(column: np.ndarray) -> np.ndarray:
    # None (a fact Zeek leaves unset, e.g. duration of a one-packet flow) becomes NaN, which the trees route.
    return np.array([np.nan if v is None else v for v in column], dtype=np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _ratios(numeric: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pkts = numeric["orig_pkts"] + numeric["resp_pkts"]
    return {
        "resp_to_orig_pkts": _ratio(numeric["resp_pkts"], numeric["orig_pkts"]),
        "resp_to_orig_bytes": _ratio(numeric["resp_bytes"], numeric["orig_bytes"]),
        "orig_bytes_per_pkt": _ratio(numeric["orig_ip_bytes"], numeric["orig_pkts"]),
        "resp_bytes_per_pkt": _ratio(numeric["resp_ip_bytes"], numeric["resp_pkts"]),
        "pkts_per_second": _ratio(pkts, numeric["duration"]),
        "payload_share": _ratio(
            numeric["orig_bytes"] + numeric["resp_bytes"], numeric["orig_ip_bytes"] + numeric["resp_ip_bytes"]
        ),
    }


def _one_hot(prefix: str, column: np.ndarray, vocabulary: tuple[str, ...]) -> dict[str, np.ndarray]:
    values = np.array(["" if v is None else str(v) for v in column], dtype=object)
    out = {f"{prefix}={word}": (values == word).astype(np.float64) for word in vocabulary}
    out[f"{prefix}=other"] = (~np.isin(values, vocabulary)).astype(np.float64)
    return out


def _services(column: np.ndarray) -> dict[str, np.ndarray]:
    # Zeek joins several detected services with commas ("ssl,http"): multi-hot, not one-hot.
    detected = [set(filter(None, ("" if v is None else str(v)).split(","))) for v in column]
    out = {f"service={name}": np.array([name in s for s in detected], np.float64) for name in SERVICES}
    out["service=none"] = np.array([not s for s in detected], np.float64)
    out["service=other"] = np.array([bool(s - set(SERVICES)) for s in detected], np.float64)
    return out


def _history_letters(column: np.ndarray) -> dict[str, np.ndarray]:
    histories = ["" if v is None else str(v) for v in column]
    out = {
        f"history_{_letter_name(c)}": np.array([h.count(c) for h in histories], np.float64)
        for c in HISTORY_LETTERS
    }
    out["history_length"] = np.array([len(h) for h in histories], np.float64)
    return out


def _letter_name(letter: str) -> str:
    # Case carries direction in Zeek history (upper: originator), so spell it out in the feature name.
    if letter == "^":
        return "flipped"
    return f"orig_{letter}" if letter.isupper() else f"resp_{letter.upper()}"
