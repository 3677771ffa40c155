"""Explanations of verdicts: what an originator has recently done, and one or two sentences per verdict.

Owns `ActivityTracker` (a bounded memory of each originator's recent connections and its `Activity` summary),
`Explainer` (the sentence built from the connection's facts, the originator's activity, the winning mission's most
activated concepts and the nearest description of the predicted class in the bundle's description bank) and the
ranking of a mission's concepts by activation (`strongest`, `TOP_CONCEPTS`), which the engine's verdicts use too.
It does not classify (the engine does), does not read packets (the featurizer does) and does not decide which
concepts the facts allow (`packetclip.concept_rules` does).

Every number an explanation prints is a fact of the connection or of the originator's observed connections. The
description bank was written from other connections, so only its number-free, class-level sentences are quoted.
Every concept it names is one the connection's facts and the verdict's class allow: the most activated allowed
concepts, and the nearest description whose quoted sentence names no concept the facts rule out.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from packetclip.bundle import Bundle, load_concepts, load_descriptions
from packetclip.concept_rules import ConceptRules
from packetclip.context import ResponderSummary
from packetclip.missions import Mission, MissionError, load_mission, normalise_concept

if TYPE_CHECKING:
    from packetclip.featurizer import Connection

log = logging.getLogger(__name__)

# Connection states (Zeek's conn_state) that mean the responder refused, or the originator gave up with a reset.
REFUSED_STATES = frozenset({"REJ", "RSTRH"})
RESET_BY_ORIGINATOR_STATES = frozenset({"RSTO", "RSTOS0"})


# --- originator activity ------------------------------------------------------------------------------------


class _Observed(NamedTuple):
    """What the tracker keeps of one connection (no packet arrays: it must stay small)."""

    ts: float
    responder: str
    port: int | None  # None for ICMP, whose "ports" are type and code
    packets: int
    payload_bytes: int
    unanswered: bool
    refused: bool
    reset_by_originator: bool


@dataclass(frozen=True)
class Activity:
    """An originator's connections that started in (now - window, now], as far as the tracker observed them."""

    sensor: str
    orig_h: str
    now_ts: float
    window_seconds: float
    connections: int = 0
    responders: int = 0  # distinct responder addresses
    ports: int = 0  # distinct responder ports (TCP and UDP; ICMP has none)
    packets: int = 0  # both directions
    bytes: int = 0  # payload bytes, both directions
    first_ts: float = 0.0  # start of the earliest connection in the window (0 when none)
    last_ts: float = 0.0  # start of the latest connection in the window (0 when none)
    rate: float = 0.0  # connections per second over the part of the window this originator was observed in
    unanswered: int = 0  # connections the responder sent nothing back on
    refused: int = 0  # refused by the responder (REJ, RSTRH)
    reset_by_originator: int = 0  # the originator reset them (RSTO, RSTOS0): typical of half-open scans
    top_ports: tuple[tuple[int, int], ...] = ()  # (port, connections), most used first; empty with many ports
    # False when connections of the window were dropped (per-originator cap, or expired before a late query):
    # the counts are then lower bounds
    complete: bool = True

    @property
    def span_seconds(self) -> float:
        return self.last_ts - self.first_ts

    @property
    def unanswered_share(self) -> float:
        return self.unanswered / self.connections if self.connections else 0.0

    @property
    def refused_share(self) -> float:
        return self.refused / self.connections if self.connections else 0.0

    @property
    def unanswered_or_refused_share(self) -> float:
        """Connections that got nothing back or a refusal: the signature of probing closed or absent services."""
        return (self.unanswered + self.refused) / self.connections if self.connections else 0.0

    @property
    def reset_share(self) -> float:
        return self.reset_by_originator / self.connections if self.connections else 0.0


