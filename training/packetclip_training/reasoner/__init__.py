"""The mission reasoner: `model` (its loop, checkpoint and export), `data` (frozen embeddings and originator
contexts of a split), `fit` (one fit on embedded splits) and `cli` (the `packetclip-train reasoner` command).
The network lives in `models.reasoner`, the augmentations it trains with in `augment`."""
