"""Per-connection natural-language descriptions for contrastive alignment, class prompts for zero-shot use.

`describe.describe_connection` and `describe.class_prompts` are the API; `facts.py` renders true facts,
`phrases.py` holds the per-class wording, `synthetic.py` makes plausible facts when no dataset is at hand, and
`wordfreq.py` draws the per-mission word-frequency figures.
"""

from packetclip_training.describe.describe import class_prompts, describe_connection

__all__ = ["class_prompts", "describe_connection"]