@dataclass
class _Originator:
    """One originator's kept connections (sorted by start) and running totals over them."""

    records: deque[_Observed] = field(default_factory=deque)
    packets: int = 0
    payload_bytes: int = 0
    unanswered: int = 0
    refused: int = 0
    reset_by_originator: int = 0
    port_counts: dict[int, int] = field(default_factory=dict)
    responder_counts: dict[str, int] = field(default_factory=dict)
    first_seen: float = math.inf
    latest: float = -math.inf
    # start of the newest connection forgotten (cap or expiry): a window that still covers it is incomplete
    newest_lost: float = -math.inf

    def add(self, record: _Observed) -> None:
        self._count(record, +1)
        if not self.records or record.ts >= self.records[-1].ts:
            self.records.append(record)
        else:  # finished out of start order: walk back from the end (it is usually close)
            position = len(self.records) - 1
            while position > 0 and self.records[position - 1].ts > record.ts:
                position -= 1
            self.records.insert(position, record)
        self.first_seen = min(self.first_seen, record.ts)
        self.latest = max(self.latest, record.ts)

    def drop_oldest(self) -> None:
        record = self.records.popleft()
        self._count(record, -1)
        self.newest_lost = max(self.newest_lost, record.ts)

    def _count(self, record: _Observed, sign: int) -> None:
        self.packets += sign * record.packets
        self.payload_bytes += sign * record.payload_bytes
        self.unanswered += sign * record.unanswered
        self.refused += sign * record.refused
        self.reset_by_originator += sign * record.reset_by_originator
        if record.port is not None:
            _bump(self.port_counts, record.port, sign)
        _bump(self.responder_counts, record.responder, sign)


def _bump(counts: dict[Any, int], key: Any, sign: int) -> None:
    left = counts.get(key, 0) + sign
    if left:
        counts[key] = left
    else:
        del counts[key]


@dataclass
class ActivityStats:
    """What the tracker had to forget, so a bounded memory is visible rather than silent."""

    observed: int = 0
    evicted_originators: int = 0  # least recently seen originators dropped beyond max_originators
    capped_connections: int = 0  # in-window connections dropped by the per-originator cap
    expired_connections: int = 0  # connections that left the window
    malformed: int = 0  # connections skipped because a field was unusable


