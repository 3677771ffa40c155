"""Language alignment: `train` (the description pool, the loop and the heads' checkpoint), `run` (one
alignment run and its outputs), `zeroshot` (zero-shot scoring with aligned heads) and `cli` (the
`packetclip-train align` command). The heads g_P, g_T and the InfoNCE loss live in `models.heads`."""
