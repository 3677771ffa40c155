"""What the packet encoder costs: parameters and FLOPs per packet and per connection.

Owns the cost model used by tests (the budget: ≤ 1 M parameters, ≤ 2 MFLOPs per packet) and by reports.
FLOPs are counted by `torch.utils.flop_counter` on the real module, so the count follows the code: one
multiply-add counts as 2 FLOPs; matrix products (linear layers, attention) are counted, elementwise work
(softmax, LayerNorm, GELU, additions) is not — it is a few percent of the total at these widths.

Because the encoder runs its packet Transformer only on valid packets, a connection's cost is
`connection_overhead + packets × per_packet`: `per_packet` is the packet Transformer and its projection,
`connection_overhead` the Transformer over the N packet slots (run for every slot, padding included) and pooling.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from packetclip_training.models.encoder import EncoderConfig, PacketEncoder, parameter_count

log = logging.getLogger(__name__)

PARAMETER_BUDGET = 1_000_000
FLOPS_PER_PACKET_BUDGET = 2_000_000


@dataclass(frozen=True)
class EncoderCost:
    parameters: int
    flops_per_packet: int  # the packet Transformer, paid once per valid packet
    flops_connection_overhead: int  # the Transformer over N packet slots and pooling, once per connection
    flops_full_connection: int  # overhead + N packets: the most one connection can cost
    flops_per_packet_amortised: int  # full connection / N: the budgeted number
    max_packets: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def flops_for(self, packets: int) -> int:
        """FLOPs of one connection with `packets` valid packets."""
        return self.flops_connection_overhead + packets * self.flops_per_packet


def _connection_flops(encoder: PacketEncoder, valid_packets: int) -> int:
    c = encoder.config
    valid = torch.zeros(1, c.max_packets, dtype=torch.bool)
    valid[0, :valid_packets] = True
    inputs = (
        torch.zeros(1, c.max_packets, c.snaplen, dtype=torch.uint8),
        torch.zeros(1, c.max_packets, dtype=torch.int8),
        torch.zeros(1, c.max_packets, dtype=torch.float32),
        torch.zeros(1, c.max_packets, dtype=torch.int32),
        valid,
    )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        encoder(*inputs)
    return int(counter.get_total_flops())


def encoder_cost(config: EncoderConfig) -> EncoderCost:
    """Parameters and FLOPs of an encoder built from `config` (weights do not change the count)."""
    encoder = PacketEncoder(config).eval()
    one = _connection_flops(encoder, 1)
    full = _connection_flops(encoder, config.max_packets)
    per_packet = (full - one) // (config.max_packets - 1) if config.max_packets > 1 else one
    overhead = one - per_packet
    return EncoderCost(
        parameters=parameter_count(encoder),
        flops_per_packet=per_packet,
        flops_connection_overhead=overhead,
        flops_full_connection=full,
        flops_per_packet_amortised=full // config.max_packets,
        max_packets=config.max_packets,
    )
