"""Labelled connection datasets: lab runs, real captures and flow CSVs -> featurized, split parquet + card.

Modules: `labelling` (rules), `sources` (input formats), `splits` (train/val/test), `store` (columns, `load_split`),
`card` (stats and card), `recipe` (what to build), `build` (the build), `cli` (`packetclip-train dataset`).
"""

from packetclip_training.dataset.store import load_split

__all__ = ["load_split"]