class ActivityTracker:
    """Bounded per-(sensor, originator) memory of recently observed connections.

    Each originator keeps at most `max_connections` connections that started within `window_seconds` of its
    latest one; at most `max_originators` originators are kept, the least recently observed evicted first.
    Observe a connection, then ask for the summary at its `ts` or `last_ts`: the summary counts the connections
    that started in the window ending then, this one included. Connections may arrive out of start order.
    """

    def __init__(
        self,
        max_originators: int = 10_000,
        window_seconds: float = 60.0,
        max_connections: int = 1024,
        top_port_limit: int = 64,
    ) -> None:
        if max_originators < 1 or max_connections < 1 or not window_seconds > 0:
            raise ValueError("max_originators, max_connections and window_seconds must be positive")
        self.max_originators = max_originators
        self.window_seconds = float(window_seconds)
        # memory bound per originator: a fast scan exceeds it, and the summary then says "at least"
        self.max_connections = max_connections
        # ranking ports costs a sort per summary: beyond this many distinct ports no port stands out anyway
        self.top_port_limit = top_port_limit
        self.stats = ActivityStats()
        self._originators: OrderedDict[tuple[str, str], _Originator] = OrderedDict()

    def __len__(self) -> int:
        return len(self._originators)

    def observe(self, sensor: str, conn: Connection) -> None:
        """Record one finished connection of `conn.orig_h` seen by `sensor`."""
        try:
            record = _Observed(
                ts=float(conn.ts),
                responder=str(conn.resp_h),
                port=None if conn.proto == "icmp" else int(conn.resp_p),
                packets=int(conn.orig_pkts) + int(conn.resp_pkts),
                payload_bytes=int(conn.orig_bytes) + int(conn.resp_bytes),
                unanswered=int(conn.resp_pkts) == 0,
                refused=conn.conn_state in REFUSED_STATES,
                reset_by_originator=conn.conn_state in RESET_BY_ORIGINATOR_STATES,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            self.stats.malformed += 1
            log.warning(
                "activity: skipped connection %r: unusable field (%s)", getattr(conn, "uid", "?"), exc
            )
            return
        if not math.isfinite(record.ts):
            self.stats.malformed += 1
            log.warning("activity: skipped connection %r: start time %r", getattr(conn, "uid", "?"), conn.ts)
            return
        key = (sensor, str(conn.orig_h))
        state = self._originators.get(key)
        if state is None:
            state = self._originators[key] = _Originator()
            if len(self._originators) > self.max_originators:
                self._originators.popitem(last=False)
                self.stats.evicted_originators += 1
        else:
            self._originators.move_to_end(key)
        state.add(record)
        self.stats.observed += 1
        self._forget(state)

    def _forget(self, state: _Originator) -> None:
        horizon = state.latest - self.window_seconds
        while state.records and state.records[0].ts <= horizon:
            state.drop_oldest()
            self.stats.expired_connections += 1
        while len(state.records) > self.max_connections:
            state.drop_oldest()
            self.stats.capped_connections += 1

    def summary(self, sensor: str, orig_h: str, now_ts: float) -> Activity:
        """The originator's connections that started in (now_ts - window, now_ts]."""
        state = self._originators.get((sensor, orig_h))
        if state is None:
            return Activity(sensor, orig_h, float(now_ts), self.window_seconds)
        start = now_ts - self.window_seconds
        complete = state.newest_lost <= start
        records = state.records
        # connections outside the window are left out of the running totals (usually none or a few)
        before = 0
        while before < len(records) and records[before].ts <= start:
            before += 1
        after = len(records)
        while after > before and records[after - 1].ts > now_ts:
            after -= 1
        if after == before:
            return Activity(sensor, orig_h, float(now_ts), self.window_seconds, complete=complete)
        connections = after - before
        if connections == len(records):  # the usual case: every kept connection is in the window
            outside: list[_Observed] = []
            ports, responders = len(state.port_counts), len(state.responder_counts)
        else:
            outside = [records[i] for i in range(before)] + [records[i] for i in range(after, len(records))]
            ports = len(state.port_counts) - _emptied(
                state.port_counts, [r.port for r in outside if r.port is not None]
            )
            responders = len(state.responder_counts) - _emptied(
                state.responder_counts, (r.responder for r in outside)
            )
        observed_seconds = min(self.window_seconds, now_ts - state.first_seen)
        top_ports: tuple[tuple[int, int], ...] = ()
        if ports <= self.top_port_limit:
            top_ports = _top_ports(state.port_counts, [r.port for r in outside if r.port is not None])
        return Activity(
            sensor=sensor,
            orig_h=orig_h,
            now_ts=float(now_ts),
            window_seconds=self.window_seconds,
            connections=connections,
            responders=responders,
            ports=ports,
            packets=state.packets - sum(r.packets for r in outside),
            bytes=state.payload_bytes - sum(r.payload_bytes for r in outside),
            first_ts=records[before].ts,
            last_ts=records[after - 1].ts,
            # a rate over less than a second says little: one second is the shortest span it is taken over
            rate=connections / max(observed_seconds, 1.0),
            unanswered=state.unanswered - sum(r.unanswered for r in outside),
            refused=state.refused - sum(r.refused for r in outside),
            reset_by_originator=state.reset_by_originator - sum(r.reset_by_originator for r in outside),
            top_ports=top_ports,
            complete=complete,
        )


def _top_ports(counts: Mapping[int, int], outside: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The three most used ports of the window: the totals less the ports of connections outside it."""
    window = counts
    if outside:  # copied only when the window leaves some connections out
        window = dict(counts)
        for port in outside:
            _bump(window, port, -1)
    return tuple(sorted(window.items(), key=lambda item: (-item[1], item[0]))[:3])


def _emptied(counts: Mapping[Any, int], outside: Iterable[Any]) -> int:
    """How many keys of `counts` have all their connections outside the window."""
    left: dict[Any, int] = {}
    for key in outside:
        left[key] = left.get(key, counts[key]) - 1
    return sum(1 for remaining in left.values() if remaining == 0)


# --- explanations --------------------------------------------------------------------------------------------

CLASS_HEADLINES = {
    "benign": "ordinary traffic",
    "icmp_flood": "an ICMP flood",
    "syn_flood": "a SYN flood",
    "udp_flood": "a UDP flood",
    "dns_flood": "a DNS flood",
    "slowloris": "a slowloris attack (slow, held-open HTTP requests)",
    "port_scan": "a port scan",
    "os_scan": "an OS fingerprinting scan",
    "vulnerability_scan": "a vulnerability scan",
    "ping_sweep": "a ping sweep",
    "dictionary_attack": "a password-guessing (dictionary) attack",
}

_DIGIT = re.compile(r"\d")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# concepts of the winning mission a verdict reports (`Verdict.concepts`) and an explanation names at most
TOP_CONCEPTS = 3


def strongest(activations: np.ndarray, columns: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row of `activations` (n, K), the `k` of `columns` most activated, strongest first (ties: column
    order), as (column, activation)."""
    values = activations[:, columns]  # (n, len(columns))
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    best = columns[order].tolist()
    chosen = np.take_along_axis(values, order, axis=1).tolist()
    return [list(zip(row, value, strict=True)) for row, value in zip(best, chosen, strict=True)]


def class_headline(fine: str) -> str:
    return CLASS_HEADLINES.get(fine, f"{fine.replace('_', ' ')} activity")


class Explainer:
    """One or two sentences per verdict, from the connection, its originator's activity and the bundle's banks."""

    def __init__(self, bundle: Bundle) -> None:
        missions: list[Mission] = []
        for name, path in bundle.mission_paths.items():
            try:
                missions.append(load_mission(path))
            except MissionError as exc:  # the bundle was verified; a bad copy only costs the concept wording
                log.warning("explanations: mission %s of bundle %s unusable: %s", name, bundle.source, exc)
        texts, text_classes, embeddings = load_descriptions(bundle)
        self._prepare(bundle.fine_classes, bundle.fine_to_coarse, load_concepts(bundle), missions)
        self._prepare_bank(texts, text_classes, embeddings)

    @classmethod
    def from_parts(
        cls,
        fine_classes: Sequence[str],
        fine_to_coarse: Mapping[str, str],
        concepts: Sequence[Mapping[str, str]],
        missions: Sequence[Mission],
        texts: Sequence[str],
        text_classes: Sequence[str],
        embeddings: np.ndarray,
    ) -> Explainer:
        """An explainer from a bundle's contents already in memory (what `__init__` reads from the bundle)."""
        explainer = cls.__new__(cls)
        explainer._prepare(fine_classes, fine_to_coarse, concepts, missions)
        explainer._prepare_bank(texts, text_classes, embeddings)
        return explainer

    def _prepare(
        self,
        fine_classes: Sequence[str],
        fine_to_coarse: Mapping[str, str],
        concepts: Sequence[Mapping[str, str]],
        missions: Sequence[Mission],
    ) -> None:
        self.fine_classes = tuple(fine_classes)
        self.fine_to_coarse = dict(fine_to_coarse)
        self.concepts = [(c["mission"], c["concept"]) for c in concepts]
        mission_names = {mission for mission, _ in self.concepts}
        self.mission_of_class: dict[str, str] = {}
        for mission in missions:
            for fine in mission.classes:
                self.mission_of_class.setdefault(fine, mission.name)
        for fine in self.fine_classes:  # a class no mission maps: its coarse label names the mission
            coarse = self.fine_to_coarse.get(fine, fine)
            if fine not in self.mission_of_class and coarse in mission_names:
                self.mission_of_class[fine] = coarse
        # concepts whose names carry numbers are never printed (their numbers are not facts of the packets),
        # nor names outside ASCII (explanations end up in ASCII logs)
        self._mission_columns = {
            name: np.asarray(
                [
                    i
                    for i, (m, c) in enumerate(self.concepts)
                    if m == name and c.isascii() and not _DIGIT.search(c)
                ],
                dtype=np.intp,
            )
            for name in mission_names
        }
        self._mission_concepts = {
            name: {normalise_concept(c) for m, c in self.concepts if m == name} for name in mission_names
        }
        self.concept_rules = ConceptRules(self.concepts, missions, self.mission_of_class)
        if self.concept_rules.unknown:
            log.warning(
                "explanations: %d concepts have no rule of what they claim and are never named: %s",
                len(self.concept_rules.unknown),
                ", ".join(sorted(set(self.concept_rules.unknown))),
            )
        self.stats = {"malformed_rows": 0}

    def _prepare_bank(
        self, texts: Sequence[str], text_classes: Sequence[str], embeddings: np.ndarray
    ) -> None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or not len(texts) == len(text_classes) == len(embeddings):
            raise ValueError(
                f"description bank: {len(texts)} texts, {len(text_classes)} classes, embeddings {embeddings.shape}"
            )
        self.bank_texts = list(texts)
        self.bank_dim = int(embeddings.shape[1])
        self._class_rows: dict[str, np.ndarray] = {}
        self._class_matrix: dict[str, np.ndarray] = {}
        classes = np.asarray(text_classes)
        for fine in set(text_classes):
            rows = np.flatnonzero(classes == fine)
            self._class_rows[fine] = rows
            self._class_matrix[fine] = np.ascontiguousarray(embeddings[rows])
        parts = [self._quotable_part(text, fine) for text, fine in zip(texts, text_classes, strict=True)]
        self._quotable = [quote for quote, _ in parts]
        # per class, which concept columns each of its texts' quoted sentence names (T_class, K): a text is only
        # quoted for a row whose facts allow every one of them
        column_of = {(m, normalise_concept(c)): i for i, (m, c) in enumerate(self.concepts)}
        self._class_named: dict[str, np.ndarray] = {}
        for fine, rows in self._class_rows.items():
            mission = self.mission_of_class.get(fine, "")
            named = np.zeros((len(rows), len(self.concepts)), dtype=np.float32)
            for position, row in enumerate(rows.tolist()):
                columns = [column_of[mission, w] for w in parts[row][1] if (mission, w) in column_of]
                named[position, columns] = 1.0
            self._class_named[fine] = named

    def _quotable_part(self, text: str, fine: str) -> tuple[str, set[str]]:
        """The sentence of a bank text that names the most concepts of the class's mission (or the class) and
        holds no number: its class-level part, and the concept names it holds. The rest describes the
        connection the text was written from."""
        mission = self.mission_of_class.get(fine, "")
        words = self._mission_concepts.get(mission, set()) | {fine.replace("_", " ")}
        pattern = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True) if w) + r")\b"
        )
        best, best_names = "", set[str]()
        for sentence in _SENTENCE_END.split(" ".join(text.split())):
            if _DIGIT.search(sentence) or '"' in sentence or not sentence.isascii():
                continue
            names = set(pattern.findall(sentence.lower()))
            if len(names) > len(best_names):
                best, best_names = sentence, names
        return best, best_names

    # -- the parts, exposed so callers (and tests) can use them on their own --

    def top_concepts(
        self, attack: str, concepts_row: np.ndarray, k: int = TOP_CONCEPTS
    ) -> list[tuple[str, str, float]]:
        """The `k` most activated concepts of the mission that maps `attack`: (mission, concept, activation),
        before any connection's facts are checked (an explanation names only those its facts allow)."""
        row = np.asarray(concepts_row, dtype=np.float32).reshape(1, -1)
        if not self._fits(row, len(self.concepts), "concepts"):
            return []
        return self._top_concepts(attack, row, k)[0]

    def nearest_description(self, fine: str, aligned_row: np.ndarray) -> tuple[int, str]:
        """The bank row of class `fine` closest to `aligned_row` by dot product: (row index, quotable part),
        before any connection's facts are checked."""
        row = np.asarray(aligned_row, dtype=np.float32).reshape(1, -1)
        if not self._fits(row, self.bank_dim, "aligned"):
            return -1, ""
        return self._nearest(fine, row)[0]

    @staticmethod
    def reads_activity(label: str, attack: str) -> bool:
        """Whether the explanation of such a verdict reports the originator's activity (benign ones do not)."""
        return not (attack == "benign" or label == "benign")

    def explain(
        self,
        conn: Connection,
        activity: Activity | None,
        label: str,
        attack: str,
        concepts_row: np.ndarray,
        aligned_row: np.ndarray,
    ) -> str:
        """One verdict's explanation; `activity` may be None when `reads_activity` says it is not read."""
        concepts = np.asarray(concepts_row, dtype=np.float32).reshape(1, -1)
        aligned = np.asarray(aligned_row, dtype=np.float32).reshape(1, -1)
        return self.explain_batch([conn], [activity], [label], [attack], concepts, aligned)[0]

    def explain_batch(
        self,
        connections: Sequence[Connection],
        activities: Sequence[Activity | None],
        labels: Sequence[str],
        attacks: Sequence[str],
        concepts: np.ndarray,
        aligned: np.ndarray,
        responders: Sequence[ResponderSummary | None] | None = None,
    ) -> list[str]:
        """`explain` for a micro-batch: row i of `concepts` (B, K) and `aligned` (B, D) belongs to connection i.
        Concepts and nearest descriptions are ranked once per predicted class rather than once per row.
        `responders`, when given, holds each connection's responder activity before it (`ResponderActivity`)."""
        judged = [
            row
            for row, (label, attack) in enumerate(zip(labels, attacks, strict=True))
            if self.reads_activity(label, attack)
        ]
        tops: list[list[tuple[str, str, float]]] = [[] for _ in connections]
        quotes = [""] * len(connections)
        by_class: dict[str, list[int]] = {}
        for row in judged:
            by_class.setdefault(attacks[row], []).append(row)
        rank_concepts = self._fits(concepts, len(self.concepts), "concepts", len(judged))
        rank_descriptions = self._fits(aligned, self.bank_dim, "aligned", len(judged))
        inbound = responders if responders is not None else [None] * len(connections)
        # (B, K): the concepts each judged row's facts and class allow (benign rows name none)
        allowed = np.zeros((len(connections), len(self.concepts)), dtype=bool)
        if judged:
            allowed[judged] = self.concept_rules.allowed(
                [connections[row] for row in judged],
                [activities[row] for row in judged],
                [attacks[row] for row in judged],
                [inbound[row] for row in judged],
            )
        for attack, rows in by_class.items():
            if rank_concepts:
                ranked = self._top_concepts(attack, concepts[rows], allowed=allowed[rows])
                for row, top in zip(rows, ranked, strict=True):
                    tops[row] = top
            if rank_descriptions:
                nearest = self._nearest(attack, aligned[rows], allowed=allowed[rows])
                for row, (_, quote) in zip(rows, nearest, strict=True):
                    quotes[row] = quote
        return [
            self._sentence(conn, activity, label, attack, top, quote, responder)
            for conn, activity, label, attack, top, quote, responder in zip(
                connections, activities, labels, attacks, tops, quotes, inbound, strict=True
            )
        ]

    def _fits(self, matrix: np.ndarray, width: int, what: str, rows: int = 1) -> bool:
        """Whether model output rows have the width the bundle's banks expect; `rows` is what a mismatch costs."""
        if matrix.ndim == 2 and matrix.shape[1] == width:
            return True
        if rows:
            self.stats["malformed_rows"] += rows
            log.warning("explanations: %s rows of shape %s, expected width %d", what, matrix.shape[1:], width)
        return False

    def _top_concepts(
        self, attack: str, activations: np.ndarray, k: int = TOP_CONCEPTS, allowed: np.ndarray | None = None
    ) -> list[list[tuple[str, str, float]]]:
        """Per row of `activations` (n, K), the `k` strongest printable concepts of `attack`'s mission; with
        `allowed` (n, K), only those it allows (fewer, or none, when the facts rule the others out)."""
        columns = self._mission_columns.get(self.mission_of_class.get(attack) or "")
        if columns is None or not len(columns):
            return [[] for _ in range(len(activations))]
        if allowed is not None:
            activations = np.where(allowed, activations, -np.inf)
        concepts = self.concepts
        return [
            [(*concepts[i], value) for i, value in row if value != -np.inf]
            for row in strongest(activations, columns, k)
        ]

    def _nearest(
        self, fine: str, aligned: np.ndarray, allowed: np.ndarray | None = None
    ) -> list[tuple[int, str]]:
        """Per row of `aligned` (n, D), the closest bank row of class `fine`: (row index, quotable part); with
        `allowed` (n, K), the closest whose quoted sentence names only allowed concepts ((-1, "") when none)."""
        matrix = self._class_matrix.get(fine)
        if matrix is None or not len(matrix):
            return [(-1, "")] * len(aligned)
        similarity = aligned @ matrix.T  # (n, T_class)
        if allowed is not None:
            ruled_out = (~allowed).astype(np.float32) @ self._class_named[fine].T  # (n, T_class)
            similarity = np.where(ruled_out > 0, -np.inf, similarity)
        best = np.argmax(similarity, axis=1)
        usable = np.take_along_axis(similarity, best[:, None], axis=1)[:, 0] != -np.inf
        rows = self._class_rows[fine][best].tolist()
        return [
            (row, self._quotable[row]) if ok else (-1, "")
            for row, ok in zip(rows, usable.tolist(), strict=True)
        ]

    def _sentence(
        self,
        conn: Connection,
        activity: Activity | None,
        label: str,
        attack: str,
        concepts: list[tuple[str, str, float]],
        quote: str,
        responder: ResponderSummary | None = None,
    ) -> str:
        facts = connection_facts(conn)
        if not self.reads_activity(label, attack):
            return f"{facts}; judged benign."
        recent = activity_facts(activity, label) if activity is not None else ""
        # the victim's side: what a flood from many (spoofed) sources is seen by, and all there is to say of a
        # lone connection whose originator did nothing else; a handful of connections says nothing of a victim
        victim = ""
        if responder is not None and (responder.connections >= _VICTIM_CONNECTIONS or not recent):
            victim = responder_facts(responder)
        first = "; ".join(part for part in (facts, recent, victim) if part) + "."
        judged = f"Judged {class_headline(attack)}"
        if concepts:
            names = [concept for _, concept, _ in concepts]
            judged += f": the {concepts[0][0]} concepts most activated were {_join(names)}"
        if quote:
            judged += f'; closest description: "{quote.rstrip(".")}"'
        return f"{first} {judged}."


