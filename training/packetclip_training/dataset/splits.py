"""Train/val/test assignment: disjoint by connection and by time, with held-out variants only in test.

Owns the split rule and its configuration. Does not read or write data files (`store`, `build`).

Rule for attack classes of the lab, whose connections carry an episode id: whole episodes go to one split. Per
(source, class) the episodes are ordered by start and the earliest `train` share of them goes to train, the next
`val` share to val, the rest to test; an episode that still runs when the next split's first episode starts (two
attackers at once) is dropped and counted, so no moment of a class's traffic is in two splits. Long attack
connections (a flood's one ICMP "connection", a slowloris socket) make a per-connection time cut drop almost all of
an episode, which is why episodes are the unit.

Rule for everything else (benign traffic, CSV-labelled captures), per source and fine class: order the connections
by first-packet time and cut the class's time span at `train` and `train + val` of its length. A connection belongs to a split only when
it lies wholly (ts..last_ts) inside that split's interval; one that straddles a cut, or starts within `guard_s`
after it, is dropped and counted, so no connection and no moment of traffic is shared between splits. Cutting per
class, not per source, keeps every class of a source in every split (an attack that ran late in a run would
otherwise land wholly in test). Connections of held-out variants go to test only. Small real captures go wholly to
one split per file, chosen by a seeded hash of the file's sha256.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST, DROPPED = 0, 1, 2, -1


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.7  # share of each (source, class) time span for training
    val: float = 0.1  # then validation; the rest (0.2) is test
    guard_s: float = 1.0  # connections starting this soon after a cut are dropped: neighbours leak an episode
    real_test_share: float = 0.2  # share of whole real-capture files sent to test
    real_val_share: float = 0.1  # and to val
    seed: int = 0  # changes the per-file draw of real captures; the time split has no randomness

    def __post_init__(self) -> None:
        if self.train <= 0 or self.val < 0 or self.train + self.val >= 1:
            raise ValueError(
                f"split shares need 0 < train, 0 <= val, train + val < 1; got {self.train}, {self.val}"
            )
        shares = (self.real_test_share, self.real_val_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError("real_test_share + real_val_share must lie in [0, 1]")
        if self.guard_s < 0:
            raise ValueError("guard_s must be >= 0")

    def describe(self) -> dict:
        return {
            "method": "lab attacks: whole episodes per (source, fine class) in time order; other traffic: time split "
            "per (source, fine class); whole files for real captures; heldout variants test only",
            **asdict(self),
        }


def file_split(sha256: str, config: SplitConfig) -> int:
    """The split of a whole real-capture file: a uniform draw from its hash and the seed, stable across runs."""
    draw = hashlib.sha256(f"{config.seed}:{sha256}".encode()).digest()
    u = int.from_bytes(draw[:8], "big") / 2**64
    if u < config.real_test_share:
        return TEST
    if u < config.real_test_share + config.real_val_share:
        return VAL
    return TRAIN


def time_split(ts: np.ndarray, last_ts: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, Counter]:
    """Split one (source, class) group by time; returns split codes and drop counts by reason."""
    codes = np.full(len(ts), DROPPED, dtype=np.int8)
    dropped: Counter = Counter()
    if len(ts) == 0:
        return codes, dropped
    start, end = float(ts.min()), float(ts.max())
    span = end - start
    if span == 0.0:
        # one instant: nothing to order by time, and splitting it would share that instant across splits
        codes[:] = TRAIN
        return codes, dropped
    cut_val = start + config.train * span
    cut_test = start + (config.train + config.val) * span
    in_train = last_ts < cut_val
    in_val = (ts >= cut_val + config.guard_s) & (last_ts < cut_test)
    in_test = ts >= cut_test + config.guard_s
    codes[in_train] = TRAIN
    codes[in_val] = VAL
    codes[in_test] = TEST
    leftover = codes == DROPPED
    in_guard = leftover & (
        ((ts >= cut_val) & (ts < cut_val + config.guard_s))
        | ((ts >= cut_test) & (ts < cut_test + config.guard_s))
    )
    dropped["split_guard_gap"] = int(in_guard.sum())
    dropped["split_straddles_boundary"] = int((leftover & ~in_guard).sum())
    return codes, +dropped


def episode_split(
    episode: np.ndarray, ts: np.ndarray, last_ts: np.ndarray, config: SplitConfig
) -> tuple[np.ndarray, Counter]:
    """Split one (source, class) group whole episode by whole episode, in order of episode start."""
    codes = np.full(len(ts), DROPPED, dtype=np.int8)
    dropped: Counter = Counter()
    names, index = np.unique(episode, return_inverse=True)
    starts = np.array([ts[index == k].min() for k in range(len(names))])
    ends = np.array([last_ts[index == k].max() for k in range(len(names))])
    order = np.argsort(starts, kind="stable")
    n = len(names)
    n_train = max(1, round(config.train * n))
    n_val = round(config.val * n) if n - n_train >= 2 else 0
    episode_codes = np.full(n, TEST, dtype=np.int8)
    episode_codes[order[:n_train]] = TRAIN
    episode_codes[order[n_train : n_train + n_val]] = VAL
    for earlier in (TRAIN, VAL):
        later = episode_codes > earlier
        if not later.any():
            continue
        first_later_start = starts[later].min()
        overlapping = (episode_codes == earlier) & (ends >= first_later_start - config.guard_s)
        episode_codes[overlapping] = DROPPED
        dropped["split_episode_overlaps_next_split"] += int(np.isin(index, np.flatnonzero(overlapping)).sum())
    codes[:] = episode_codes[index]
    return codes, +dropped


def assign_splits(
    source: np.ndarray,
    fine: np.ndarray,
    heldout: np.ndarray,
    ts: np.ndarray,
    last_ts: np.ndarray,
    whole_file_sha: np.ndarray,
    config: SplitConfig,
    episode: np.ndarray | None = None,
) -> tuple[np.ndarray, Counter]:
    """Split codes for every connection, and the counts of those dropped by the split, by reason.

    `whole_file_sha` is the file's sha256 for sources split per file (real captures) and "" for time-split ones;
    `episode` the lab episode id of attack connections ("" or None elsewhere).
    """
    if episode is None:
        episode = np.full(len(ts), "")
    codes = np.full(len(ts), DROPPED, dtype=np.int8)
    dropped: Counter = Counter()
    per_file = whole_file_sha != ""
    for sha in np.unique(whole_file_sha[per_file]):
        members = whole_file_sha == sha
        # a held-out file (a source family kept out of training) goes wholly to test
        codes[members] = TEST if heldout[members].any() else file_split(str(sha), config)
    codes[heldout & ~per_file] = TEST
    timed = ~per_file & ~heldout
    groups: dict[tuple[str, str], list[int]] = {}
    for i in np.flatnonzero(timed):
        groups.setdefault((str(source[i]), str(fine[i])), []).append(int(i))
    for key in sorted(groups):
        members = np.asarray(groups[key])
        if (episode[members] != "").all():
            group_codes, group_dropped = episode_split(
                episode[members], ts[members], last_ts[members], config
            )
        else:
            group_codes, group_dropped = time_split(ts[members], last_ts[members], config)
        codes[members] = group_codes
        dropped.update(group_dropped)
    return codes, dropped
