"""The inference engine shared by `packetclip classify`, `packetclip bench` and the live sidecars.

Owns turning finished connections into verdicts with one model bundle:

1. pack the connections (`packetclip.featurizer.pack`) and run `encoder.onnx` on the ones the embedding cache
   has not seen (floods repeat the same masked packets, so identical inputs are embedded once); an encoder with a
   dynamic packet axis gets them grouped by packet count (`PACKET_BUCKETS`), each group cut to its longest, so
   short connections do not pay for the packet layer's padding (padding is masked: the result is the same), in
   calls of at most `ENCODER_CALL_SLOTS` packet slots;
2. build each connection's originator context with `packetclip.context.OriginatorHistory`, following the rule
   training replays: walk the batch in order of first-packet time; for each connection take its context, THEN add
   its own packets under the key ``f"{sensor}|{orig_h}"`` (payload = their packet embeddings, kept only for a
   reasoner that reads them: one whose ONNX graph has the `context` input); in the same walk, the responder's
   recent inbound activity with `packetclip.context.ResponderActivity` under ``f"{sensor}|{host}"``, the host its
   first packet went to (`receiving_side`), with the window the bundle's manifest names (read by a reasoner
   with the `responder_features` input, and by the explanations). A call may carry several sensors' connections
   (one sensor name per connection, as `packetclip serve` batches many Zeek nodes): the walk then takes them sensor
   after sensor, in the order each sensor first appears, each sensor's in first-packet order (`walk_order`), so
   every sensor's contexts grow exactly as in a call of its own, and the models still run once per micro-batch;
3. run `reasoner.onnx` on the whole batch and turn its probabilities into `Verdict`s (`packetclip.verdict`):
   `label` is the most likely coarse class (or, for a bundle with an operating point, an attack class only when
   1 - P(benign) reaches its threshold: `decide`), `attack` the most likely fine class *of that label*, `concepts`
   the `TOP_CONCEPTS` strongest concepts of the winning mission (ranked as `packetclip.explain.strongest` ranks
   them), and `explanation` comes from `packetclip.explain.Explainer` (for the whole batch) over the
   facts the `ActivityTracker` observed: each connection is observed in batch order and its originator's summary
   taken right after, for the verdicts whose explanation reports it;
4. with an allowlist (`packetclip.allowlist.AllowlistFile`), mark the verdicts of expected traffic allowed: label,
   attack and scores stay, `allowed` and `allow_reason` are set and the reason ends the explanation. Every sensor
   path gets its verdicts here, so all of them mark the same ones; without an allowlist nothing is done per
   verdict;
5. with an input store (`packetclip.feedback.InputStore`, the `keep_inputs` setting), keep what the models were
   fed for each connection and what they said, one transaction per batch, for an analyst's feedback to be learnt
   from; without one nothing is done per verdict.

One onnxruntime session per model, with explicit intra-/inter-op thread counts and sequential execution (a
sensor shares its cores with Zeek); numpy's BLAS is held to the same thread count while a batch runs.
`Engine.reload` swaps the bundle atomically between micro-batches.

It does not read captures or track connections (`packetclip.featurizer`), format records (`packetclip.output`)
or decide where bundles come from (`packetclip.store`, the commands).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from packetclip.allowlist import AllowlistFile
from packetclip.bundle import Bundle, BundleError, load_bundle
from packetclip.context import (
    CONTEXT_FEATURES,
    PACKET_FACTS,
    RESPONDER_FEATURES,
    OriginatorHistory,
    ResponderActivity,
    ResponderSummary,
    receiving_side,
    responder_summary,
    valid_packet_facts,
)
from packetclip.explain import TOP_CONCEPTS, Activity, ActivityTracker, Explainer, strongest
from packetclip.featurizer import Connection, FeaturizerConfig, pack
from packetclip.feedback import InputStore
from packetclip.verdict import Verdict

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("bytes", "direction", "iat", "length", "valid")
ENCODER_OUTPUTS = ("packet_embeddings", "connection_embedding")
# what a reasoner may take; `context` (the context packets' embeddings) only when it reads them,
# `responder_features` only from bundles that have them
REASONER_INPUTS = ("connection", "context", "context_features", "context_valid", "responder_features")
REASONER_OUTPUTS = ("coarse", "fine", "concepts", "aligned")
DEFAULT_CACHE_SIZE = 4096  # connections; at most ~16 KB each at E=128 (30 packet rows + 1), so ~64 MB at most
# encoder calls group connections of at most this many packets (the last group: up to max_packets)
PACKET_BUCKETS = (2, 4, 8, 16)
# packet slots (connections × the group's packet limit) per encoder call: a call's activations then stay in a
# core's cache (on the development machine 256 ran 4 % faster than whole groups of 256 connections, 512 and more
# no faster than whole groups)
ENCODER_CALL_SLOTS = 256


class MissionScorer(Protocol):
    """What the engine needs of a user-mission scorer (`packetclip.user_missions.UserMissionScorer`)."""

    names: tuple[str, ...]

    def scores(self, aligned: np.ndarray, connection: np.ndarray | None = None) -> dict[str, np.ndarray]: ...


MissionScorerFactory = Callable[[Bundle], "MissionScorer | None"]


def session_options(threads: int) -> Any:
    """onnxruntime options: `threads` intra-op, one inter-op thread, sequential execution, full graph rewrites."""
    import onnxruntime as ort  # the only heavy import of the runtime; kept out of module import time

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # sequential graphs never run two nodes at once: a second pool idles
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def open_session(model_path: Path, threads: int) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(model_path), session_options(threads), providers=["CPUExecutionProvider"])


# --- embedding cache ----------------------------------------------------------------------------------------


class EmbeddingCache:
    """Bounded LRU of encoder outputs keyed by everything the encoder reads of one connection.

    The key hashes (blake2b, 256 bits) the valid packets' masked bytes, directions, lengths and inter-arrival
    times exactly as `pack` produced them, plus the packet count: the encoder reads all of these (iat included),
    so two connections share a cache entry only when the encoder would see the same input. A 256-bit digest makes
    a collision (a cached embedding for a different input) practically impossible, even for crafted traffic.

    Hashing costs a few percent of the pipeline, and most traffic never repeats an input exactly (a flood tool
    that varies its source port already defeats it). So the cache steps aside when it does not pay: after
    `TRIAL_LOOKUPS` lookups with fewer than `MIN_HIT_RATE` hits it turns dormant and looks up only one micro-batch
    in `PROBE_EVERY`; a probe that hits that often wakes it. Answers never depend on this (a skipped lookup runs the
    encoder, which computes what the cache would have returned).

    `rounded_iat_ms`, when set, also counts how often a cache keyed on iat rounded to that many milliseconds would
    have hit (a measurement for the benchmark: such a cache would return embeddings of inputs that differ, so it is
    never used to answer); the cache then never turns dormant.
    """

    TRIAL_LOOKUPS = 256  # one default micro-batch: a flood that repeats inputs shows it within one
    MIN_HIT_RATE = 0.01
    PROBE_EVERY = 16

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE, rounded_iat_ms: float | None = None) -> None:
        self.capacity = max(0, capacity)
        self.hits = 0
        self.misses = 0
        self.skipped = 0  # connections embedded without a lookup while the cache was dormant
        self.dormant = False
        self._trial_lookups = self._trial_hits = self._batches_skipped = 0
        self._entries: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.rounded_iat_ms = rounded_iat_ms
        self.rounded_hits = 0
        self._rounded: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def rounded_hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.rounded_hits / lookups if lookups else 0.0

    def use_for_batch(self, rows: int) -> bool:
        """Whether the next micro-batch of `rows` connections is looked up (see the class docstring)."""
        if not self.capacity:
            return False
        if not self.dormant or self.rounded_iat_ms is not None:
            return True
        self._batches_skipped += 1
        if self._batches_skipped >= self.PROBE_EVERY:
            self._batches_skipped = 0
            return True
        self.skipped += rows
        return False

    def account(self, lookups: int, hits: int) -> None:
        """After a looked-up micro-batch: stay awake, turn dormant or wake from a probe."""
        if self.dormant:
            if hits and hits >= self.MIN_HIT_RATE * lookups:
                self.dormant = False
                self._trial_lookups = self._trial_hits = 0
            return
        self._trial_lookups += lookups
        self._trial_hits += hits
        if self._trial_lookups >= self.TRIAL_LOOKUPS:
            rate = self._trial_hits / self._trial_lookups
            self.dormant = rate < self.MIN_HIT_RATE and self.rounded_iat_ms is None
            self._trial_lookups = self._trial_hits = 0

    def keys(self, arrays: dict[str, np.ndarray]) -> list[bytes]:
        """One key per packed connection (row of `arrays`)."""
        counts = arrays["valid"].sum(axis=1).tolist()
        data, direction, length, iat = arrays["bytes"], arrays["direction"], arrays["length"], arrays["iat"]
        keys = []
        for row, n in enumerate(counts):
            digest = hashlib.blake2b(digest_size=32)
            digest.update(n.to_bytes(2, "little"))
            digest.update(data[row, :n].data)  # contiguous rows: hashed in place, not copied
            digest.update(direction[row, :n].data)
            digest.update(length[row, :n].data)
            digest.update(iat[row, :n].data)
            keys.append(digest.digest())
        if self.rounded_iat_ms is not None:
            self._count_rounded(arrays, counts)
        return keys

    def get(self, key: bytes) -> tuple[np.ndarray, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: bytes, packet_embeddings: np.ndarray, connection_embedding: np.ndarray) -> None:
        if not self.capacity:
            return
        self._entries[key] = (packet_embeddings, connection_embedding)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def _count_rounded(self, arrays: dict[str, np.ndarray], counts: list[int]) -> None:
        assert self.rounded_iat_ms is not None
        rounded = np.round(arrays["iat"] * (1000.0 / self.rounded_iat_ms)).astype(np.int64)
        for row, n in enumerate(counts):
            digest = hashlib.blake2b(digest_size=32)
            digest.update(n.to_bytes(2, "little"))
            digest.update(arrays["bytes"][row, :n].tobytes())
            digest.update(arrays["direction"][row, :n].tobytes())
            digest.update(arrays["length"][row, :n].tobytes())
            digest.update(rounded[row, :n].tobytes())
            key = digest.digest()
            if key in self._rounded:
                self.rounded_hits += 1
                self._rounded.move_to_end(key)
            else:
                self._rounded[key] = None
                if len(self._rounded) > self.capacity:
                    self._rounded.popitem(last=False)


# --- the models of one bundle -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Models:
    """Everything derived from one bundle; replaced as a whole by `Engine.reload`."""

    bundle: Bundle
    encoder: Any  # onnxruntime.InferenceSession
    reasoner: Any
    encoder_digest: str  # sha256 of encoder.onnx from the manifest: same digest, same embedding space
    embed_dim: int
    # the reasoner takes the context packets' embeddings (input `context`), not only their features
    reads_context: bool
    # the encoder's packet axis is dynamic: a batch may be cut to its longest connection (older bundles: fixed)
    cuts_packets: bool
    # the columns of `CONTEXT_FEATURES` the bundle's reasoner takes, in its order (bundles name theirs); None
    # when it takes them all, as they are
    context_columns: np.ndarray | None
    # the columns of `RESPONDER_FEATURES` the reasoner takes, in its order; None when it takes none
    responder_columns: np.ndarray | None
    featurizer: FeaturizerConfig
    concepts: list[dict[str, str]]
    mission_concepts: dict[str, np.ndarray]  # mission -> indices of its concepts in the reasoner's output
    fine_of_coarse: np.ndarray  # bool (coarse classes, fine classes): which fine classes each coarse one has
    explainer: Explainer
    benign_index: int  # column of the benign class in the coarse probabilities (-1: the bundle has none)


def _load_models(bundle: Bundle, threads: int) -> _Models:
    paths = bundle.model_paths
    for role in ("encoder", "reasoner"):
        if role not in paths:
            raise BundleError(f"bundle {bundle.source}: no {role!r} model")
    encoder = open_session(paths["encoder"], threads)
    reasoner = open_session(paths["reasoner"], threads)
    missing = [name for name in ENCODER_INPUTS if name not in {i.name for i in encoder.get_inputs()}]
    if missing:
        raise BundleError(f"bundle {bundle.source}: {paths['encoder'].name}: missing inputs {missing}")
    unknown_features = [name for name in bundle.context_features if name not in CONTEXT_FEATURES]
    if unknown_features or not bundle.context_features:
        raise BundleError(
            f"bundle {bundle.source}: context features {list(bundle.context_features)}: this runtime knows "
            f"{list(CONTEXT_FEATURES)}"
        )
    reasoner_inputs = {i.name for i in reasoner.get_inputs()}
    unknown = reasoner_inputs - set(REASONER_INPUTS)
    if unknown or not {"connection", "context_features", "context_valid"} <= reasoner_inputs:
        raise BundleError(
            f"bundle {bundle.source}: {paths['reasoner'].name}: inputs {sorted(reasoner_inputs)}"
        )
    reads_responder = "responder_features" in reasoner_inputs
    responder_names = bundle.responder_features
    if reads_responder != bool(responder_names) or any(n not in RESPONDER_FEATURES for n in responder_names):
        raise BundleError(
            f"bundle {bundle.source}: responder features {list(responder_names)} (reasoner input "
            f"{'present' if reads_responder else 'absent'}): this runtime knows {list(RESPONDER_FEATURES)}"
        )
    connection_input = next(i for i in reasoner.get_inputs() if i.name == "connection")
    embed_dim = int(connection_input.shape[-1])
    concepts = bundle.concepts
    missions = {c["mission"] for c in concepts}
    fine = bundle.fine_classes
    manifest_featurizer = bundle.featurizer
    return _Models(
        bundle=bundle,
        encoder=encoder,
        reasoner=reasoner,
        encoder_digest=str(bundle.manifest["files"].get(paths["encoder"].name, "")),
        embed_dim=embed_dim,
        reads_context="context" in reasoner_inputs,
        cuts_packets=not isinstance(next(i for i in encoder.get_inputs() if i.name == "valid").shape[1], int),
        context_columns=(
            None
            if bundle.context_features == CONTEXT_FEATURES
            else np.array([CONTEXT_FEATURES.index(name) for name in bundle.context_features], np.int64)
        ),
        responder_columns=(
            np.array([RESPONDER_FEATURES.index(name) for name in responder_names], np.int64)
            if reads_responder
            else None
        ),
        featurizer=FeaturizerConfig(
            max_packets=int(manifest_featurizer.get("max_packets", FeaturizerConfig.max_packets)),
            snaplen=int(manifest_featurizer.get("snaplen", FeaturizerConfig.snaplen)),
            window=None
            if manifest_featurizer.get("window") is None
            else float(manifest_featurizer["window"]),
        ),
        concepts=concepts,
        mission_concepts={
            mission: np.array([i for i, c in enumerate(concepts) if c["mission"] == mission], np.int64)
            for mission in missions
        },
        fine_of_coarse=np.array(
            [[bundle.fine_to_coarse[name] == coarse for name in fine] for coarse in bundle.coarse_classes],
            bool,
        ).reshape(len(bundle.coarse_classes), len(fine)),
        explainer=Explainer(bundle),
        benign_index=list(bundle.coarse_classes).index("benign") if "benign" in bundle.coarse_classes else -1,
    )


@dataclass
class BatchInference:
    """What one micro-batch went through, row i = connection i of `connections` (sorted by first-packet time)."""

    connections: list[Connection]
    packet_embeddings: np.ndarray  # float32 (B, N, E)
    connection_embedding: np.ndarray  # float32 (B, E)
    # float32 (B, A, E) the context packets' embeddings; (B, A, 0) for a reasoner that does not read them
    context: np.ndarray
    # float32 (B, A, F): the context features the bundle's reasoner reads (`_Models.context_columns`)
    context_features: np.ndarray
    context_valid: np.ndarray  # bool (B, A)
    # float32 (B, V): every `RESPONDER_FEATURES` column of the responder's recent inbound activity
    responder_features: np.ndarray
    outputs: dict[str, np.ndarray]  # the reasoner's outputs by name
    # whose connections these are (the originator context and activity key); "" when they are several sensors'
    sensor: str
    # the encoder's input as `pack` gave it: bytes (B, N, S), direction, iat, length, valid (B, N)
    packed: dict[str, np.ndarray] = field(default_factory=dict)
    # row i's sensor (the engine always names them; left empty, every row is `sensor`'s)
    sensors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sensors:
            self.sensors = [self.sensor] * len(self.connections)

    def by_sensor(self) -> list[tuple[list[int], BatchInference]]:
        """The batch cut into one batch per sensor, in order of first appearance, with the rows each came from;
        the batch itself when it holds one sensor's connections."""
        rows_of: dict[str, list[int]] = {}
        for row, name in enumerate(self.sensors):
            rows_of.setdefault(name, []).append(row)
        if len(rows_of) <= 1:
            return [(list(range(len(self.connections))), self)]
        return [(rows, self._rows(rows, name)) for name, rows in rows_of.items()]

    def _rows(self, rows: list[int], sensor: str) -> BatchInference:
        index = np.asarray(rows, np.int64)
        return BatchInference(
            [self.connections[row] for row in rows],
            self.packet_embeddings[index],
            self.connection_embedding[index],
            self.context[index],
            self.context_features[index],
            self.context_valid[index],
            self.responder_features[index],
            {name: output[index] for name, output in self.outputs.items()},
            sensor,
            {name: array[index] for name, array in self.packed.items()},
        )