# --- wording of facts ----------------------------------------------------------------------------------------

_STATE_WORDS = {
    "S0": "no reply",
    "S1": "established, still open",
    "SF": "completed normally",
    "REJ": "refused by the responder (a reset answered the SYN)",
    "S2": "established, closed by the originator only",
    "S3": "established, closed by the responder only",
    "RSTO": "reset by the originator",
    "RSTR": "reset by the responder",
    "RSTOS0": "a SYN then a reset from the originator, no reply",
    "RSTRH": "a SYN-ACK then a reset from the responder, no SYN seen",
    "SH": "a SYN then a FIN from the originator, no reply",
    "SHR": "a SYN-ACK then a FIN from the responder, no SYN seen",
    "OTH": "no handshake seen",
}


def state_words(conn: Connection) -> str:
    """`conn_state` in words an analyst reads at a glance."""
    if conn.conn_state == "S0" and conn.proto == "tcp":
        return "an unanswered SYN" if conn.orig_pkts <= 1 else "unanswered SYNs"
    if conn.proto != "tcp":
        return "answered" if conn.resp_pkts else "no reply"
    return _STATE_WORDS.get(conn.conn_state, f"state {conn.conn_state}")


def connection_facts(conn: Connection) -> str:
    """Protocol, responder port and service, state, packets and bytes each way, duration."""
    if conn.proto == "icmp":
        head = f"ICMP type {conn.orig_p} code {conn.resp_p}"
    else:
        service = f" ({conn.service})" if conn.service and not _DIGIT.search(conn.service) else ""
        head = f"{conn.proto.upper()} to port {conn.resp_p}{service}"
    packets = f"{_count(conn.orig_pkts, 'packet')} out, {_number(conn.resp_pkts)} back"
    payload = f"{_number(conn.orig_bytes)} payload bytes sent, {_number(conn.resp_bytes)} received"
    return f"{head}: {state_words(conn)}, {packets}, {payload}, {_duration(conn.duration)}"


