"""The reasoner's training input: frozen embeddings of every connection of a split and its originator context.

Owns two steps and their cache:
1. `embed_split`: the frozen packet encoder over every connection of a split → connection embeddings (n, E) and
   a table of per-packet embeddings (valid packets only, float16) with per-connection offsets.
2. `build_contexts`: the split replayed in time order through `packetclip.context.OriginatorHistory` and
   `packetclip.context.ResponderActivity` — the same classes the sensor uses — so each connection gets the
   originator's recent packets and its responder's recent inbound activity as the sensor would have seen them:
   per connection the indices of its context packets in the packet table, the slot features, the validity mask,
   the responder features, and the previous connection of the same originator (for the temporal-smoothing loss).

A split can also be embedded as the originator-only view (`augment.one_sided`): the reasoner trains on the train
split both ways (`reasoner_training_split`: captured rows, then the same rows one-sided, each part with its own
contexts), cached separately.

Originators and responders are keyed by capture file and address: two captures never share a history, as two
sensors would not.
Connections are replayed in order of their first packet, ties broken by `packetclip.ordering.endpoint_tie` (as
every sensor path orders them before the engine: `packetclip.ordering`).

Does not own the model (`models.reasoner`) or its loop (`reasoner.model`), the encoder (`models.encoder`) or the
dataset format.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from packetclip.context import (
    CONTEXT_FEATURES,
    CONTEXT_SLOTS,
    RESPONDER_FEATURES,
    OriginatorHistory,
    ResponderActivity,
    receiving_side,
    valid_packet_facts,
)
from packetclip.ordering import endpoint_tie
from packetclip_training.augment.one_sided import originator_view
from packetclip_training.augment.tool_invariance import vary_tool_fields
from packetclip_training.dataset.store import iter_split
from packetclip_training.models.encoder import PacketEncoder, batch_tensors

log = logging.getLogger(__name__)

CONTEXT_COLUMNS = ("source_file", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "ts")
LABEL_COLUMNS = ("fine", "coarse", "heldout", "variant", "episode", "uid", "source_kind", "source")
# 2: context slots carry packet facts; 3: responder features; 4: first-packet ties broken by endpoint_tie
CACHE_FORMAT = "packetclip-reasoner-cache/4"
VIEWS = ("both", "originator")  # as captured; the originators' packets only (`augment.one_sided`)
_AUGMENT_SEED = 0  # tool-invariance draws: fixed, so a cached augmented split is the same split
EMBED_ROWS = 65536  # connections `embed_split` reads at once (a multiple of its batch size)
# what `vary_tool_fields` redraws, and over how many rows a draw goes: a cache of other draws is stale
_AUGMENTATIONS = f"ports-window-syn-data chunks of {EMBED_ROWS}"


@dataclass
class SplitEmbeddings:
    """Everything the reasoner trains or is scored on for one split (row i = connection i of the split)."""

    connection: np.ndarray  # float32 (n, E)
    packets: np.ndarray  # float16 (P + 1, E): valid packets' embeddings; row 0 is all zero (empty slot)
    offsets: (
        np.ndarray
    )  # int64 (n + 1,): connection i's packets are packets[1 + offsets[i] : 1 + offsets[i + 1]]
    context_index: np.ndarray  # int32 (n, A): rows of `packets` (0 where the slot is empty)
    context_features: np.ndarray  # float16 (n, A, F)
    context_valid: np.ndarray  # bool (n, A)
    responder_features: np.ndarray  # float16 (n, V): `RESPONDER_FEATURES` of the connection's responder
    previous: np.ndarray  # int64 (n,): the same originator's previous connection, -1 for its first
    columns: dict[str, np.ndarray]  # labels and provenance (LABEL_COLUMNS + CONTEXT_COLUMNS)

    def __len__(self) -> int:
        return len(self.connection)

    def context(
        self, rows: np.ndarray, payload: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(context float32 (k, A, E), features float32 (k, A, F), valid bool (k, A), responder features float32
        (k, V)) for some rows; without `payload` the context is (k, A, 0): the packet table is not gathered for a
        model that does not read it."""
        index = self.context_index[rows]
        context = (
            self.packets[index].astype(np.float32) if payload else np.zeros((*index.shape, 0), np.float32)
        )
        return (
            context,
            self.context_features[rows].astype(np.float32),
            self.context_valid[rows],
            self.responder_features[rows].astype(np.float32),
        )


