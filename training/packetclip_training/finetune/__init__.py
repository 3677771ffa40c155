"""Fine-tuning the reasoner on analysts' feedback: `finetune` (checks, loop, measurements, export) and `cli` (the
`packetclip-train finetune` command)."""
