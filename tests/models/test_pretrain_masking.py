"""Masked-byte modelling hides what it asks for, asks only for what the traffic decides, and scores only that."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packetclip_training.dataset.store import load_split
from packetclip_training.models.encoder import MASK_TOKEN, load_config
from packetclip_training.pretrain.pretrain import MaskedByteModel, TargetRule, in_packet, mask_batch

PATCH = 8
IPV4_ZEROED = [4, 5, 8, 10, 11, *range(12, 20)]  # IP ID, TTL, checksum, addresses (IHL 5 headers)


@pytest.fixture(scope="module")
def packets(real_packets):
    arrays = load_split(real_packets, "train", columns=())
    return {name: np.ascontiguousarray(values) for name, values in arrays.items()}


@pytest.fixture(scope="module")
def rule(packets):
    valid = packets["valid"]
    return TargetRule.fit(packets["bytes"][valid], packets["length"][valid], zero_share=0.001, min_packets=32)


def _batch(packets, rows):
    return {name: torch.from_numpy(np.ascontiguousarray(packets[name][rows])) for name in packets}


def _targets(rule, batch):
    t = rule.targets(batch["bytes"].numpy(), batch["length"].numpy())
    return torch.from_numpy(t) & batch["valid"].unsqueeze(-1)


def test_padding_and_featurizer_zeroed_fields_are_never_targets(packets, rule):
    """Past the packet's end, and the IPv4 fields the featurizer zeroes, there is nothing to learn."""
    valid = packets["valid"]
    flat, length = packets["bytes"][valid], packets["length"][valid]
    targets = rule.targets(flat, length)
    assert not (targets & ~in_packet(length, flat.shape[1])).any()
    ipv4 = (flat[:, 0] == 0x45) & np.isin(flat[:, 9], (6, 17)) & (length >= 40)
    assert ipv4.sum() > 1000, "the real subset should hold plenty of IPv4 TCP/UDP packets"
    assert not targets[ipv4][:, IPV4_ZEROED].any()
    # the ports are behaviour, not preprocessing: they are targets
    assert targets[ipv4][:, 20:24].mean() > 0.99
    assert 0.1 < rule.stats["excluded_always_zero_share"] < 0.6


def test_target_choice_does_not_depend_on_the_values_it_predicts(packets, rule):
    """Changing bytes after the layout-deciding header bytes leaves the targets unchanged."""
    valid = packets["valid"]
    flat, length = packets["bytes"][valid], packets["length"][valid]
    ipv4_tcp = (flat[:, 0] == 0x45) & (flat[:, 9] == 6)
    flat, length = flat[ipv4_tcp][:2000], length[ipv4_tcp][:2000]
    changed = flat.copy()
    rng = np.random.default_rng(0)
    changed[:, 34:] = rng.integers(0, 256, size=changed[:, 34:].shape, dtype=np.uint8)
    assert (changed != flat).any()
    np.testing.assert_array_equal(rule.targets(changed, length), rule.targets(flat, length))


def test_masked_bytes_are_replaced_by_the_mask_token_whole_tokens_at_a_time(packets, rule):
    batch = _batch(packets, np.arange(256))
    targets = _targets(rule, batch)
    masked, positions = mask_batch(
        batch["bytes"], batch["valid"], targets, PATCH, 0.25, torch.Generator().manual_seed(0)
    )
    hidden = masked == MASK_TOKEN  # (B, N, S)
    assert positions.any()
    assert not (positions & ~hidden).any(), "a loss position is visible to the model"
    assert not (positions & ~targets).any(), "a non-target position is scored"
    assert torch.equal(masked[~hidden], batch["bytes"][~hidden].long()), "an unmasked byte was altered"
    tokens = hidden.reshape(*hidden.shape[:2], -1, PATCH)
    assert torch.equal(tokens.all(dim=-1), tokens.any(dim=-1)), "masking splits a token"
    assert not hidden[~batch["valid"]].any(), "padding packets are never masked"


def test_mask_ratio_and_at_least_one_hidden_token_per_valid_packet(packets, rule):
    batch = _batch(packets, np.arange(512))
    targets = _targets(rule, batch)
    masked, _ = mask_batch(
        batch["bytes"], batch["valid"], targets, PATCH, 0.25, torch.Generator().manual_seed(1)
    )
    hidden_tokens = (masked == MASK_TOKEN).reshape(*masked.shape[:2], -1, PATCH).all(dim=-1)  # (B, N, T)
    candidates = targets.reshape(*targets.shape[:2], -1, PATCH).any(dim=-1)  # (B, N, T)
    with_candidates = candidates.any(dim=-1)
    assert hidden_tokens.any(dim=-1)[with_candidates].all()
    share = hidden_tokens.sum().item() / candidates.sum().item()
    assert 0.22 < share < 0.35  # 25 % drawn, a little more where short packets get their one forced token


def test_hidden_values_cannot_reach_the_model(packets, rule):
    """Two packets that differ only inside hidden tokens give the model identical input and identical outputs."""
    batch = _batch(packets, np.arange(64))
    targets = _targets(rule, batch)
    masked, positions = mask_batch(
        batch["bytes"], batch["valid"], targets, PATCH, 0.25, torch.Generator().manual_seed(2)
    )
    hidden = masked == MASK_TOKEN
    altered = batch["bytes"].clone()
    # change hidden bytes that do not decide a packet's layout (the rule reads bytes 0, 6, 9 and the TCP header)
    changeable = hidden.clone()
    changeable[..., :34] = False
    shift = 1 + torch.arange(int(changeable.sum())) % 200  # never 0 mod 256: every changeable byte changes
    altered[changeable] = (altered[changeable].int() + shift).to(torch.uint8)
    assert changeable.any()
    altered_targets = _targets(rule, {**batch, "bytes": altered})
    masked_again, positions_again = mask_batch(
        altered, batch["valid"], altered_targets, PATCH, 0.25, torch.Generator().manual_seed(2)
    )
    assert torch.equal(masked, masked_again) and torch.equal(positions, positions_again)
    torch.manual_seed(0)
    model = MaskedByteModel(load_config("tiny")).eval()
    side = (batch["direction"], batch["iat"], batch["length"], batch["valid"])
    with torch.no_grad():
        first = model.encoder.encode(masked, *side)
        second = model.encoder.encode(masked_again, *side)
    assert torch.equal(first.connection_embedding, second.connection_embedding)


def test_loss_reads_only_the_loss_positions(packets, rule):
    """Changing original bytes outside the loss positions leaves the loss unchanged; inside, it changes it."""
    batch = _batch(packets, np.arange(64))
    targets = _targets(rule, batch)
    masked, positions = mask_batch(
        batch["bytes"], batch["valid"], targets, PATCH, 0.25, torch.Generator().manual_seed(3)
    )
    torch.manual_seed(0)
    model = MaskedByteModel(load_config("tiny")).eval()
    side = (batch["direction"], batch["iat"], batch["length"], batch["valid"])
    original = batch["bytes"]
    outside = original.clone()
    outside[~positions] ^= 0x5A
    inside = original.clone()
    inside[positions] ^= 0x5A
    with torch.no_grad():
        loss, _, _ = model(masked, original, positions, side)
        loss_outside, _, _ = model(masked, outside, positions, side)
        loss_inside, _, _ = model(masked, inside, positions, side)
    assert torch.equal(loss, loss_outside)
    assert not torch.isclose(loss, loss_inside)
