"""The split rule: disjoint by connection and by time per (source, class), held-out variants test only,
whole real files per split, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from packetclip_training.dataset.splits import (
    DROPPED,
    TEST,
    TRAIN,
    VAL,
    SplitConfig,
    assign_splits,
    file_split,
)


def synthetic(n: int = 2000, seed: int = 1):
    rng = np.random.default_rng(seed)
    source = rng.choice(["runA", "runB"], n)
    fine = rng.choice(["benign", "syn_flood", "port_scan"], n)
    ts = rng.uniform(0, 1000, n)
    last_ts = ts + rng.exponential(2.0, n)
    heldout = (fine == "port_scan") & (rng.random(n) < 0.3)
    return source, fine, heldout, ts, last_ts


def test_time_split_per_source_and_class_is_disjoint_in_time_and_guarded():
    source, fine, heldout, ts, last_ts = synthetic()
    config = SplitConfig(guard_s=5.0)
    codes, dropped = assign_splits(source, fine, heldout, ts, last_ts, np.full(len(ts), ""), config)
    assert set(np.unique(codes)) == {DROPPED, TRAIN, VAL, TEST}
    assert int((codes == DROPPED).sum()) == sum(dropped.values()) > 0
    assert set(dropped) == {"split_guard_gap", "split_straddles_boundary"}
    for src in np.unique(source):
        for cls in np.unique(fine):
            group = (source == src) & (fine == cls) & ~heldout
            train, val, test = (group & (codes == c) for c in (TRAIN, VAL, TEST))
            # every interval of an earlier split ends before the next split's first start, with the guard between
            assert last_ts[train].max() < ts[val].min() - config.guard_s + 1e-9 or not val.any()
            assert last_ts[val].max() < ts[test].min()
            assert last_ts[train].max() < ts[test].min()
            shares = np.array([train.sum(), val.sum(), test.sum()]) / group.sum()
            assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.05)


def test_heldout_only_in_test():
    source, fine, heldout, ts, last_ts = synthetic()
    codes, _ = assign_splits(source, fine, heldout, ts, last_ts, np.full(len(ts), ""), SplitConfig())
    assert heldout.any() and (codes[heldout] == TEST).all()


def test_real_files_go_wholly_to_one_split_by_hash_and_seed():
    n_files = 400
    shas = np.array([f"{i:064x}" for i in range(n_files)]).repeat(3)
    ts = np.arange(len(shas), dtype=float)
    fine = np.full(len(shas), "benign")
    codes, dropped = assign_splits(shas, fine, np.zeros(len(ts), bool), ts, ts, shas, SplitConfig())
    assert not dropped
    per_file = codes.reshape(n_files, 3)
    assert (per_file == per_file[:, :1]).all()
    share_test = (per_file[:, 0] == TEST).mean()
    assert share_test == pytest.approx(0.2, abs=0.06)
    again, _ = assign_splits(shas, fine, np.zeros(len(ts), bool), ts, ts, shas, SplitConfig())
    assert (again == codes).all()
    other_seed = [file_split(sha, SplitConfig(seed=7)) for sha in shas[::3]]
    assert other_seed != per_file[:, 0].tolist()


def test_held_out_real_files_go_wholly_to_test():
    """A source family held out of training (the recipe's `real.test_only`) lands in test, every file of it."""
    from packetclip_training.dataset.build import real_test_only

    shas = np.array([f"{i:064x}" for i in range(40)]).repeat(2)
    sources = np.array(
        [f"packet-captures/{i}.pcap" if i < 10 else f"zeek/{i}.pcap" for i in range(40)]
    ).repeat(2)
    kind = np.full(len(shas), "real")
    held = real_test_only(kind, sources, ["packet-captures/*"])
    assert held.sum() == 20 and not real_test_only(kind, sources, []).any()
    assert not real_test_only(np.full(len(shas), "lab"), sources, ["packet-captures/*"]).any()
    ts = np.arange(len(shas), dtype=float)
    codes, _ = assign_splits(sources, np.full(len(shas), "dos"), held, ts, ts, shas, SplitConfig())
    assert (codes[held] == TEST).all()
    assert {TRAIN, TEST} <= set(codes[~held].tolist())  # the others are still drawn per file


def test_single_instant_group_goes_to_train_and_bad_configs_refused():
    codes, _ = assign_splits(
        np.array(["s"]),
        np.array(["benign"]),
        np.array([False]),
        np.array([5.0]),
        np.array([5.0]),
        np.array([""]),
        SplitConfig(),
    )
    assert codes.tolist() == [TRAIN]
    with pytest.raises(ValueError):
        SplitConfig(train=0.9, val=0.2)
    with pytest.raises(ValueError):
        SplitConfig(real_test_share=0.8, real_val_share=0.3)


def _episodes(overlap_e7: bool):
    # 10 episodes of one class, 3 long connections each (a flood's sockets live as long as the episode); with
    # overlap_e7, episode 7 (a second attacker) still runs when episode 8 starts.
    rows = [(f"e{k}", 10.0 * k, 10.0 * k + 8.0) for k in range(10) for _ in range(3)]
    if overlap_e7:
        rows[21:24] = [("e7", 70.0, 85.0)] * 3
    episode = np.array([r[0] for r in rows])
    ts, last_ts = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    return episode, ts, last_ts


def _split_episodes(overlap_e7: bool, config: SplitConfig):
    episode, ts, last_ts = _episodes(overlap_e7)
    n = len(ts)
    codes, dropped = assign_splits(
        np.full(n, "run"),
        np.full(n, "syn_flood"),
        np.zeros(n, bool),
        ts,
        last_ts,
        np.full(n, ""),
        config,
        episode=episode,
    )
    return {e: set(codes[episode == e].tolist()) for e in np.unique(episode)}, dropped


def test_lab_attack_episodes_stay_whole_in_time_order():
    by_episode, dropped = _split_episodes(False, SplitConfig(guard_s=0.5))
    assert all(len(s) == 1 for s in by_episode.values())  # never split inside an episode
    assert [by_episode[f"e{k}"].pop() for k in range(10)] == [TRAIN] * 7 + [VAL, TEST, TEST]
    assert not dropped


def test_lab_attack_episode_overlapping_the_next_split_is_dropped():
    by_episode, dropped = _split_episodes(True, SplitConfig(train=0.6, val=0.2, guard_s=0.5))
    assert [by_episode[f"e{k}"].pop() for k in range(10)] == [TRAIN] * 6 + [VAL, DROPPED, TEST, TEST]
    assert dropped == {"split_episode_overlaps_next_split": 3}