def row_sensors(connections: Sequence[Connection], sensor: str | Sequence[str]) -> list[str]:
    """Each connection's sensor: `sensor` for all of them, or one name per connection."""
    if isinstance(sensor, str):
        return [sensor] * len(connections)
    names = list(sensor)
    if len(names) != len(connections):
        raise ValueError(f"{len(names)} sensor names for {len(connections)} connections")
    return names


def walk_order(connections: Sequence[Connection], sensors: Sequence[str]) -> list[int]:
    """The order the engine takes connections in (indices): sensor after sensor, in the order each first appears,
    each sensor's connections in first-packet order (a stable sort: equal times keep the order given). Each
    sensor's connections are taken as a call with only them takes them, and one sensor's all before the next
    sensor's, as calls one sensor after another would: its contexts, its activity and the memory bounds shared by
    all sensors (least recently seen evicted first) see the same sequence."""
    first: dict[str, int] = {}
    group = [first.setdefault(name, len(first)) for name in sensors]
    if len(first) <= 1:
        return sorted(range(len(connections)), key=lambda i: connections[i].ts)
    return sorted(range(len(connections)), key=lambda i: (group[i], connections[i].ts))


class Engine:
    """Connections in, verdicts out; see the module docstring."""

    def __init__(
        self,
        bundle: Bundle | str | Path,
        threads: int = 1,
        batch_size: int = 256,
        max_originators: int = 10_000,
        cache_size: int = DEFAULT_CACHE_SIZE,
        activity_window: float = 60.0,
        rounded_iat_ms: float | None = None,
        shards: int = 1,
        user_missions: MissionScorerFactory | None = None,
        allowlist: AllowlistFile | None = None,
        inputs: InputStore | None = None,
    ) -> None:
        if threads < 1 or batch_size < 1 or shards < 1:
            raise ValueError("threads, batch_size and shards must be positive")
        self.threads = threads  # intra-op threads per session: a sensor decides how many cores inference gets
        self.batch_size = batch_size  # connections per onnxruntime call: amortises call overhead
        self.max_originators = max_originators  # bounds the context memory (least recently seen leave first)
        self.cache_size = cache_size  # embedding-cache entries; 0 disables the cache
        self.rounded_iat_ms = rounded_iat_ms  # benchmark only: also count hits of an iat-rounded key
        # how many sidecars share the sensor's connections, split by originator: responder counts are scaled by it
        self.shards = shards
        self._lock = threading.Lock()  # held for one micro-batch; reload swaps under it
        # the BLAS libraries loaded so far, found once: numpy's (explanations rank the description bank with a
        # matrix product) is held to `threads` while a batch runs, like onnxruntime — left alone, OpenBLAS takes
        # every core for products of a few million multiply-adds and keeps them spinning afterwards
        self._blas = ThreadpoolController()
        # builds the user-mission scorer of a bundle (None: no user missions), again for every reloaded bundle:
        # a mission's vector lives in the space of the bundle's text head
        self.user_missions = user_missions
        # marks the verdicts of expected traffic allowed (None: no allowlist, no work per verdict); it follows its
        # file by itself, across bundle reloads
        self.allowlist = allowlist
        # keeps every verdict's model input for feedback (None: nothing kept, no work per verdict)
        self.inputs = inputs
        self._models = _load_models(self._open(bundle), threads)
        self._missions = self._mission_scorer(self._models.bundle)
        self.activity = ActivityTracker(max_originators=max_originators, window_seconds=activity_window)
        self.inbound = self._new_inbound(self._models)
        self._reset_encoder_state()
        self.closed = False

    def _new_inbound(self, models: _Models) -> ResponderActivity:
        """Responder windows as the bundle's reasoner was trained with (they hold no encoder output)."""
        window, kept = models.bundle.responder_window
        return ResponderActivity(window, kept, max_responders=self.max_originators, shards=self.shards)

    def _mission_scorer(self, bundle: Bundle) -> MissionScorer | None:
        return None if self.user_missions is None else self.user_missions(bundle)

    @property
    def user_mission_names(self) -> tuple[str, ...]:
        """The user-written missions scored for the bundle being served (empty: none)."""
        return () if self._missions is None else tuple(self._missions.names)

    @staticmethod
    def _open(bundle: Bundle | str | Path) -> Bundle:
        return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)

    def _reset_encoder_state(self) -> None:
        """History and cache hold encoder outputs: they belong to one embedding space."""
        self.history = OriginatorHistory(
            self._models.embed_dim if self._models.reads_context else 0,  # no payload kept when none is read
            np.float32,
            slots=self._models.bundle.context_slots,
            max_originators=self.max_originators,
        )
        self.cache = EmbeddingCache(self.cache_size, self.rounded_iat_ms)

    @property
    def bundle(self) -> Bundle:
        return self._models.bundle

    @property
    def attack_threshold(self) -> float | None:
        """The operating point of the bundle being served (`Bundle.attack_threshold`; None: argmax)."""
        return self._models.bundle.attack_threshold

    @property
    def model_version(self) -> str:
        return self._models.bundle.version

    @property
    def featurizer_config(self) -> FeaturizerConfig:
        """How connections must be cut for this bundle (max_packets, snaplen and window from its manifest)."""
        return self._models.featurizer

    def reset(self) -> None:
        """Forget every originator's context and activity and empty the cache (a new, unrelated capture)."""
        with self._lock:
            self.activity = ActivityTracker(
                max_originators=self.max_originators, window_seconds=self.activity.window_seconds
            )
            self.inbound = self._new_inbound(self._models)
            self._reset_encoder_state()

    def reload(self, bundle: Bundle | str | Path) -> None:
        """Serve `bundle` from the next micro-batch on. Sessions are built before the swap, so a bundle that
        fails to load raises here and the current one keeps serving. Originator contexts and cached embeddings
        survive when the encoder is byte-identical; otherwise they restart (mixing embedding spaces is wrong)."""
        models = _load_models(self._open(bundle), self.threads)
        missions = self._mission_scorer(models.bundle)
        with self._lock:
            self._missions = missions
            same_encoder = models.encoder_digest == self._models.encoder_digest and models.encoder_digest
            same_context = models.reads_context == self._models.reads_context
            if models.bundle.responder_window != self._models.bundle.responder_window:
                self.inbound = self._new_inbound(models)
            self._models = models
            if not (same_encoder and same_context):
                self._reset_encoder_state()
        log.info("engine now serves %s %s", models.bundle.name, models.bundle.version)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self.inputs is not None:
                self.inputs.close()

    def classify(self, connections: Sequence[Connection], sensor: str | Sequence[str] = "") -> list[Verdict]:
        """One verdict per connection, in the order given. Micro-batches follow first-packet time (stable), so
        a list that arrives in time order is replayed exactly as training replays a capture.

        `sensor` names whose connections they are: one name for all, or one per connection. Several sensors'
        connections are taken as `walk_order` says: the verdicts are those of one call per sensor, in the order
        the sensors first appear, with the models run once per micro-batch instead of once per sensor."""
        if self.closed:
            raise RuntimeError("engine is closed")
        sensors = row_sensors(connections, sensor)
        order = walk_order(connections, sensors)
        verdicts: list[Verdict | None] = [None] * len(connections)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            names = sensor if isinstance(sensor, str) else [sensors[i] for i in rows]
            # `rows` are in walk order already: the micro-batch's own walk keeps them in it
            batch_verdicts, _ = self.classify_batch([connections[i] for i in rows], names)
            for row, verdict in zip(rows, batch_verdicts, strict=True):
                verdicts[row] = verdict
        return [v for v in verdicts if v is not None]

    def classify_batch(
        self, connections: Sequence[Connection], sensor: str | Sequence[str] = ""
    ) -> tuple[list[Verdict], BatchInference]:
        """One micro-batch: its verdicts and what the models read and said, row for row, both in first-packet
        order (stable; `walk_order` for several sensors); for evaluations that look at the inputs behind a
        verdict as well."""
        if self.closed:
            raise RuntimeError("engine is closed")
        with self._lock, self._blas.limit(limits=self.threads, user_api="blas"):
            inference = self._infer(self._models, list(connections), sensor)
            return self._verdicts(inference), inference

    def infer_batch(
        self, connections: Sequence[Connection], sensor: str | Sequence[str] = ""
    ) -> BatchInference:
        """One micro-batch through encoder, context and reasoner (no verdicts); for inspection and tests."""
        with self._lock, self._blas.limit(limits=self.threads, user_api="blas"):
            return self._infer(self._models, list(connections), sensor)

    # --- one micro-batch ------------------------------------------------------------------------------------

    def _infer(
        self, models: _Models, connections: list[Connection], sensor: str | Sequence[str]
    ) -> BatchInference:
        sensors = row_sensors(connections, sensor)
        order = walk_order(connections, sensors)
        connections = [connections[i] for i in order]
        sensors = [sensors[i] for i in order]
        arrays = pack(connections, models.featurizer)
        counts = arrays["valid"].sum(axis=1).tolist()  # valid packets per connection
        packet_embeddings, connection_embedding = self._embed(models, arrays, counts)
        facts = np.zeros((*arrays["valid"].shape, len(PACKET_FACTS)), np.float32)
        facts[arrays["valid"]] = valid_packet_facts(arrays)
        batch, slots, width = len(connections), self.history.slots, self.history.payload_width
        context = np.zeros((batch, slots, width), np.float32)
        features = np.zeros((batch, slots, len(CONTEXT_FEATURES)), np.float32)
        valid = np.zeros((batch, slots), bool)
        responder = np.zeros((batch, len(RESPONDER_FEATURES)), np.float32)
        for row, (sensor_name, conn) in enumerate(zip(sensors, connections, strict=True)):
            n = counts[row]
            from_originator = conn.pkt_dir[:n] == 1
            self.history.step(
                f"{sensor_name}|{conn.orig_h}",
                conn.ts,
                conn.resp_h,
                conn.resp_p,
                conn.pkt_ts[:n],
                from_originator,
                packet_embeddings[row, :n, :width],
                facts[row, :n],
                out=(context[row], features[row], valid[row]),
            )
            first_out = bool(from_originator[0]) if n else True
            host, port, source = receiving_side(first_out, conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p)
            self.inbound.step(
                f"{sensor_name}|{host}",
                conn.ts,
                source,
                port,
                conn.proto,
                bool((from_originator != first_out).any()),
                n,
                out=responder[row],
            )
        if models.context_columns is not None:  # a bundle that reads fewer features, or in another order
            features = features[:, :, models.context_columns]
        outputs: dict[str, np.ndarray] = {}
        if batch:
            feed = {"connection": connection_embedding, "context_features": features, "context_valid": valid}
            if models.reads_context:
                feed["context"] = context
            if models.responder_columns is not None:
                feed["responder_features"] = np.ascontiguousarray(responder[:, models.responder_columns])
            outputs = dict(
                zip(REASONER_OUTPUTS, models.reasoner.run(list(REASONER_OUTPUTS), feed), strict=True)
            )
        return BatchInference(
            connections,
            packet_embeddings,
            connection_embedding,
            context,
            features,
            valid,
            responder,
            outputs,
            sensor if isinstance(sensor, str) else (sensors[0] if len(set(sensors)) == 1 else ""),
            arrays,
            sensors,
        )

    def _embed(
        self, models: _Models, arrays: dict[str, np.ndarray], counts: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encoder outputs for a packed batch (`counts`: its valid packets per row); rows the cache knows are not
        recomputed."""
        batch, max_packets = arrays["valid"].shape
        packet_embeddings = np.zeros((batch, max_packets, models.embed_dim), np.float32)
        connection_embedding = np.zeros((batch, models.embed_dim), np.float32)
        if not batch:
            return packet_embeddings, connection_embedding
        use_cache = self.cache.use_for_batch(batch)
        keys = self.cache.keys(arrays) if use_cache else [b""] * batch
        missing: list[int] = []
        first_of: dict[bytes, int] = {}  # a batch often holds the same flood connection many times
        duplicates: list[tuple[int, int]] = []
        hits_before = self.cache.hits
        for row, key in enumerate(keys):
            if use_cache and key in first_of:
                duplicates.append((row, first_of[key]))
                self.cache.hits += 1  # served without running the encoder, like a cache hit
                continue
            cached = self.cache.get(key) if use_cache else None
            if cached is not None:
                packets, connection_embedding[row] = cached
                packet_embeddings[row, : len(packets)] = packets  # the rest stays zero: padding
            else:
                first_of[key] = row
                missing.append(row)
        if missing:
            rows = np.asarray(missing)
            limits = [n for n in PACKET_BUCKETS if n < max_packets] if models.cuts_packets else []
            limits.append(max_packets)
            bucket = np.searchsorted(limits, np.asarray(counts)[rows])  # the first limit ≥ the packet count
            for index, limit in enumerate(limits):
                grouped = rows[bucket == index]
                step = max(1, ENCODER_CALL_SLOTS // limit)
                for start in range(0, len(grouped), step):
                    group = grouped[start : start + step]
                    feed = {name: arrays[name][group, :limit] for name in ENCODER_INPUTS}
                    per_packet, per_connection = models.encoder.run(list(ENCODER_OUTPUTS), feed)
                    packet_embeddings[group, :limit] = per_packet
                    connection_embedding[group] = per_connection
            if use_cache:
                for row in missing:
                    kept = packet_embeddings[row, : counts[row]].copy()  # valid packets only: padding is zero
                    self.cache.put(keys[row], kept, connection_embedding[row].copy())
        if use_cache:
            self.cache.account(batch, self.cache.hits - hits_before)
        for row, source in duplicates:
            packet_embeddings[row] = packet_embeddings[source]
            connection_embedding[row] = connection_embedding[source]
        return packet_embeddings, connection_embedding

    def _verdicts(self, inference: BatchInference) -> list[Verdict]:
        models = self._models
        coarse_names = models.bundle.coarse_classes
        fine_names = models.bundle.fine_classes
        if not inference.connections:
            return []
        coarse = _normalised(inference.outputs["coarse"].astype(np.float64))  # (B, C)
        fine = _normalised(inference.outputs["fine"].astype(np.float64))  # (B, F)
        concepts = inference.outputs["concepts"]
        aligned = inference.outputs["aligned"]
        labels = decide(coarse, models.benign_index, self.attack_threshold)
        # the attack is the most likely fine class of the label (the label itself when it has none)
        member = models.fine_of_coarse
        attacks = np.where(member[labels], fine, -np.inf).argmax(axis=1)
        label_names = [coarse_names[i] for i in labels.tolist()]
        attack_names = [
            fine_names[attack] if member[label].any() else coarse_names[label]
            for label, attack in zip(labels.tolist(), attacks.tolist(), strict=True)
        ]
        top = self._top_concepts(models, label_names, concepts)
        activities = self._activities(inference, label_names, attack_names)
        explanations = models.explainer.explain_batch(
            inference.connections,
            activities,
            label_names,
            attack_names,
            concepts,
            aligned,
            self._responders(inference, label_names, attack_names),
        )
        coarse_rows, fine_rows = coarse.tolist(), fine.tolist()
        mission_rows: list[dict[str, float]] = []  # user-written missions' scores, only when there are some
        if self._missions is not None:
            columns = self._missions.scores(aligned, inference.connection_embedding)
            mission_rows = [
                {name: float(column[row]) for name, column in columns.items()}
                for row in range(len(inference.connections))
            ]
        verdicts = []
        for row, conn in enumerate(inference.connections):
            label_index = int(labels[row])
            verdicts.append(
                Verdict(
                    ts=conn.ts,
                    uid=conn.uid,
                    orig_h=conn.orig_h,
                    orig_p=conn.orig_p,
                    resp_h=conn.resp_h,
                    resp_p=conn.resp_p,
                    proto=conn.proto,
                    community_id=conn.community_id,
                    label=label_names[row],
                    attack=attack_names[row],
                    score=coarse_rows[row][label_index],
                    scores=dict(zip(coarse_names, coarse_rows[row], strict=True)),
                    fine_scores=dict(zip(fine_names, fine_rows[row], strict=True)),
                    explanation=explanations[row],
                    model=models.bundle.version,
                    concepts=top[row],
                    missions=mission_rows[row] if mission_rows else {},
                )
            )
        if self.allowlist is not None:
            self.allowlist.mark(verdicts, inference.connections)
        if self.inputs is not None:  # a record names its sensor: one write per sensor of the batch
            for rows, part in inference.by_sensor():
                self.inputs.keep(part, [verdicts[row] for row in rows], models.bundle)
        return verdicts

    def _activities(
        self, inference: BatchInference, labels: list[str], attacks: list[str]
    ) -> list[Activity | None]:
        """Observe the batch's connections in order, each row's originator summary taken right after its own
        connection (what its explanation reports); None where the explanation does not report it."""
        tracker, reads = self.activity, self._models.explainer.reads_activity
        activities: list[Activity | None] = []
        rows = zip(inference.sensors, inference.connections, labels, attacks, strict=True)
        for sensor, conn, label, attack in rows:
            tracker.observe(sensor, conn)
            read = reads(label, attack)
            activities.append(tracker.summary(sensor, conn.orig_h, conn.last_ts) if read else None)
        return activities

    def _responders(
        self, inference: BatchInference, labels: list[str], attacks: list[str]
    ) -> list[ResponderSummary | None]:
        """Each row's responder activity in plain numbers, for the verdicts whose explanation may report it."""
        reads, inbound = self._models.explainer.reads_activity, self.inbound
        return [
            responder_summary(row, inbound.window, inbound.max_connections, inbound.shards)
            if reads(label, attack)
            else None
            for row, label, attack in zip(inference.responder_features, labels, attacks, strict=True)
        ]

    @staticmethod
    def _top_concepts(
        models: _Models, missions: list[str], activations: np.ndarray
    ) -> list[list[tuple[str, str, float]]]:
        """Per row, the `TOP_CONCEPTS` most active concepts of the row's mission (its label), strongest first."""
        top: list[list[tuple[str, str, float]]] = [[] for _ in missions]
        for mission in set(missions):
            indices = models.mission_concepts.get(mission)
            if indices is None or not len(indices):
                continue
            rows = [row for row, name in enumerate(missions) if name == mission]
            for row, best in zip(rows, strongest(activations[rows], indices, TOP_CONCEPTS), strict=True):
                top[row] = [(mission, models.concepts[i]["concept"], value) for i, value in best]
        return top


def decide(coarse: np.ndarray, benign: int, attack_threshold: float | None) -> np.ndarray:
    """Coarse label indices (B,) from probabilities (B, C): the most likely class, or with `attack_threshold` the
    bundle's operating point — an attack only when 1 - P(benign) reaches the threshold, and then the most likely
    attack class; benign otherwise."""
    if attack_threshold is None or benign < 0:
        return coarse.argmax(axis=1)
    attacks = coarse.copy()
    attacks[:, benign] = -np.inf
    is_attack = 1.0 - coarse[:, benign] >= attack_threshold
    return np.where(is_attack, attacks.argmax(axis=1), benign)


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Rows of probabilities in float64 that sum to 1 (the model's float32 softmax is off by a few ulps; a broken
    row of zeros or NaNs becomes uniform rather than a division by zero)."""
    clean = np.where(np.isfinite(probabilities) & (probabilities > 0), probabilities, 0.0)
    total = clean.sum(axis=-1, keepdims=True)
    uniform = np.full_like(clean, 1.0 / clean.shape[-1])
    return np.where(total > 0, clean / np.where(total > 0, total, 1.0), uniform)
