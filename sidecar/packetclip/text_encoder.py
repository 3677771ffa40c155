"""The optional text encoder at run time: all-MiniLM-L6-v2 as ONNX, driven by onnxruntime and `tokenizers`.

Owns reading an exported text-encoder directory (`text_encoder.onnx`, `tokenizer.json`, `text_encoder.json`,
`text_encoder_fixture.json`), tokenising exactly as sentence-transformers does (truncate to the model's
max_seq_length, pad to the longest text of the batch), running the graph (mean pooling and L2 normalisation are
inside it) and checking the export against its parity fixture. Exporting needs torch and lives in the factory
(`packetclip_training.text.export`); this module never imports torch, and imports onnxruntime and tokenizers only
when an encoder is built, so `packetclip` works without the `text` extra.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ONNX_FILE = "text_encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "text_encoder.json"
FIXTURE_FILE = "text_encoder_fixture.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"


class TextEncoderUnavailable(RuntimeError):
    """The text encoder cannot be used: the `text` extra is missing or no exported encoder was found."""


def default_text_encoder_dir() -> Path:
    """Where an exported encoder lives unless told otherwise: $PACKETCLIP_TEXT_ENCODER, else the XDG cache."""
    explicit = os.environ.get("PACKETCLIP_TEXT_ENCODER")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "packetclip" / "text-encoder"


def _import_runtime() -> tuple[Any, Any]:
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise TextEncoderUnavailable(
            f"the text encoder needs onnxruntime and tokenizers ({exc}); install them with "
            "pip install 'packetclip[text]'"
        ) from exc
    return onnxruntime, Tokenizer


class OnnxTextEncoder:
    """Sentence embeddings (n, 384), unit length, from an exported all-MiniLM-L6-v2 directory."""

    def __init__(self, directory: str | Path | None = None, threads: int = 1, batch_size: int = 32):
        self.directory = Path(directory) if directory is not None else default_text_encoder_dir()
        missing = [n for n in (ONNX_FILE, TOKENIZER_FILE, META_FILE) if not (self.directory / n).is_file()]
        if missing:
            raise TextEncoderUnavailable(
                f"{self.directory}: no exported text encoder (missing {', '.join(missing)}); "
                "run `packetclip-train text export --out DIR`"
            )
        onnxruntime, tokenizer_class = _import_runtime()
        self.meta: dict[str, Any] = json.loads((self.directory / META_FILE).read_text())
        self.dim = int(self.meta["dim"])
        self.batch_size = batch_size  # bounds memory: padding grows with the longest text of a batch
        self.tokenizer = tokenizer_class.from_file(str(self.directory / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_length=int(self.meta["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(self.meta["pad_id"]), pad_token=str(self.meta["pad_token"]))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(self.directory / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, float32 (len(texts), dim), each row of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        chunks = [
            self._encode_batch(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (embeddings,) = self.session.run([OUTPUT_NAME], feeds)
        return np.asarray(embeddings, dtype=np.float32)

    def check_fixture(self) -> float:
        """The smallest cosine similarity between this encoder and the exporter's recorded embeddings."""
        path = self.directory / FIXTURE_FILE
        if not path.is_file():
            raise TextEncoderUnavailable(f"{path}: no parity fixture")
        fixture = json.loads(path.read_text())
        expected = np.asarray(fixture["embeddings"], dtype=np.float32)
        got = self.encode(fixture["texts"])
        if got.shape != expected.shape:
            raise ValueError(f"{path}: fixture shape {expected.shape}, encoder gives {got.shape}")
        return float(np.min(np.sum(got * expected, axis=1)))
