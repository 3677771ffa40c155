"""Training-time views of packed model input that pretraining and the reasoner share: `tool_invariance` (redrawn
tool-fingerprint header fields) and `one_sided` (the originator-only view). Imports nothing of the stages."""