@torch.inference_mode()
def embed_arrays(
    encoder: PacketEncoder, arrays: dict[str, np.ndarray], batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(connection float32 (n, E), packet table float16 (P + 1, E), offsets (n + 1,)) of packed connections."""
    encoder.eval()
    tensors = batch_tensors(arrays)
    count = tensors[0].shape[0]
    embed_dim = encoder.config.embed_dim
    connections, packets = [], [np.zeros((1, embed_dim), np.float16)]
    for start in range(0, count, batch_size):
        chunk = [t[start : start + batch_size] for t in tensors]
        per_packet, connection = encoder(*chunk)
        valid = chunk[4].numpy()
        connections.append(connection.numpy())
        packets.append(per_packet.numpy()[valid].astype(np.float16))
    valid_counts = arrays["valid"].sum(axis=1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(valid_counts)])
    connection_array = np.concatenate(connections) if connections else np.zeros((0, embed_dim), np.float32)
    return connection_array.astype(np.float32), np.concatenate(packets), offsets


def packet_times(ts: np.ndarray, iat: np.ndarray) -> np.ndarray:
    """(n, N) absolute packet times from each connection's first-packet time and inter-arrival times."""
    return ts[:, None].astype(np.float64) + np.cumsum(iat.astype(np.float64), axis=1)


def replay_order(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Row indices in first-packet order; rows with the same first-packet time in `endpoint_tie` order (uid ""
    where the columns have none), as the sensor's paths hand connections to the engine."""
    ts = np.asarray(columns["ts"], dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    starts = np.flatnonzero(
        np.r_[True, sorted_ts[1:] != sorted_ts[:-1], True]
    )  # runs of one time, and the end
    uid = columns.get("uid")
    for begin, end in itertools.pairwise(starts):
        if end - begin < 2:
            continue
        rows = order[begin:end]
        keys = [_tie(columns, row, uid) for row in rows]
        order[begin:end] = rows[sorted(range(len(rows)), key=keys.__getitem__)]
    return order


def _tie(columns: dict[str, np.ndarray], row: int, uid: np.ndarray | None) -> tuple[Any, ...]:
    return endpoint_tie(
        str(columns["orig_h"][row]),
        int(columns["orig_p"][row]),
        str(columns["resp_h"][row]),
        int(columns["resp_p"][row]),
        str(columns["proto"][row]),
        "" if uid is None else str(uid[row]),
    )


def build_contexts(
    columns: dict[str, np.ndarray],
    offsets: np.ndarray,
    times: np.ndarray,
    direction: np.ndarray,
    facts: np.ndarray,
    slots: int = CONTEXT_SLOTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay connections in first-packet order; see the module docstring. `facts` (P, len(PACKET_FACTS)) are the
    valid packets' `packet_facts` in packet-table order (`valid_packet_facts`). Returns index, features, valid,
    responder features, previous."""
    count = len(offsets) - 1
    history = OriginatorHistory(1, np.int64, slots=slots, max_originators=max(1, count))
    # every responder of the split is kept (the sensor's bound is far above what a capture's window holds)
    inbound = ResponderActivity(max_responders=max(1, count))
    responder_features = np.zeros((count, len(RESPONDER_FEATURES)), np.float16)
    row_features = np.zeros(len(RESPONDER_FEATURES), np.float32)
    index = np.zeros((count, slots), np.int32)
    features = np.zeros((count, slots, len(CONTEXT_FEATURES)), np.float16)
    valid = np.zeros((count, slots), bool)
    previous = np.full(count, -1, np.int64)
    last_of: dict[str, int] = {}
    for row in replay_order(columns):
        source_file, originator = columns["source_file"][row], str(columns["orig_h"][row])
        key = f"{source_file}|{originator}"
        responder, port = str(columns["resp_h"][row]), int(columns["resp_p"][row])
        packets = int(offsets[row + 1] - offsets[row])
        row_features[:] = 0.0
        from_originator = direction[row, :packets] == 1
        first_out = bool(from_originator[0]) if packets else True
        host, host_port, sender = receiving_side(
            first_out, originator, int(columns["orig_p"][row]), responder, port
        )
        inbound.step(
            f"{source_file}|{host}",
            float(columns["ts"][row]),
            sender,
            host_port,
            str(columns["proto"][row]),
            bool((from_originator != first_out).any()),
            packets,
            out=row_features,
        )
        responder_features[row] = row_features
        rows_in_table = 1 + offsets[row] + np.arange(packets, dtype=np.int64)
        payload, features[row], valid[row] = history.step(
            key,
            float(columns["ts"][row]),
            responder,
            port,
            times[row, :packets],
            direction[row, :packets] == 1,
            rows_in_table[:, None],
            facts[rows_in_table - 1],
        )
        index[row] = payload[:, 0]
        previous[row] = last_of.get(key, -1)
        last_of[key] = row
    return index, features, valid, responder_features, previous


def embed_split(
    encoder: PacketEncoder,
    dataset: Path,
    split: str,
    batch_size: int = 512,
    view: str = "both",
    tool_invariance: float = 0.0,
    rows: int = EMBED_ROWS,
) -> SplitEmbeddings:
    """Embed and contextualise one split of a built dataset, as captured (`view` "both") or as a sensor seeing
    only the originators' packets would have featurized it (`view` "originator", see `augment.one_sided`); with
    `tool_invariance`, that share of its connections has its tool-identifying fields redrawn first
    (`augment.tool_invariance.vary_tool_fields`, seeded: the same rows and values every time).

    The split's model input is read, varied and embedded `rows` connections at a time (`dataset.store.iter_split`),
    so memory holds one chunk's packet bytes, not the split's; what the contexts need of every packet (times,
    directions, facts) is kept as it goes. Embeddings do not depend on `rows` when it is a multiple of
    `batch_size`; the augmentation's draws do (one generator over the chunks in order).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    rng = np.random.default_rng(_AUGMENT_SEED)
    names = (*LABEL_COLUMNS, *CONTEXT_COLUMNS)
    chunks: list[_Chunk] = []
    for arrays in iter_split(dataset, split, columns=names, rows=rows):
        if view == "originator":
            arrays = originator_view(arrays)
        if tool_invariance > 0:
            arrays = vary_tool_fields(arrays, rng, tool_invariance)
        columns = {name: arrays.pop(name) for name in names}
        connection, packets, _ = embed_arrays(encoder, arrays, batch_size)
        chunks.append(
            _Chunk(
                columns,
                connection,
                packets[1:],
                arrays["valid"].sum(axis=1).astype(np.int64),
                packet_times(columns["ts"], arrays["iat"]),
                np.asarray(arrays["direction"]),
                valid_packet_facts(arrays),
            )
        )
        del arrays
        log.info("%s: embedded %d connections", split, sum(len(chunk.connection) for chunk in chunks))
    columns = {name: np.concatenate([chunk.columns[name] for chunk in chunks]) for name in names}
    connection = np.concatenate([chunk.connection for chunk in chunks])
    packets = np.concatenate([np.zeros((1, connection.shape[1]), np.float16), *(c.packets for c in chunks)])
    offsets = np.concatenate([[0], np.cumsum(np.concatenate([chunk.counts for chunk in chunks]))])
    times = np.concatenate([chunk.times for chunk in chunks])
    direction = np.concatenate([chunk.direction for chunk in chunks])
    facts = np.concatenate([chunk.facts for chunk in chunks])
    del chunks
    index, features, valid, responder, previous = build_contexts(columns, offsets, times, direction, facts)
    log.info(
        "%s: contexts built (%.1f context packets per connection)",
        split,
        float(valid.sum(1).mean()) if len(valid) else 0.0,
    )
    return SplitEmbeddings(connection, packets, offsets, index, features, valid, responder, previous, columns)


@dataclass
class _Chunk:
    """What `embed_split` keeps of one chunk of a split once its packet bytes are gone."""

    columns: dict[str, np.ndarray]
    connection: np.ndarray  # float32 (k, E)
    packets: np.ndarray  # float16 (p, E): the chunk's valid packets, without the empty row
    counts: np.ndarray  # int64 (k,): valid packets per connection
    times: np.ndarray  # float64 (k, N)
    direction: np.ndarray  # int8 (k, N)
    facts: np.ndarray  # (p, len(PACKET_FACTS))


def _cache_key(encoder_path: Path, dataset: Path, split: str, view: str, tool_invariance: float = 0.0) -> str:
    digest = hashlib.sha256()
    digest.update(CACHE_FORMAT.encode())
    if view != "both":  # the two-sided view keeps the keys of caches written before views existed
        digest.update(view.encode())
    if tool_invariance > 0:
        digest.update(f"tool-invariance {_AUGMENTATIONS} {tool_invariance} seed {_AUGMENT_SEED}".encode())
    digest.update(hashlib.sha256(encoder_path.read_bytes()).digest())
    digest.update(str((dataset / f"{split}.parquet").stat().st_size).encode())
    manifest = dataset / "manifest.json"
    digest.update(manifest.read_bytes() if manifest.is_file() else str(dataset.resolve()).encode())
    return digest.hexdigest()[:16]


def cached_split(
    encoder: PacketEncoder,
    encoder_path: Path,
    dataset: Path,
    split: str,
    cache: Path | None,
    view: str = "both",
    tool_invariance: float = 0.0,
) -> SplitEmbeddings:
    """`embed_split`, reusing a cache file keyed by the encoder checkpoint, the dataset, the view and the
    augmentation when one exists."""
    if cache is None:
        return embed_split(encoder, dataset, split, view=view, tool_invariance=tool_invariance)
    cache.mkdir(parents=True, exist_ok=True)
    prefix = split if view == "both" else f"{split}-{view}"
    if tool_invariance > 0:
        prefix += "-invariant"
    path = cache / f"{prefix}-{_cache_key(encoder_path, dataset, split, view, tool_invariance)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=True) as stored:
            columns = json.loads(str(stored["column_names"]))
            log.info("%s: embeddings from cache %s", split, path)
            return SplitEmbeddings(
                stored["connection"],
                stored["packets"],
                stored["offsets"],
                stored["context_index"],
                stored["context_features"],
                stored["context_valid"],
                stored["responder_features"],
                stored["previous"],
                {name: stored[f"column_{name}"] for name in columns},
            )
    result = embed_split(encoder, dataset, split, view=view, tool_invariance=tool_invariance)
    # numpy's stubs read **columns as possibly its allow_pickle flag
    np.savez(
        path,
        connection=result.connection,
        packets=result.packets,
        offsets=result.offsets,
        context_index=result.context_index,
        context_features=result.context_features,
        context_valid=result.context_valid,
        responder_features=result.responder_features,
        previous=result.previous,
        column_names=json.dumps(list(result.columns)),
        **{f"column_{name}": values for name, values in result.columns.items()},  # type: ignore[arg-type]
    )
    return result


def concatenate_splits(first: SplitEmbeddings, second: SplitEmbeddings) -> SplitEmbeddings:
    """One split of `first`'s rows then `second`'s, each keeping its own contexts and predecessors.

    Context slots index the packet table, so the second table's rows are shifted past the first's (both share
    the all-zero row 0); `previous` links never cross from one part to the other. Only the columns both carry stay.
    """
    shift = len(first.packets) - 1
    second_index = np.where(second.context_index > 0, second.context_index + shift, 0).astype(np.int32)
    return SplitEmbeddings(
        np.concatenate([first.connection, second.connection]),
        np.concatenate([first.packets, second.packets[1:]]),
        np.concatenate([first.offsets, second.offsets[1:] + first.offsets[-1]]),
        np.concatenate([first.context_index, second_index]),
        np.concatenate([first.context_features, second.context_features]),
        np.concatenate([first.context_valid, second.context_valid]),
        np.concatenate([first.responder_features, second.responder_features]),
        np.concatenate([first.previous, np.where(second.previous >= 0, second.previous + len(first), -1)]),
        {
            name: np.concatenate([first.columns[name], second.columns[name]])
            for name in first.columns
            if name in second.columns
        },
    )


def reasoner_training_split(
    encoder: PacketEncoder,
    encoder_path: Path,
    dataset: Path,
    train: SplitEmbeddings | None,
    cache: Path | None,
    one_sided: bool,
    tool_invariance: float = 0.0,
) -> SplitEmbeddings:
    """What the reasoner trains on: the train split, and with `one_sided` also its originator-only view; with
    `tool_invariance`, both embedded anew with that share of connections' tool fields redrawn. `train` is the
    split as captured when the caller holds it already (None: read from the cache or embedded when needed, so a
    caller that does not keep it never holds it beside the views that replace it).

    The combined split holds the train rows as captured, then the same rows in the same order one-sided; its
    `view` column says which (`mirrored_rows` relies on that order).
    """
    if tool_invariance > 0 or train is None:
        train = cached_split(encoder, encoder_path, dataset, "train", cache, "both", tool_invariance)
    if not one_sided:
        return train
    combined = concatenate_splits(
        train, cached_split(encoder, encoder_path, dataset, "train", cache, "originator", tool_invariance)
    )
    combined.columns["view"] = np.repeat(np.asarray(VIEWS, dtype=object), len(train))
    return combined


def mirrored_rows(split: SplitEmbeddings, rows: np.ndarray) -> np.ndarray:
    """`rows` of the captured part of a `reasoner_training_split`, with the same connections' one-sided rows.

    For a split without views, `rows` unchanged: choosing a share of the connections picks both of their views.
    """
    views = split.columns.get("view")
    if views is None:
        return rows
    return np.concatenate([rows, rows + len(split) // 2])


def captured_part(split: SplitEmbeddings) -> np.ndarray:
    """Row numbers of the split as captured (all rows of a split without views)."""
    views = split.columns.get("view")
    return np.arange(len(split) if views is None else len(split) // 2)
