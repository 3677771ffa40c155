"""User-written missions scored zero-shot: a mission YAML with no trained head gets its own score column.

Owns turning a mission's text (description and concepts) into a vector of the bundle's language-aligned space —
the frozen text encoder f_T (`packetclip.text_encoder`, ONNX) then the bundle's text head g_T (`text_head.npz`) —
and scoring the reasoner's `aligned` output rows against it. It does not train anything, does not run the packet
models (the engine hands it `aligned`) and does not decide verdicts: the columns are extra evidence beside them.

The score, per connection and mission, is the probability of the mission in a softmax, at the bundle's learned
logit scale s, over the mission vector m and every fine class's prototype c_k (the normalised mean of the class's
rows of the description bank):

    score = exp(s a·m) / (exp(s a·m) + Σ_k exp(s a·c_k)) = sigmoid(s a·m − logsumexp_k(s a·c_k))

Why this and not the bare cosine a·m: a cosine has no scale an analyst can read (0.4 may be high for one bundle and
low for another), while this is a probability with the same calibration as the alignment that trained the space,
and it answers the question a new mission asks: is this connection closer to what the mission describes than to
every class the model already knows? Each mission competes with the known classes only, never with other user
missions, so adding a mission does not change another's column. The cost of the choice: a mission that restates a
known class shares the probability with that class (around one half on its connections, rather than near one).

Missions the bundle was trained with are skipped: the reasoner scores them with trained heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, Union

import numpy as np

from packetclip.bundle import Bundle, BundleError, load_descriptions, load_text_head
from packetclip.missions import Mission, MissionError, load_missions
from packetclip.text_encoder import OnnxTextEncoder, TextEncoderUnavailable, default_text_encoder_dir

log = logging.getLogger(__name__)


class SupportsEncode(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# f_T: an exported `OnnxTextEncoder`, or any function from texts to (n, text_dim) vectors (tests use stand-ins)
TextEncoderLike = Union[SupportsEncode, Callable[[list[str]], np.ndarray]]  # noqa: UP007 (3.10 runtime alias)


class UserMissionsUnavailable(RuntimeError):
    """User missions cannot be scored with this bundle and encoder; the message says why."""


def mission_sentences(mission: Mission) -> list[str]:
    """A mission as a few short sentences: its description, its key concepts, then each key concept with its
    associated concepts. Short sentences because the bank the space was aligned on is made of short texts, and
    the text encoder truncates long ones."""
    title = mission.name.replace("_", " ")
    sentences = [mission.description, f"{title}: {', '.join(mission.key_concepts)}."]
    sentences += [f"{key}: {', '.join(words)}." for key, words in mission.associated.items() if words]
    return sentences


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class UserMissionScorer:
    """Score columns for user-written missions (see the module docstring for the formula)."""

    def __init__(self, bundle: Bundle, text_encoder: TextEncoderLike, missions: Sequence[Mission]):
        head = load_text_head(bundle)
        if head is None:
            raise UserMissionsUnavailable(
                f"bundle {bundle.source}: no text head (text_head.npz); it cannot place new text in its space"
            )
        self.weight, self.bias, self.logit_scale = head
        self._encode = text_encoder.encode if hasattr(text_encoder, "encode") else text_encoder
        self.class_prototypes = class_prototypes(bundle)  # (K, D)
        trained = set(bundle.missions)
        skipped = [m.name for m in missions if m.name in trained]
        if skipped:
            log.info(
                "missions %s have trained heads in bundle %s; not scored zero-shot", skipped, bundle.name
            )
        self.missions: tuple[Mission, ...] = tuple(m for m in missions if m.name not in trained)
        self.names: tuple[str, ...] = tuple(m.name for m in self.missions)
        dim = self.class_prototypes.shape[1]
        self.vectors = (
            np.stack([self.embed(mission_sentences(m)) for m in self.missions])
            if self.missions
            else np.zeros((0, dim), np.float32)
        )  # (M, D)

    def embed(self, sentences: list[str]) -> np.ndarray:
        """The unit vector (D,) of a set of sentences: each through f_T and g_T, normalised, then averaged."""
        encoded = np.asarray(self._encode(list(sentences)), dtype=np.float32)  # (n, text_dim)
        if encoded.ndim != 2 or encoded.shape[1] != self.weight.shape[1]:
            raise UserMissionsUnavailable(
                f"the text encoder gives vectors of shape {encoded.shape}, the bundle's text head takes "
                f"{self.weight.shape[1]} dimensions: a different text encoder"
            )
        projected = _unit_rows(encoded @ self.weight.T + self.bias)  # (n, D)
        return _unit_rows(projected.mean(axis=0)).astype(np.float32)

    def scores(self, aligned: np.ndarray) -> dict[str, np.ndarray]:
        """Mission name → float32 (B,) probability of the mission for each row of the reasoner's `aligned`."""
        aligned = np.asarray(aligned, dtype=np.float32)
        if aligned.ndim != 2 or aligned.shape[1] != self.class_prototypes.shape[1]:
            raise ValueError(
                f"aligned has shape {aligned.shape}; expected (batch, {self.class_prototypes.shape[1]})"
            )
        class_logits = self.logit_scale * (aligned @ self.class_prototypes.T)  # (B, K)
        peak = class_logits.max(axis=1, keepdims=True)
        class_lse = peak[:, 0] + np.log(np.exp(class_logits - peak).sum(axis=1))  # (B,)
        mission_logits = self.logit_scale * (aligned @ self.vectors.T)  # (B, M)
        margin = mission_logits - class_lse[:, None]
        probabilities = 0.5 * (1.0 + np.tanh(0.5 * margin))  # sigmoid without overflow for large margins
        return {name: probabilities[:, j].astype(np.float32) for j, name in enumerate(self.names)}


