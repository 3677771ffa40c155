"""Self-supervised pretraining of the packet encoder: `pretrain` (masking, head, loss, loop, record) and `cli`
(the `packetclip-train pretrain` command). The encoder itself is `models.encoder`; its export
`export.encoder`."""