def activity_facts(activity: Activity, label: str) -> str:
    """The originator's recent activity, in the terms that matter for the verdict's coarse label."""
    if activity.connections <= 1:
        return ""
    at_least = "" if activity.complete else "at least "
    head = (
        f"this host made {at_least}{_number(activity.connections)} connections in the last "
        f"{_number(activity.window_seconds)} s"
    )
    if label == "dos":
        detail = f"{_number(activity.rate)} per second, {_count(activity.packets, 'packet')}"
    elif label == "recon":
        detail = _targets(activity)
        if activity.unanswered or activity.refused:
            detail += f", {_percent(activity.unanswered_or_refused_share)} unanswered or refused"
    else:
        detail = _targets(activity)
        if activity.top_ports and activity.ports > 1:
            port, count = activity.top_ports[0]
            detail += f", {_number(count)} of them to port {port}"
    return f"{head}, {detail}"


_VICTIM_CONNECTIONS = 10  # inbound connections in the window from which a responder's side is worth reporting


def responder_facts(responder: ResponderSummary) -> str:
    """The receiving host's recent inbound connections (`packetclip.context.receiving_side`): how many, from how
    many sources, how fast, how many went unanswered ("" when there was at most one)."""
    if responder.connections <= 1:
        return ""
    at_least = "" if responder.complete else "at least "
    return (
        f"the receiving host got {at_least}{_number(responder.connections)} connections from "
        f"{_count(responder.sources, 'source')} in the last {_number(responder.window_seconds)} s "
        f"({_number(round(responder.rate, 1))} per second), {_percent(responder.unanswered_share)} unanswered"
    )


def _targets(activity: Activity) -> str:
    hosts = _count(activity.responders, "host")
    return f"to {_count(activity.ports, 'port')} on {hosts}" if activity.ports else f"to {hosts}"


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _number(value: float) -> str:
    """Integers with thousands separators; other values with as few decimals as keep them readable."""
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _count(value: int, noun: str) -> str:
    return f"{_number(value)} {noun}" + ("" if value == 1 else "s")


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def _duration(seconds: float) -> str:
    if seconds < 0.0005:
        return "no measurable duration"
    if seconds < 10:
        return f"over {seconds:.3f} s"
    return f"over {_number(round(seconds, 1))} s"