def class_prototypes(bundle: Bundle) -> np.ndarray:
    """float32 (K, D): per fine class (the bundle's order), the normalised mean of its description bank rows."""
    _, fine, embeddings = load_descriptions(bundle)
    labels = np.asarray(fine)
    rows = []
    for name in bundle.fine_classes:
        members = embeddings[labels == name]
        if len(members) == 0:
            raise BundleError(f"bundle {bundle.source}: the description bank has no row of class {name!r}")
        rows.append(_unit_rows(members.mean(axis=0)))
    return np.stack(rows).astype(np.float32)


def open_text_encoder(directory: Path | None, threads: int = 1) -> OnnxTextEncoder:
    """The exported encoder at `directory`, else where `packetclip-train text export` writes by default."""
    candidates = [d for d in (directory, default_text_encoder_dir()) if d is not None]
    problems = []
    for candidate in dict.fromkeys(candidates):
        try:
            return OnnxTextEncoder(candidate, threads=threads)
        except TextEncoderUnavailable as exc:
            problems.append(str(exc))
    raise TextEncoderUnavailable(
        "; ".join(problems) + " (export it once with `packetclip models text-encoder`)"
    )


def load_user_mission_scorer(
    bundle: Bundle, missions_dir: Path | None, text_encoder_dir: Path | None, threads: int = 1
) -> UserMissionScorer | None:
    """The scorer of the user missions in `missions_dir`, or None (logged) when there are none to score or the
    text encoder or the bundle's text head is missing: a sensor keeps classifying without the extra columns."""
    if missions_dir is None:
        return None
    try:
        missions = load_missions(missions_dir, strict=False)  # one bad file must not drop the others
    except MissionError as exc:
        log.warning("user missions not loaded: %s", exc)
        return None
    untrained = [m for m in missions if m.name not in bundle.missions]
    if not untrained:
        log.info("no user mission in %s beyond the bundle's own", missions_dir)
        return None
    try:
        scorer = UserMissionScorer(bundle, open_text_encoder(text_encoder_dir, threads), untrained)
    except (TextEncoderUnavailable, UserMissionsUnavailable, BundleError) as exc:
        log.warning("user missions %s not scored: %s", [m.name for m in untrained], exc)
        return None
    log.info("scoring user missions %s zero-shot", list(scorer.names))
    return scorer
