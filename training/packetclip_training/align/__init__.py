"""Language alignment: `heads` (g_P, g_T, InfoNCE and the loop), `run` (one alignment run and its outputs),
`zeroshot` (zero-shot scoring with aligned heads) and `cli` (the `packetclip-train align` command)."""
