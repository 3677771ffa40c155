"""Model definitions of the factory: the packet encoder f_P, its configs and its cost model (`encoder`, `flops`),
the alignment heads g_P, g_T and the InfoNCE loss (`heads`), the reasoner (`reasoner`) and ET-BERT (`etbert`).

Training objectives, checkpoints of the heads and the reasoner, export and evaluation live in their own modules
of `packetclip_training`.
"""

from packetclip_training.models.encoder import (
    EncoderConfig,
    PacketEncoder,
    load_checkpoint,
    load_config,
    save_checkpoint,
)

__all__ = ["EncoderConfig", "PacketEncoder", "load_checkpoint", "load_config", "save_checkpoint"]
