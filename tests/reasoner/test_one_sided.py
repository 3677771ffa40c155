"""The originator-only view: the rewrite of packed input must equal featurizing a capture of one direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packetclip.featurizer import FeaturizerConfig, pack, read_frames
from packetclip.featurizer.conntrack import featurize_frames
from packetclip_training.augment.one_sided import originator_view
from packetclip_training.reasoner.data import (
    SplitEmbeddings,
    captured_part,
    concatenate_splits,
    mirrored_rows,
)
from tests.featurizer.captures import REJ_AND_RSTR, SF_HTTP


# IPv4 handshake, GET and FINs; an IPv6 SYN answered by RST (that capture's first two frames)
@pytest.mark.parametrize(("name", "count"), [(SF_HTTP, None), (REJ_AND_RSTR, 2)])
def test_view_equals_the_featurized_one_sided_capture(real_data: Path, name: str, count: int | None) -> None:
    frames = list(read_frames(real_data / name))[:count]
    link = frames[0][1]
    config = FeaturizerConfig(max_packets=64)  # the whole connection fits: nothing is cut differently
    whole = featurize_frames(link, [f[0] for f in frames], [f[2] for f in frames], config=config)
    assert whole is not None and len(whole.pkt_ts) == len(frames), "a one-connection capture"
    assert 0 < int(whole.pkt_dir.sum()) < len(frames), "both directions present"
    mine = [f for f, d in zip(frames, whole.pkt_dir.tolist(), strict=True) if d == 1]
    one_sided = featurize_frames(link, [f[0] for f in mine], [f[2] for f in mine], config=config)
    assert one_sided is not None
    expected, got = pack([one_sided], config), originator_view(pack([whole], config))
    for name_ in ("bytes", "direction", "length", "valid"):
        assert np.array_equal(got[name_], expected[name_]), name_
    # packed gaps are clipped at zero where capture time steps back (these traces do, by microseconds), so the
    # originators' own gaps are rebuilt to within those steps
    np.testing.assert_allclose(got["iat"], expected["iat"], atol=1e-4)


def test_view_keeps_extra_columns_and_empties_rows_without_originator_packets() -> None:
    arrays = {
        "bytes": np.arange(2 * 3 * 24, dtype=np.uint8).reshape(2, 3, 24),
        "direction": np.array([[0, 0, 0], [1, 0, 1]], np.int8),
        "iat": np.array([[0, 1, 1], [0, 0.5, 0.25]], np.float32),
        "length": np.array([[40, 40, 40], [60, 52, 70]], np.int32),
        "valid": np.array([[True, True, False], [True, True, True]]),
        "fine": np.array(["benign", "port_scan"], dtype=object),
    }
    view = originator_view(arrays)
    assert view["fine"] is arrays["fine"]
    assert not view["valid"][0].any() and not view["bytes"][0].any()
    assert view["valid"][1].tolist() == [True, True, False]
    assert view["length"][1].tolist() == [60, 70, 0]
    np.testing.assert_allclose(view["iat"][1], [0.0, 0.75, 0.0])
    assert np.array_equal(view["bytes"][1, 1], arrays["bytes"][1, 2])  # not TCP: bytes move unchanged


def _split(rows: int, packets_each: int, first_packet: float) -> SplitEmbeddings:
    total = rows * packets_each
    table = np.concatenate([np.zeros((1, 2)), np.full((total, 2), first_packet) + np.arange(total)[:, None]])
    index = np.zeros((rows, 3), np.int32)
    index[1:, 0] = np.arange(1, rows) * packets_each  # a context slot: the previous connection's last packet
    return SplitEmbeddings(
        np.full((rows, 2), first_packet, np.float32),
        table.astype(np.float16),
        np.arange(rows + 1, dtype=np.int64) * packets_each,
        index,
        np.zeros((rows, 3, 5), np.float16),
        index > 0,
        np.full((rows, 2), first_packet, np.float16) + np.arange(rows, dtype=np.float16)[:, None],
        np.arange(rows, dtype=np.int64) - 1,
        {"fine": np.array(["benign"] * rows, dtype=object)},
    )


def test_concatenated_split_keeps_each_part_its_own_contexts_and_predecessors() -> None:
    first, second = _split(3, 2, 0.0), _split(4, 1, 100.0)
    both = concatenate_splits(first, second)
    assert len(both) == 7 and both.previous.tolist() == [-1, 0, 1, -1, 3, 4, 5]
    for part, offset in ((first, 0), (second, 3)):
        for row in range(len(part)):
            mine = part.context(np.array([row]))
            theirs = both.context(np.array([row + offset]))
            assert np.array_equal(mine[0], theirs[0])  # the context packets' embeddings
            assert np.array_equal(mine[3], theirs[3])  # the responder features
    start, end = both.offsets[3 + 1], both.offsets[3 + 2]  # second part's row 1 owns its own packet
    assert both.packets[1 + start : 1 + end].tolist() == second.packets[2:3].tolist()


def test_mirrored_rows_pick_both_views_of_the_same_connections() -> None:
    plain = _split(4, 1, 0.0)
    assert captured_part(plain).tolist() == [0, 1, 2, 3]
    assert mirrored_rows(plain, np.array([1, 3])).tolist() == [1, 3]
    combined = concatenate_splits(plain, _split(4, 1, 50.0))
    combined.columns["view"] = np.array(["both"] * 4 + ["originator"] * 4, dtype=object)
    assert captured_part(combined).tolist() == [0, 1, 2, 3]
    assert mirrored_rows(combined, np.array([1, 3])).tolist() == [1, 3, 5, 7]
