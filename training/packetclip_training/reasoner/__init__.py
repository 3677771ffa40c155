"""The mission reasoner: `model` (the network, its loop and checkpoint), `data` (frozen embeddings and originator
contexts of a split), `fit` (one fit on embedded splits) and `cli` (the `packetclip-train reasoner` command).
The augmentations it trains with live in `augment`."""
