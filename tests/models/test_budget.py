"""The encoder's cost: the default config fits the budget, and the FLOP count is the architecture's."""

from __future__ import annotations

import pytest

from packetclip_training.models.encoder import EncoderConfig, config_names, load_config
from packetclip_training.models.flops import FLOPS_PER_PACKET_BUDGET, PARAMETER_BUDGET, encoder_cost


def analytic_packet_flops(c: EncoderConfig) -> int:
    """Matmul FLOPs (2 per multiply-add) of one packet through the token Transformer, written out by hand."""
    t, d = c.tokens, c.token_dim
    patch = 2 * t * (c.patch_bytes * c.byte_dim) * d
    layer = 2 * t * d * 3 * d + 2 * (2 * t * t * d) + 2 * t * d * d + 2 * (2 * t * d * c.token_ffn)
    return patch + c.token_layers * layer + 2 * d * c.packet_dim


def test_default_config_fits_the_budget():
    """≤ 1 M parameters and ≤ 2 MFLOPs per packet, counting a full connection's work over its N packets."""
    cost = encoder_cost(load_config("packet-encoder-base"))
    assert cost.parameters <= PARAMETER_BUDGET
    assert cost.flops_per_packet_amortised <= FLOPS_PER_PACKET_BUDGET
    assert cost.flops_per_packet <= FLOPS_PER_PACKET_BUDGET
    assert cost.flops_for(cost.max_packets) == cost.flops_full_connection


@pytest.mark.parametrize("name", ["packet-encoder-base", "packet-encoder-tiny"])
def test_counted_flops_match_the_hand_count(name):
    """The counter measures the module; the hand count is the design: a drift means one of them is wrong."""
    config = load_config(name)
    assert encoder_cost(config).flops_per_packet == analytic_packet_flops(config)


def test_padding_packets_cost_nothing_in_the_packet_transformer():
    """Only valid packets are encoded: one more valid packet adds exactly one packet's FLOPs."""
    cost = encoder_cost(load_config("tiny"))
    assert cost.flops_for(1) < cost.flops_for(2) < cost.flops_full_connection
    assert cost.flops_for(2) - cost.flops_for(1) == cost.flops_per_packet


def test_shipped_configs_load_and_unknown_fields_are_refused(tmp_path):
    assert {"packet-encoder-base", "packet-encoder-tiny"} <= set(config_names())
    assert load_config("tiny") == load_config("packet-encoder-tiny")
    bad = tmp_path / "bad.json"
    bad.write_text('{"token_dim": 48, "tokne_heads": 4}')
    with pytest.raises(ValueError, match="tokne_heads"):
        load_config(bad)
    with pytest.raises(ValueError, match="patch_bytes"):
        EncoderConfig(snaplen=128, patch_bytes=6)
